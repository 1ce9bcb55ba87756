//! A driver that blocks its own tokio runtime does not fence the cluster: the embedded head's
//! sessions and failure detector run on a runtime of their own (C17).

use fleet_actors::CallOptions;
use fleet_runtime::MemberEvent;
use fleet_tests::cluster::TestCluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_blocking_all_its_runtime_threads_past_the_timeout_marks_no_node_down() {
    let (cluster, w) = TestCluster::one_node_with_workers("w", 1).await;
    let node = cluster.node_id(0).unwrap();
    let s = cluster.scheduler().clone();
    let e = s
        .create_engine(&w[0].id, "c", "counter", &())
        .await
        .unwrap();
    let opts = CallOptions::default().timeout(Duration::from_secs(10));
    let n: u64 = e.call("incr", &1u64, &opts).await.unwrap();
    assert_eq!(n, 1);

    // Both runtime worker threads and the test's own thread sleep for three timeouts.
    let stall = cluster.membership().timeout * 3;
    let blockers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { std::thread::sleep(stall) }))
        .collect();
    std::thread::sleep(stall);
    for b in blockers {
        b.await.unwrap();
    }

    // The node still answers, through the same membership, after the stall.
    let n: u64 = e.call("incr", &1u64, &opts).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(cluster.node_id(0), Some(node.clone()), "it did not rejoin");
    let status = cluster.head().status().await.unwrap();
    let row = status.nodes.iter().find(|r| r.node == node.to_string());
    assert_eq!(row.map(|r| r.state.name()), Some("alive"), "{status:#?}");
    let downs: Vec<_> = cluster
        .events()
        .into_iter()
        .filter(|e| matches!(e, MemberEvent::Down { .. }))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    let log = cluster.node_log(0);
    assert!(!log.contains("fenced"), "{log}");
}
