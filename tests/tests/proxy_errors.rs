//! `fleet proxy` refuses bad input with the right status and the one JSON error shape
//! (`{"error": {"type", "message"}}`), survives junk and truncated requests, and refuses a weak
//! admin key on a non-loopback bind.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fixture::{assert_error, start_mock, start_proxy, Rig, ADMIN};
use fleet_tests::{fleet_bin, free_port, spawn_listening, TestHttp};
use hyper::Method;
use serde_json::json;

#[tokio::test]
async fn each_refusal_has_its_status_and_the_json_error_shape() {
    let rig = Rig::start(
        &[],
        &[
            "--max-body-bytes",
            "2048",
            "--max-turns",
            "2",
            "--max-sessions",
            "2",
        ],
    )
    .await;
    let chat = rig.url("/v1/chat/completions");

    // 429: no capacity granted yet.
    let r = rig.admin("/rl/start_session", json!({"task_id": 1})).await;
    assert!(assert_error(&r, 429).contains("capacity"));
    assert_eq!(r.json["error"]["type"], "no_capacity");

    let (sid, key) = rig.session("errors").await;

    // 400: malformed JSON, a body that is not an object, a request without messages.
    for body in ["{not json", "[1, 2]", "{\"model\": \"x\"}", ""] {
        let r = rig
            .http
            .call(Method::POST, &chat, Some(&key), Bytes::from(body))
            .await;
        assert_error(&r, 400);
    }
    let r = rig
        .as_session(&key, "/rl/set_reward", json!({"reward": "high"}))
        .await;
    assert_error(&r, 400);
    let r = rig
        .as_session(&key, "/rl/set_reward", json!({"reward": 1.0}))
        .await;
    assert!(assert_error(&r, 400).contains("no turn"), "{}", r.text);

    // 401: no key, a wrong key, a key shaped like a session key for no session.
    let r = rig.http.post(&chat, None, &json!({"messages": []})).await;
    assert!(assert_error(&r, 401).contains("missing"));
    for bad in [
        "nope",
        "sk-fleet-0000-0000",
        &format!("{key}x"),
        &ADMIN[1..],
    ] {
        let r = rig
            .http
            .post(&chat, Some(bad), &json!({"messages": []}))
            .await;
        assert_error(&r, 401);
    }
    // A known path with the wrong method is no route either.
    let r = rig
        .http
        .send(Method::POST, &rig.url("/v1/models"), None, Bytes::new())
        .await;
    assert_eq!(r.status(), 404, "POST /v1/models is no route");

    // 403: a session key on an admin route, the admin key on a session route.
    for path in [
        "/grant_capacity",
        "/rl/start_session",
        "/export_trajectories",
        "/set_version",
    ] {
        let r = rig.as_session(&key, path, json!({})).await;
        assert!(
            assert_error(&r, 403).contains("admin key"),
            "{path}: {}",
            r.text
        );
    }
    let r = rig
        .admin("/v1/chat/completions", json!({"messages": []}))
        .await;
    assert_error(&r, 403);

    // 404: unknown session, unknown interaction, unknown route.
    let r = rig
        .admin(
            "/export_trajectories",
            json!({"session_id": "no-such-session"}),
        )
        .await;
    assert!(assert_error(&r, 404).contains("no-such-session"));
    let r = rig
        .as_session(
            &key,
            "/rl/set_reward",
            json!({"interaction_id": "x-9", "reward": 1}),
        )
        .await;
    assert_error(&r, 404);
    let r = rig.http.get(&rig.url("/no/such/route")).await;
    assert_error(&r, 404);

    // 413: a body over --max-body-bytes.
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let r = rig.as_session(&key, "/v1/chat/completions", big).await;
    assert_error(&r, 413);

    // 400: the session's turn limit (2).
    assert_eq!(rig.chat(&key, "one", 1).await.status, 200);
    assert_eq!(rig.chat(&key, "two", 1).await.status, 200);
    let r = rig.chat(&key, "three", 1).await;
    assert_eq!(r.json["error"]["type"], "turn_limit_reached");
    assert_error(&r, 400);

    // 429: the proxy's session limit (2), even with capacity.
    rig.session("second").await;
    rig.admin("/grant_capacity", json!({"n": 1})).await;
    let r = rig.admin("/rl/start_session", json!({})).await;
    assert_eq!(r.json["error"]["type"], "too_many_sessions");
    assert_error(&r, 429);

    // 410: after the end, for generation, rewards and a second end.
    assert_eq!(
        rig.as_session(&key, "/rl/end_session", json!({}))
            .await
            .status,
        200
    );
    assert_error(&rig.chat(&key, "late", 1).await, 410);
    assert_error(
        &rig.as_session(&key, "/rl/set_reward", json!({"reward": 1}))
            .await,
        410,
    );
    assert_error(
        &rig.as_session(&key, "/rl/end_session", json!({})).await,
        410,
    );
    assert_eq!(rig.export(&sid, 1.0).await.status, 200);
}

#[tokio::test]
async fn an_unreachable_backend_is_502_with_the_backends_error() {
    // A port nobody listens on.
    let port = free_port();
    let (_proxy, addr, _key) = start_proxy(&format!("http://127.0.0.1:{port}"), &[]).await;
    let http = TestHttp::new();
    let url = |p: &str| format!("http://{addr}{p}");
    http.post(&url("/grant_capacity"), Some(ADMIN), &json!({}))
        .await;
    let s = http
        .post(&url("/rl/start_session"), Some(ADMIN), &json!({}))
        .await;
    let key = s.json["api_key"].as_str().unwrap().to_string();
    let r = http
        .post(
            &url("/v1/chat/completions"),
            Some(&key),
            &json!({"messages": []}),
        )
        .await;
    let msg = assert_error(&r, 502);
    assert!(msg.contains(&port.to_string()), "{msg}");
    assert!(
        msg.to_lowercase().contains("refused"),
        "the backend's error is quoted: {msg}"
    );
    let h = http.get(&url("/health")).await;
    assert_eq!(h.status, 503);
    assert_eq!(h.json["backend"]["reachable"], false);
    assert_eq!(h.json["admin_key_configured"], true);
}

#[tokio::test]
async fn backend_failures_and_timeouts_are_502_and_504() {
    for (mode, needle) in [("503", "503"), ("drop", "unreachable")] {
        let rig = Rig::start(&["--fail-rate", "1", "--fail-mode", mode], &[]).await;
        let (_sid, key) = rig.session("fail").await;
        let r = rig.chat(&key, "x", 1).await;
        let msg = assert_error(&r, 502);
        assert!(msg.contains(needle), "{mode}: {msg}");
    }
    let rig = Rig::start(
        &["--latency-ms", "10000"],
        &["--backend-timeout-secs", "0.2"],
    )
    .await;
    let (_sid, key) = rig.session("slow").await;
    let r = rig.chat(&key, "x", 1).await;
    assert_eq!(r.json["error"]["type"], "backend_timeout");
    assert_error(&r, 504);
}

/// Sends raw bytes to `addr`, optionally half-closes, and reads whatever comes back.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8], half_close: bool) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn junk_and_truncated_requests_do_not_crash_the_proxy() {
    let mut rig = Rig::start(&[], &[]).await;
    let (_sid, key) = rig.session("junk").await;
    let addr = rig.addr;
    let auth = format!("Authorization: Bearer {key}\r\n");
    let cases: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02 garbage \xff\xfe\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nBroken header without colon\r\n\r\n".to_vec(),
        // Headers that never finish.
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le".to_vec(),
        // A body shorter than its Content-Length.
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000\r\n\r\n{{\"messages\": [")
            .into_bytes(),
        // A broken chunked body.
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
            .into_bytes(),
        // Complete requests with junk bodies on every route.
        format!("POST /rl/set_reward HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 5\r\nConnection: close\r\n\r\n\x00\x01\x02\x03\x04")
            .into_bytes(),
        format!("POST /export_trajectories HTTP/1.1\r\nHost: x\r\nx-api-key: {ADMIN}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnull")
            .into_bytes(),
    ];
    for (i, case) in cases.iter().enumerate() {
        let answer = tokio::task::spawn_blocking({
            let case = case.clone();
            // Complete requests are not half-closed: hyper takes a read EOF as the client
            // leaving and drops the request (which is how disconnects cancel work).
            move || raw_exchange(addr, &case, i < 5)
        })
        .await
        .unwrap();
        if i >= 5 {
            // Well-formed HTTP with a junk body: the handler answers, in the JSON shape.
            assert!(answer.starts_with("HTTP/1.1 400"), "case {i}: {answer}");
            assert!(answer.contains("\"error\""), "case {i}: {answer}");
        } else {
            // Not HTTP, or cut short: hyper answers a bare 400 or just closes the connection.
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
                "case {i}: {answer}"
            );
        }
        assert!(rig.proxy.try_wait().is_none(), "the proxy died on case {i}");
    }
    let r = rig.http.get(&rig.url("/health")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(rig.chat(&key, "still serving", 2).await.status, 200);
    assert!(rig.proxy.try_wait().is_none());
}

#[tokio::test]
async fn a_weak_admin_key_is_refused_on_a_non_loopback_bind() {
    for key in ["", "admin", "short"] {
        // The check runs before binding: nothing listens on 0.0.0.0.
        let mut child = Command::new(fleet_bin())
            .args([
                "proxy",
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--backend",
                "http://127.0.0.1:9",
            ])
            .env("FLEET_ADMIN_KEY", key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fleet proxy");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("fleet proxy with admin key {key:?} on 0.0.0.0 kept running");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "{key:?} accepted");
        assert!(stderr.contains("refusing to"), "{key:?}: {stderr}");
    }
}

/// An empty admin key (a key file holding only a newline, `FLEET_ADMIN_KEY=`) would turn admin
/// authentication off: it is refused at start on loopback too, and the error says what to do.
#[tokio::test]
async fn an_empty_admin_key_is_refused_at_start_on_loopback_too() {
    let dir = std::env::temp_dir().join(format!("fleet-empty-admin-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("admin.key");
    std::fs::write(&file, "\n").unwrap();
    let file = file.display().to_string();
    let cases: [(&[&str], Option<&str>); 3] = [
        (&["--admin-key-file", &file], None),
        (&[], Some("")),
        (&[], Some("  ")),
    ];
    for (args, env) in cases {
        let mut cmd = Command::new(fleet_bin());
        cmd.args(["proxy", "--port", "0", "--backend", "http://127.0.0.1:9"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match env {
            Some(v) => cmd.env("FLEET_ADMIN_KEY", v),
            None => cmd.env_remove("FLEET_ADMIN_KEY"),
        };
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::from(cmd).output(),
        )
        .await
        .expect("fleet proxy exits at once")
        .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} accepted");
        assert!(
            stderr.contains("empty admin key") && stderr.contains("openssl rand"),
            "{args:?} {env:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "never listened"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_admin_key_comes_from_the_environment_or_is_random() {
    let (_mock, mock_addr) = start_mock(&[]).await;
    let http = TestHttp::new();
    let backend = format!("http://{mock_addr}");

    let mut cmd = Command::new(fleet_bin());
    cmd.args(["proxy", "--port", "0", "--backend", &backend])
        .env("FLEET_ADMIN_KEY", "env-admin-key-0123456789");
    let (_p, addr) = spawn_listening("proxy-env-key", &mut cmd, fixture::START).await;
    let r = http
        .post(
            &format!("http://{addr}/grant_capacity"),
            Some("env-admin-key-0123456789"),
            &json!({"n": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let h = http.get(&format!("http://{addr}/health")).await;
    assert_eq!(h.json["admin_key_configured"], true);

    let mut cmd = Command::new(fleet_bin());
    cmd.args(["proxy", "--port", "0", "--backend", &backend])
        .env_remove("FLEET_ADMIN_KEY");
    let (_p, addr) = spawn_listening("proxy-random-key", &mut cmd, fixture::START).await;
    let h = http.get(&format!("http://{addr}/health")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json["admin_key_configured"], false);
    let r = http
        .post(
            &format!("http://{addr}/grant_capacity"),
            Some(ADMIN),
            &json!({}),
        )
        .await;
    assert_error(&r, 401);
}
