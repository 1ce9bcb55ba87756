//! Forwarding through the HTTP launcher (an `HttpService` worker on a real child process):
//! what may have run is never re-sent and is reported as such, an idempotent call's hung attempt
//! is really re-sent, and an isolated rpc-server's typed errors survive the hop.

use fleet_actors::{
    CallOptions, CallProtocol, FleetError, HttpCall, HttpServiceSpec, Job, Payload, Retry,
    SchedulingSpec, WorkerId, WorkerKind,
};
use fleet_runtime::Cluster;
use fleet_tests::{fleet_bin, wait_until};
use std::time::Duration;

const TEST_SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

/// A cluster on its own port range (other test binaries run at the same time).
async fn cluster(slot: u16) -> Cluster {
    let lo = 27300 + slot * 50;
    Cluster::local()
        .port_range(lo, lo + 49)
        .start()
        .await
        .unwrap()
}

async fn test_server(s: &fleet_runtime::Scheduler, role: &str) -> WorkerId {
    let spec =
        HttpServiceSpec::new([TEST_SERVER, "--port", "{port}"]).stop_grace(Duration::from_secs(2));
    s.create_workers(
        Job::new(role, 1)
            .kind(WorkerKind::HttpService(spec))
            .spec(SchedulingSpec::default().ports(1)),
    )
    .await
    .unwrap();
    s.get_workers(role, Duration::from_secs(20)).await.unwrap()[0]
        .id
        .clone()
}

async fn count(s: &fleet_runtime::Scheduler, w: &WorkerId, path: &str) -> u64 {
    let r = s
        .http(w, HttpCall::get(format!("/count?path={path}")))
        .await
        .expect("/count answers");
    r.text().trim().parse().expect("a number")
}

/// C8: a POST whose connection breaks after it was sent may have run. It is reported as
/// `Indeterminate` (it used to be `Unavailable`, which `retryable()` says to retry), and it
/// reached the service once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_connection_broke_after_sending_is_indeterminate_and_not_retryable() {
    let c = cluster(0).await;
    let s = c.scheduler();
    let w = test_server(s, "maybe").await;
    let call = HttpCall::post_json("/close", &serde_json::json!({"step": 7}))
        .timeout(Duration::from_secs(10));
    let e = s.http(&w, call).await.expect_err("no answer");
    assert!(
        matches!(
            e,
            FleetError::Indeterminate {
                resend_safe: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.retryable(), "{e}");
    assert!(e.to_string().contains("may have run"), "{e}");
    assert_eq!(count(s, &w, "/close").await, 1);
    c.shutdown().await.unwrap();
}

/// C7 through the launcher: a POST answered 504 is passed back as the answer after one attempt
/// (it used to be sent five times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_answered_504_reaches_the_service_exactly_once() {
    let c = cluster(1).await;
    let s = c.scheduler();
    let w = test_server(s, "gw").await;
    let call = HttpCall::post_json("/status/504", &serde_json::json!({"generate": true}))
        .timeout(Duration::from_secs(10));
    let r = s.http(&w, call).await.expect("any status is an answer");
    assert_eq!(r.status, 504);
    assert_eq!(count(s, &w, "/status/504").await, 1);
    c.shutdown().await.unwrap();
}

/// An idempotent call whose attempt hangs is really re-sent before its deadline (the attempt
/// bound used to equal the deadline, so it never was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_whose_attempt_hangs_is_resent_before_the_deadline() {
    let c = cluster(2).await;
    let s = c.scheduler();
    let w = test_server(s, "hang").await;
    let call = HttpCall::get("/delay/5000").timeout(Duration::from_millis(1500));
    let e = s.http(&w, call).await.expect_err("every attempt hangs");
    assert!(matches!(e, FleetError::Timeout { .. }), "{e:?}");
    let resent = wait_until("a second attempt", Duration::from_secs(5), || async {
        let n = count(s, &w, "/delay/5000").await;
        (n >= 2).then_some(n)
    })
    .await;
    assert!(resent.is_ok(), "the hung attempt was never re-sent");
    c.shutdown().await.unwrap();
}

/// C21: an isolated rpc-server answers a body over its limit with 413 and a bincode reply
/// holding `PayloadTooLarge`; the launcher decodes it (it used to turn every non-200 into
/// `Protocol`, "check that every node runs the same fleet version").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_an_isolated_rpc_server_sends_survive_the_hop() {
    let c = cluster(3).await;
    let s = c.scheduler();
    let fleet = fleet_bin().to_string_lossy().into_owned();
    let spec = HttpServiceSpec::new([
        fleet.as_str(),
        "rpc-server",
        "--port",
        "{port}",
        "--worker",
        "{worker}",
        "--max-body-bytes",
        "4096",
    ])
    .ready_when("/health", 200)
    .protocol(CallProtocol::FleetRpc)
    .stop_grace(Duration::from_secs(2));
    s.create_workers(
        Job::new("iso", 1)
            .kind(WorkerKind::HttpService(spec))
            .spec(SchedulingSpec::default().ports(1)),
    )
    .await
    .unwrap();
    let w = s.get_workers("iso", Duration::from_secs(20)).await.unwrap()[0]
        .id
        .clone();
    s.create_engine(&w, "e", "echo", &()).await.unwrap();
    let opts = CallOptions::default()
        .idempotent(true)
        .timeout(Duration::from_secs(10));
    let small = s
        .call_raw(
            &w,
            "e",
            "echo",
            Payload::bincode(&vec![1u8; 100]).unwrap(),
            &opts,
        )
        .await;
    assert!(small.is_ok(), "{small:?}");
    let big = s
        .call_raw(
            &w,
            "e",
            "echo",
            Payload::bincode(&vec![1u8; 10_000]).unwrap(),
            &opts,
        )
        .await;
    assert!(
        matches!(big, Err(FleetError::PayloadTooLarge { .. })),
        "{big:?}"
    );
    c.shutdown().await.unwrap();
}

/// The caller sets the retry policy of one request and sees how many attempts were sent: the
/// default re-sends an idempotent GET that gets 503 up to 5 times; `Retry::attempts(2)` sends it
/// twice and `Retry::never()` once. A policy cannot make an unsafe re-send: a POST answered 502
/// (it may have run) is sent once even when the policy allows 5 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_sets_the_retry_policy_per_request_and_sees_the_attempts_made() {
    let c = cluster(4).await;
    let s = c.scheduler();
    let w = test_server(s, "policy").await;
    let fast = |r: Retry| r.backoff(Duration::from_millis(1), Duration::from_millis(5));
    let ok = s.http(&w, HttpCall::get("/health")).await.unwrap();
    assert_eq!((ok.status, ok.attempts), (200, 1));

    let default = s
        .http(
            &w,
            HttpCall::get("/status/503").retry(fast(Retry::default())),
        )
        .await
        .unwrap();
    assert_eq!((default.status, default.attempts), (503, 5));
    assert_eq!(count(s, &w, "/status/503").await, 5);

    let two = s
        .http(
            &w,
            HttpCall::get("/status/503").retry(fast(Retry::default().attempts(2))),
        )
        .await
        .unwrap();
    assert_eq!((two.status, two.attempts), (503, 2));
    assert_eq!(count(s, &w, "/status/503").await, 7);

    let once = s
        .http(&w, HttpCall::get("/status/503").retry(Retry::never()))
        .await
        .unwrap();
    assert_eq!((once.status, once.attempts), (503, 1));
    assert_eq!(count(s, &w, "/status/503").await, 8);

    let post = s
        .http(
            &w,
            HttpCall::post_json("/status/502", &serde_json::json!({}))
                .retry(fast(Retry::default().attempts(5))),
        )
        .await
        .unwrap();
    assert_eq!((post.status, post.attempts), (502, 1));
    assert_eq!(count(s, &w, "/status/502").await, 1);
    c.shutdown().await.unwrap();
}
