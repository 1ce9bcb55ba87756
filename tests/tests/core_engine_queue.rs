//! The engine queue of an in-process RpcServer: its thread parks while idle (no polling), and
//! work nobody waits for any more is dropped before it runs.

use fleet_actors::{CallOptions, FleetError, Job, WorkerId};
use fleet_runtime::Cluster;
use std::time::{Duration, Instant};

/// utime + stime (clock ticks) and voluntary context switches of this process's thread whose
/// name starts with `prefix`.
fn thread_usage(prefix: &str) -> Option<(u64, u64)> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let voluntary = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        return Some((ticks, voluntary));
    }
    None
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Back-to-back calls used to find the engine thread spinning between them (the adaptive poller
/// kept it on a core for as long as calls kept coming). Now it parks after every job: it
/// switches out voluntarily about once per call, and its CPU time is a small part of the wall
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_thread_parks_between_calls_instead_of_spinning() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("parkcpu", 1)).await.unwrap();
    let w = WorkerId::new("parkcpu", 0);
    s.create_engine(&w, "e", "counter", &()).await.unwrap();
    let opts = CallOptions::default()
        .idempotent(true)
        .timeout(Duration::from_secs(10));
    let name = "engine parkcpu/";
    let (ticks0, vol0) = thread_usage(name).expect("the engine thread is listed in /proc");
    let start = Instant::now();
    let mut calls = 0u64;
    // Bounded by time and by count.
    while start.elapsed() < Duration::from_millis(1500) && calls < 20_000 {
        let _: u64 = s.call(&w, "e", "get", &(), &opts).await.unwrap();
        calls += 1;
    }
    let wall = start.elapsed();
    let (ticks1, vol1) = thread_usage(name).unwrap();
    let cpu = Duration::from_millis((ticks1 - ticks0) * 1000 / ticks_per_second());
    let switches = vol1 - vol0;
    eprintln!(
        "{calls} calls in {wall:?}: engine thread cpu {cpu:?}, {switches} voluntary switches"
    );
    assert!(
        switches * 2 >= calls,
        "the engine thread parked only {switches} times in {calls} calls: it is polling"
    );
    assert!(
        cpu * 2 < wall,
        "the engine thread used {cpu:?} of CPU in {wall:?} of calls: it is spinning"
    );

    // Idle: the thread uses no CPU at all (at most one tick of rounding).
    let (idle0, _) = thread_usage(name).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle1, _) = thread_usage(name).unwrap();
    assert!(
        idle1 - idle0 <= 1,
        "an idle engine thread used {} ticks in 1 s",
        idle1 - idle0
    );
    cluster.shutdown().await.unwrap();
}

/// A timeout storm used to leave the engine working through calls nobody waited for, so every
/// later call timed out behind them (congestion collapse). Now a queued call whose caller gave
/// up, or whose deadline passed, is dropped before it runs: after 20 abandoned 200 ms calls,
/// a call with a 1 s deadline waits at most for the one call already running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_whose_callers_gave_up_are_dropped_before_they_run() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler().clone();
    s.create_workers(Job::new("storm", 1)).await.unwrap();
    let w = WorkerId::new("storm", 0);
    s.create_engine(&w, "e", "sleep", &()).await.unwrap();
    let short = CallOptions::default().timeout(Duration::from_millis(100));
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let (s, w, short) = (s.clone(), w.clone(), short.clone());
            tokio::spawn(async move { s.call::<_, u64>(&w, "e", "sleep", &200u64, &short).await })
        })
        .collect();
    for call in storm {
        let r = call.await.unwrap();
        assert!(matches!(r, Err(FleetError::Timeout { .. })), "{r:?}");
    }
    let r: Result<u64, _> = s
        .call(
            &w,
            "e",
            "sleep",
            &200u64,
            &CallOptions::default().timeout(Duration::from_secs(1)),
        )
        .await;
    assert_eq!(r, Ok(200));
    // At most the call that was already running when its caller gave up, plus this one, ran.
    let st = s.status(&w, Duration::from_secs(5)).await.unwrap();
    assert!(st.calls_done <= 2, "{} calls ran", st.calls_done);
    assert_eq!(st.queued, 0);
    cluster.shutdown().await.unwrap();
}

/// The same over a real node process: the call's budget crosses the wire with it, so the node
/// drops queued calls whose callers on the head gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_on_a_remote_node_expire_with_their_budget() {
    let (cluster, workers) = fleet_tests::TestCluster::one_node_with_workers("rstorm", 1).await;
    let s = cluster.scheduler().clone();
    let w = workers[0].id.clone();
    s.create_engine(&w, "e", "sleep", &()).await.unwrap();
    let short = CallOptions::default().timeout(Duration::from_millis(100));
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let (s, w, short) = (s.clone(), w.clone(), short.clone());
            tokio::spawn(async move { s.call::<_, u64>(&w, "e", "sleep", &200u64, &short).await })
        })
        .collect();
    for call in storm {
        let r = call.await.unwrap();
        assert!(matches!(r, Err(FleetError::Timeout { .. })), "{r:?}");
    }
    let r: Result<u64, _> = s
        .call(
            &w,
            "e",
            "sleep",
            &200u64,
            &CallOptions::default().timeout(Duration::from_secs(2)),
        )
        .await;
    assert_eq!(r, Ok(200));
    let st = s.status(&w, Duration::from_secs(5)).await.unwrap();
    assert!(st.calls_done <= 2, "{} calls ran", st.calls_done);
}

/// A caller that gives up on a call with a request id (its future dropped long before the
/// call's own deadline) tells the worker, on a real node process: the call, queued behind a
/// long one, never runs. Without the cancel it would run when its turn came (its 30 s budget
/// had not passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_whose_remote_caller_gave_up_is_cancelled_and_never_runs() {
    let (cluster, workers) = fleet_tests::TestCluster::one_node_with_workers("cancel", 1).await;
    let s = cluster.scheduler().clone();
    let w = workers[0].id.clone();
    s.create_engine(&w, "s", "sleep", &()).await.unwrap();
    s.create_engine(&w, "c", "counter", &()).await.unwrap();
    // Occupies the worker's engine thread for 1.5 s.
    let long = {
        let (s, w) = (s.clone(), w.clone());
        tokio::spawn(async move {
            s.call::<_, u64>(&w, "s", "sleep", &1_500u64, &CallOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opts = CallOptions::default()
        .timeout(Duration::from_secs(30))
        .request_id("given-up-1");
    // The caller gives up after 200 ms: the future is dropped.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        s.call::<_, u64>(&w, "c", "incr", &1u64, &opts),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the call cannot have finished: {gave_up:?}"
    );
    assert_eq!(long.await.unwrap(), Ok(1_500));
    // Another call queued behind nothing runs at once; the cancelled one never ran.
    let runs: u64 = s
        .call(&w, "c", "runs", &(), &CallOptions::default())
        .await
        .unwrap();
    assert_eq!(runs, 0, "the cancelled call ran");
    // The id is free again: the same request sent again runs (exactly once).
    let total: u64 = s.call(&w, "c", "incr", &1u64, &opts).await.unwrap();
    assert_eq!(total, 1);
}
