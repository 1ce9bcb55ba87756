//! The retry policy of `fleet_http` against real servers on loopback: our own
//! fleet-test-server (whose per-path request counts say how many attempts really arrived) and
//! python's `http.server`, which nobody here wrote.

use std::process::Command;
use std::time::{Duration, Instant};

use fleet_http::{
    send_with_retry, send_with_retry_raw, Client, HttpErrorKind, HttpRequest, RetryPolicy,
};
use fleet_launcher::process::{wait_ready, ChildHandle, ChildSpec, ReadinessProbe};
use fleet_tests::{free_port, start_listening_server, wait_until, PipedChild};

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

async fn test_server(name: &str) -> (PipedChild, String) {
    let (child, port) = start_listening_server(name, Command::new(SERVER).args(["--port", "0"]))
        .await
        .expect("fleet-test-server starts");
    (child, format!("http://127.0.0.1:{port}"))
}

/// How many requests for `path` reached the server.
async fn count(client: &Client, base: &str, path: &str) -> u64 {
    let resp = send_with_retry(
        client,
        base,
        &HttpRequest::get(format!("/count?path={path}")),
        &RetryPolicy::idempotent().max_attempts(1),
        std::future::pending(),
    )
    .await
    .expect("/count answers");
    String::from_utf8_lossy(&resp.body)
        .trim()
        .parse()
        .expect("/count returns a number")
}

/// Quick retries so the tests spend their time on behaviour, not on sleeping.
fn quick(idempotent: bool) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        deadline: Duration::from_secs(30),
        per_attempt_timeout: Duration::from_secs(10),
        idempotent,
    }
}

#[tokio::test]
async fn retry_never_resends_a_4xx_or_a_500() {
    let (_server, base) = test_server("retry-4xx").await;
    let client = Client::new();
    for status in [400u16, 401, 404, 409, 422, 500] {
        let path = format!("/status/{status}");
        // Even an idempotent call: these answers are final.
        let err = send_with_retry(
            &client,
            &base,
            &HttpRequest::post(path.clone(), "{}"),
            &quick(true),
            std::future::pending(),
        )
        .await
        .expect_err("non-2xx is an error");
        assert_eq!(err.kind, HttpErrorKind::Status, "{err}");
        assert_eq!(err.attempts, 1, "{err}");
        assert_eq!(err.last_status, Some(status));
        assert_eq!(
            err.last_body.as_deref(),
            Some(format!("status {status}").as_str())
        );
        assert!(!err.retryable());
        assert_eq!(count(&client, &base, &path).await, 1, "{path}");
    }
}

/// A 502 or 504 comes from a gateway that may well have forwarded the request before it failed
/// (fleet's own proxy answers 504 when the backend timed out after receiving it). So they are
/// re-sent only for a request that is safe to repeat: idempotent, or carrying a request id the
/// server deduplicates. A 503 is re-sent for any other request only with `Retry-After` (the
/// server refused it before acting).
#[tokio::test]
async fn retry_resends_502_503_504_only_when_the_request_is_safe_to_repeat() {
    let (_server, base) = test_server("retry-5xx").await;
    let client = Client::new();
    for status in [502u16, 503, 504] {
        // Idempotent, and non-idempotent with a request id: re-sent until attempts run out.
        for (tag, req, policy) in [
            (
                "idem",
                HttpRequest::get(format!("/status/{status}?t=idem")),
                quick(true),
            ),
            (
                "rid",
                HttpRequest::post(format!("/status/{status}?t=rid"), "{}").request_id("r-1"),
                quick(false),
            ),
        ] {
            let err = send_with_retry(&client, &base, &req, &policy, std::future::pending())
                .await
                .expect_err("retries run out");
            assert_eq!(err.kind, HttpErrorKind::RetriesExhausted, "{tag}: {err}");
            assert_eq!(err.attempts, 4, "{tag}: {err}");
            assert_eq!(err.last_status, Some(status));
            assert!(err.retryable());
        }
        let path = format!("/status/{status}");
        assert_eq!(count(&client, &base, &path).await, 8, "{path}");
    }
    // A bare POST: each of 502, 503, 504 reaches the server once and is final.
    let (_server, base) = test_server("retry-5xx-post").await;
    for status in [502u16, 503, 504] {
        let path = format!("/status/{status}");
        let err = send_with_retry(
            &client,
            &base,
            &HttpRequest::post(path.clone(), "{}"),
            &quick(false),
            std::future::pending(),
        )
        .await
        .expect_err("a final 5xx");
        assert_eq!(
            (err.kind.clone(), err.attempts),
            (HttpErrorKind::Status, 1),
            "{err}"
        );
        assert_eq!(count(&client, &base, &path).await, 1, "{path}");
    }
    // ... unless the 503 says when to come back.
    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/status/503?retry_after=0", "{}"),
        &quick(false),
        std::future::pending(),
    )
    .await
    .expect_err("retries run out");
    assert_eq!(err.attempts, 4, "{err}");
    assert_eq!(count(&client, &base, "/status/503").await, 1 + 4);
}

/// The C7 regression over a real socket: a server that counts a POST and then answers 504 is
/// reached exactly once by a non-idempotent call (it used to be reached `max_attempts` times).
#[tokio::test]
async fn retry_never_resends_a_504_for_a_post() {
    let (_server, base) = test_server("retry-504-post").await;
    let client = Client::new();
    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/status/504", "{\"generate\": true}"),
        &RetryPolicy::non_idempotent().backoff(Duration::from_millis(5), Duration::from_millis(20)),
        std::future::pending(),
    )
    .await
    .expect_err("504 is final for a POST");
    assert_eq!(err.kind, HttpErrorKind::Status, "{err}");
    assert_eq!(err.attempts, 1, "{err}");
    assert!(!err.retryable());
    assert_eq!(count(&client, &base, "/status/504").await, 1);
}

#[tokio::test]
async fn raw_mode_passes_final_and_exhausted_answers_through() {
    let (_server, base) = test_server("retry-raw").await;
    let client = Client::new();
    let resp = send_with_retry_raw(
        &client,
        &base,
        &HttpRequest::get("/status/404"),
        &quick(true),
        std::future::pending(),
    )
    .await
    .expect("raw mode returns the 404");
    assert_eq!((resp.status, &resp.body[..]), (404, &b"status 404"[..]));
    let resp = send_with_retry_raw(
        &client,
        &base,
        &HttpRequest::get("/status/503"),
        &quick(true),
        std::future::pending(),
    )
    .await
    .expect("raw mode returns the last 503");
    assert_eq!(resp.status, 503);
    assert_eq!(count(&client, &base, "/status/503").await, 4);
}

#[tokio::test]
async fn a_refused_connection_is_retried_max_attempts_times() {
    let port = free_port(); // nobody listens here
    let err = send_with_retry(
        &Client::new(),
        &format!("http://127.0.0.1:{port}"),
        &HttpRequest::post("/call", "{}"),
        &quick(false),
        std::future::pending(),
    )
    .await
    .expect_err("nothing listens");
    assert_eq!(err.kind, HttpErrorKind::RetriesExhausted, "{err}");
    assert_eq!(err.attempts, 4, "{err}");
    assert_eq!(err.last_status, None);
    let last = err.last_error.as_deref().unwrap_or("");
    assert!(last.contains("refused"), "{last}");
}

#[tokio::test]
async fn retry_after_on_429_is_waited_before_the_second_attempt() {
    let (_server, base) = test_server("retry-429").await;
    let client = Client::new();
    let policy = RetryPolicy {
        max_attempts: 2,
        ..quick(false)
    };
    let start = Instant::now();
    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/status/429?retry_after=1", "{}"),
        &policy,
        std::future::pending(),
    )
    .await
    .expect_err("always 429");
    let elapsed = start.elapsed();
    assert_eq!(err.attempts, 2, "{err}");
    assert_eq!(err.last_status, Some(429));
    assert!(
        elapsed >= Duration::from_secs(1),
        "second attempt came after {elapsed:?}"
    );
    assert_eq!(count(&client, &base, "/status/429").await, 2);
}

#[tokio::test]
async fn a_timed_out_call_is_resent_only_when_idempotent() {
    let (_server, base) = test_server("retry-timeout").await;
    let client = Client::new();
    let policy = |idempotent| RetryPolicy {
        max_attempts: 3,
        per_attempt_timeout: Duration::from_millis(300),
        ..quick(idempotent)
    };

    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/delay/2000", "{}"),
        &policy(false),
        std::future::pending(),
    )
    .await
    .expect_err("times out");
    assert_eq!(
        err.kind,
        HttpErrorKind::AttemptTimeout { timeout_ms: 300 },
        "{err}"
    );
    assert_eq!(err.attempts, 1);
    assert_eq!(count(&client, &base, "/delay/2000").await, 1);

    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::get("/delay/2001"),
        &policy(true),
        std::future::pending(),
    )
    .await
    .expect_err("times out every time");
    assert_eq!(err.kind, HttpErrorKind::RetriesExhausted, "{err}");
    assert_eq!(err.attempts, 3);
    assert_eq!(count(&client, &base, "/delay/2001").await, 3);
}

#[tokio::test]
async fn a_connection_dropped_after_sending_is_resent_only_when_idempotent() {
    let (_server, base) = test_server("retry-close").await;
    let client = Client::new();
    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/close", "{}"),
        &quick(false),
        std::future::pending(),
    )
    .await
    .expect_err("no answer");
    assert_eq!(err.kind, HttpErrorKind::Transport, "{err}");
    assert_eq!(err.attempts, 1);
    assert_eq!(count(&client, &base, "/close").await, 1);

    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::get("/close"),
        &quick(true),
        std::future::pending(),
    )
    .await
    .expect_err("no answer, ever");
    assert_eq!(err.kind, HttpErrorKind::RetriesExhausted, "{err}");
    assert_eq!(err.attempts, 4);
    assert_eq!(count(&client, &base, "/close").await, 1 + 4);
}

#[tokio::test]
async fn the_request_id_and_body_are_identical_on_every_attempt() {
    let (server, base) = test_server("retry-request-id").await;
    let client = Client::new();
    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/status/503?tag=rid", "payload").request_id("r-42"),
        &quick(false),
        std::future::pending(),
    )
    .await
    .expect_err("always 503");
    assert_eq!(err.attempts, 4);
    assert_eq!(err.request_id.as_deref(), Some("r-42"));
    assert!(err.to_string().contains("r-42"), "{err}");
    let logged = wait_until("four logged attempts", Duration::from_secs(10), || {
        let lines: Vec<String> = server
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains("/status/503?tag=rid"))
            .collect();
        async move { (lines.len() >= 4).then_some(lines) }
    })
    .await
    .expect("the server logs every attempt");
    assert_eq!(logged.len(), 4, "{logged:?}");
    assert!(
        logged.iter().all(|l| l.ends_with("request-id=r-42")),
        "{logged:?}"
    );

    // And the echo shows the body and header as sent.
    let resp = send_with_retry(
        &client,
        &base,
        &HttpRequest::post("/echo", "payload").request_id("r-43"),
        &quick(false),
        std::future::pending(),
    )
    .await
    .expect("echo answers");
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).expect("echo is JSON");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["method"], "POST");
    let ids: Vec<&serde_json::Value> = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == "x-request-id")
        .map(|h| &h[1])
        .collect();
    assert_eq!(ids, vec!["r-43"]);
}

#[tokio::test]
async fn python_http_server_get_succeeds_and_a_404_is_final() {
    let dir = std::env::temp_dir().join(format!(
        "fleet-launcher-retry-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("hello.txt"), "hello from python\n").expect("write file");
    let server = PipedChild::spawn(
        "python-http",
        Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(&dir),
    )
    .expect("python3 starts");
    // "Serving HTTP on 127.0.0.1 port 8000 (http://127.0.0.1:8000/) ..."
    let port = server
        .wait_for_stdout(Duration::from_secs(20), |line| {
            let rest = line.split(" port ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u16>().ok()
        })
        .await
        .expect("python prints its port");
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new();

    let resp = send_with_retry(
        &client,
        &base,
        &HttpRequest::get("/hello.txt"),
        &quick(true),
        std::future::pending(),
    )
    .await
    .expect("GET succeeds");
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"hello from python\n");

    let err = send_with_retry(
        &client,
        &base,
        &HttpRequest::get("/missing.txt"),
        &quick(true),
        std::future::pending(),
    )
    .await
    .expect_err("404");
    assert_eq!(
        (err.kind.clone(), err.attempts, err.last_status),
        (HttpErrorKind::Status, 1, Some(404)),
        "{err}"
    );
    let seen = |server: &PipedChild| {
        server
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("GET /missing.txt"))
            .count()
    };
    wait_until("python's log line", Duration::from_secs(10), || {
        let n = seen(&server);
        async move { (n >= 1).then_some(()) }
    })
    .await
    .expect("python logs the request");
    assert_eq!(seen(&server), 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dying_child_aborts_an_in_flight_retrying_call_with_the_reason() {
    let port = free_port();
    let spec = ChildSpec::new("abort/0", SERVER)
        .args(["--port", "{port}"])
        .with_ports(&[port])
        .expect("one port");
    let child = ChildHandle::spawn(spec).await.expect("server starts");
    wait_ready(
        &ReadinessProbe::http(port, "/health").deadline(Duration::from_secs(20)),
        &child,
    )
    .await
    .expect("server ready");
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new();

    // Retries for up to a minute unless aborted.
    let policy = RetryPolicy {
        max_attempts: 10_000,
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        deadline: Duration::from_secs(60),
        per_attempt_timeout: Duration::from_secs(10),
        idempotent: false,
    };
    let abort = child.exit_reason();
    let call = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move {
            send_with_retry(
                &client,
                &base,
                // Retry-After: the server refused it, so even a POST is re-sent.
                &HttpRequest::post("/status/503?retry_after=0", "{}"),
                &policy,
                abort,
            )
            .await
        }
    });
    wait_until("the first attempt", Duration::from_secs(10), || {
        let (client, base) = (client.clone(), base.clone());
        async move { (count(&client, &base, "/status/503").await >= 1).then_some(()) }
    })
    .await
    .expect("the call reaches the server");

    // Kill the server from the inside; the call must notice the exit, not the 60 s deadline.
    let _ = send_with_retry_raw(
        &client,
        &base,
        &HttpRequest::get("/crash"),
        &RetryPolicy::non_idempotent().max_attempts(1),
        std::future::pending(),
    )
    .await;
    let result = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call ends long before its own deadline")
        .expect("the call task does not panic");
    let err = result.expect_err("aborted");
    match &err.kind {
        HttpErrorKind::Aborted { reason } => {
            assert!(
                reason.contains("abort/0") && reason.contains("exit code 3"),
                "{reason}"
            );
            assert!(
                reason.contains("crashing on request"),
                "the tail is quoted: {reason}"
            );
        }
        other => panic!("expected Aborted, got {other:?}: {err}"),
    }
    assert!(err.attempts >= 1);
    assert_eq!(child.exit_status().and_then(|e| e.code), Some(3));
}
