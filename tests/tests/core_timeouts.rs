//! Caller-supplied durations: `create_engine` and `configure` wait as long as the caller says
//! (not the scheduler's fixed spawn timeout), and no duration a caller passes can overflow a
//! clock and panic.

use fleet_actors::engine::Configure;
use fleet_actors::{
    CallOptions, Engine, EngineCall, EngineError, FleetError, HttpCall, Job, Payload, WorkerId,
};
use fleet_runtime::Cluster;
use std::time::Duration;

/// An engine whose constructor sleeps for its argument (ms), like one that loads weights, and
/// whose `configure` hook sleeps for the configuration (ms).
struct Slow;

impl Engine for Slow {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        Err(call.unknown_method())
    }
    fn configure(&mut self, cfg: &Configure) -> Result<(), EngineError> {
        let ms: u64 = cfg
            .config
            .decode()
            .map_err(|e| EngineError::BadArgs(e.to_string()))?;
        std::thread::sleep(Duration::from_millis(ms));
        Ok(())
    }
}

/// C15: the deadline of engine creation and configuration is the caller's. A 300 ms deadline
/// ends a 2 s constructor with `Timeout` after 300 ms (the fixed 30 s spawn timeout used to
/// apply, so it could be neither shortened nor, for weights that take minutes, lengthened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_engine_and_configure_wait_as_long_as_the_caller_says() {
    let cluster = Cluster::local()
        .engine("slow", |init: &fleet_actors::EngineInit| {
            let ms: u64 = init
                .args
                .decode()
                .map_err(|e| EngineError::BadArgs(e.to_string()))?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Slow)
        })
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("slow", 1)).await.unwrap();
    let w = WorkerId::new("slow", 0);
    let short = CallOptions::default().timeout(Duration::from_millis(300));
    let long = CallOptions::default().timeout(Duration::from_secs(20));

    let r = s
        .create_engine_with(&w, "a", "slow", &2000u64, &short)
        .await;
    assert!(
        matches!(r, Err(FleetError::Timeout { after_ms: 300, .. })),
        "{r:?}"
    );
    // Queued behind the first constructor, well within its own deadline.
    let b = s.create_engine_with(&w, "b", "slow", &100u64, &long).await;
    assert!(b.is_ok(), "{b:?}");

    let r = s
        .configure_with("slow", &2000u64, Duration::from_millis(300))
        .await;
    assert!(
        matches!(r, Err(FleetError::Timeout { after_ms: 300, .. })),
        "{r:?}"
    );
    let r = s
        .configure_with("slow", &10u64, Duration::from_secs(20))
        .await;
    assert_eq!(r, Ok(()));
    cluster.shutdown().await.unwrap();
}

/// C23: `Duration::MAX` (a natural way to say "wait forever") and `u64::MAX` milliseconds are
/// accepted wherever a caller gives a deadline; they used to overflow `Instant + Duration` and
/// panic the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_from_callers_never_overflow_a_clock() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("forever", 1)).await.unwrap();
    let ws = s.get_workers("forever", Duration::MAX).await.unwrap();
    let w = ws[0].id.clone();
    let e = s.create_engine(&w, "c", "counter", &()).await.unwrap();
    let total: u64 = e
        .call(
            "incr",
            &2u64,
            &CallOptions::default().timeout(Duration::MAX),
        )
        .await
        .unwrap();
    assert_eq!(total, 2);
    let call = HttpCall::get("/anything").timeout(Duration::MAX);
    assert_eq!(call.timeout_ms, u64::MAX, "saturated, not wrapped");
    // An in-process worker has no HTTP endpoint: a typed answer, not a panic.
    let r = s.http(&w, call).await;
    assert!(matches!(r, Err(FleetError::BadRequest { .. })), "{r:?}");
    cluster.shutdown().await.unwrap();
}
