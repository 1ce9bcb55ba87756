//! The one size guard on encoded messages, over a real node process: nothing a caller sends or
//! an engine answers can become a frame over ractor_cluster's 16 MiB limit, which would drop
//! the node's whole session (and every worker on it).

use fleet_actors::{CallOptions, FleetError, HttpCall, Job};
use fleet_runtime::MemberEvent;
use fleet_tests::cluster::TestCluster;
use std::time::Duration;

fn downs(cluster: &TestCluster) -> usize {
    cluster
        .events()
        .iter()
        .filter(|e| matches!(e, MemberEvent::Down { .. }))
        .count()
}

/// Experiment F of the review (a 17 MiB `rpc_meta` used to lose the node), an engine whose
/// error message is 17 MiB (it used to be sent whole), and a 17 MiB HTTP path (the path was
/// not counted): each is refused or cut with a typed answer, and the node stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_error_text_and_paths_never_drop_the_node() {
    let cluster = TestCluster::builder().nodes(1).start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("big", 1)).await.unwrap();
    let w = s.get_workers("big", Duration::from_secs(10)).await.unwrap()[0]
        .id
        .clone();
    let counter = s.create_engine(&w, "c", "counter", &()).await.unwrap();
    s.create_engine(&w, "s", "sleep", &()).await.unwrap();
    let opts = CallOptions::default()
        .timeout(Duration::from_secs(20))
        .idempotent(true);
    let still_up = || async {
        let r: Result<u64, _> = counter.call("get", &(), &opts).await;
        assert_eq!(r, Ok(0), "the node's worker answers");
        assert_eq!(downs(&cluster), 0, "no Down event");
    };

    // 1. A 17 MiB rpc_meta with empty arguments.
    let meta = opts.clone().meta("blob", "x".repeat(17 << 20));
    let r: Result<u64, _> = counter.call("get", &(), &meta).await;
    assert!(
        matches!(r, Err(FleetError::PayloadTooLarge { .. })),
        "{:?}",
        r.map_err(|e| e.kind())
    );
    still_up().await;

    // 2. An engine error of 17 MiB is cut at the source and arrives as EngineFailed.
    let r: Result<(), _> = s.call(&w, "s", "fail_long", &(17u64 << 20), &opts).await;
    match r {
        Err(FleetError::EngineFailed { message, .. }) => {
            assert!(message.len() <= fleet_actors::error::MAX_ERROR_TEXT_BYTES);
            assert!(message.contains("bytes in all"), "the cut says so");
        }
        other => panic!(
            "expected EngineFailed, got {:?}",
            other.map_err(|e| e.kind())
        ),
    }
    still_up().await;

    // 3. A 17 MiB HTTP path (to an in-process worker, which would answer BadRequest).
    let call = HttpCall::get(format!("/{}", "p".repeat(17 << 20)));
    let r = s.http(&w, call).await;
    assert!(
        matches!(r, Err(FleetError::PayloadTooLarge { .. })),
        "{:?}",
        r.map_err(|e| e.kind())
    );
    still_up().await;
}
