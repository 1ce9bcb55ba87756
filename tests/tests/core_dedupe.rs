//! The dedupe record of an in-process RpcServer: exact (keyed by engine, method and request id)
//! and bounded (by count and by bytes), and only for ids the caller gave.
//!
//! The RSS test measures the whole test process, so this file holds nothing else heavy.

use fleet_actors::{CallOptions, FleetError, Job, Payload, WorkerId};
use fleet_runtime::Cluster;
use std::time::Duration;

fn rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Experiment B of the review: 1,024 default (non-idempotent, no id) calls returning 1 MiB each
/// used to add 1 GiB of RSS, because every result was recorded under a generated id. Now only
/// explicit ids are recorded, and the record is bounded by bytes (64 MiB by default) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_calls_with_large_results_do_not_grow_the_dedupe_record() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("rss", 1)).await.unwrap();
    let w = WorkerId::new("rss", 0);
    s.create_engine(&w, "e", "echo", &()).await.unwrap();
    let payload = Payload::bincode(&vec![7u8; 1 << 20]).unwrap();
    let idem = CallOptions::default().idempotent(true);
    // Warm the allocator up so that what follows measures retention, not first use.
    for _ in 0..128 {
        s.call_raw(&w, "e", "echo", payload.clone(), &idem)
            .await
            .unwrap();
    }
    let before = rss_mib();
    for _ in 0..1024 {
        s.call_raw(&w, "e", "echo", payload.clone(), &CallOptions::default())
            .await
            .unwrap();
    }
    let after_default = rss_mib();
    // Explicit ids are recorded, but never more than the byte bound.
    for i in 0..256 {
        let o = CallOptions::default().request_id(format!("big-{i}"));
        s.call_raw(&w, "e", "echo", payload.clone(), &o)
            .await
            .unwrap();
    }
    let after_ids = rss_mib();
    eprintln!("RSS {before} MiB, after 1024 default calls {after_default} MiB, after 256 explicit ids {after_ids} MiB");
    assert!(
        after_default < before + 128,
        "1,024 default calls of 1 MiB grew RSS from {before} to {after_default} MiB"
    );
    assert!(
        after_ids < before + 64 + 128,
        "256 recorded 1 MiB results grew RSS from {before} to {after_ids} MiB (bound: 64 MiB)"
    );
    // The newest explicit id is still answered from the record.
    let o = CallOptions::default().request_id("big-255");
    let again = s.call_raw(&w, "e", "echo", payload.clone(), &o).await;
    assert_eq!(again.map(|p| p.len()), Ok(payload.len()));
    cluster.shutdown().await.unwrap();
}

/// A request id names one logical call: the same id on the same method runs once, and on
/// another method it is a `BadRequest` (it used to return the first method's recorded reply,
/// and the second method silently never ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_method_is_a_bad_request() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("ids", 1)).await.unwrap();
    let w = WorkerId::new("ids", 0);
    let e = s.create_engine(&w, "c", "counter", &()).await.unwrap();
    let opts = CallOptions::default()
        .timeout(Duration::from_secs(10))
        .request_id("step-7");
    let first: u64 = e.call("incr", &5u64, &opts).await.unwrap();
    let repeat: u64 = e.call("incr", &5u64, &opts).await.unwrap();
    assert_eq!((first, repeat), (5, 5));
    let runs: u64 = e
        .call("runs", &(), &CallOptions::default().idempotent(true))
        .await
        .unwrap();
    assert_eq!(runs, 1, "the repeat on the same method ran again");

    let other: Result<u64, _> = e.call("get", &(), &opts).await;
    match other {
        Err(FleetError::BadRequest { what, detail }) => {
            assert!(what.contains("step-7"), "{what}");
            assert!(detail.contains("c.incr"), "{detail}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    // The same id on another engine is refused too.
    s.create_engine(&w, "d", "counter", &()).await.unwrap();
    let r: Result<u64, _> = s.call(&w, "d", "incr", &1u64, &opts).await;
    assert!(matches!(r, Err(FleetError::BadRequest { .. })), "{r:?}");
    cluster.shutdown().await.unwrap();
}
