//! Partitions between a real `fleet node` and its head, made with a [`Relay`] whose traffic is
//! cut while both processes keep running and their sockets stay open: the node's lease runs
//! out before the head's timeout, so its workers' children are dead before the head declares
//! it down; and after the partition heals the node dials a fresh connection and rejoins.

use fleet_actors::{HttpServiceSpec, Job, SchedulingSpec, WorkerKind};
use fleet_runtime::MemberEvent;
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::{pid_alive, Relay};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::TryRecvError;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

/// A head, and one node that joined it through a relay, running two HTTP services (child
/// processes); returns the cluster, the relay and the children's pids.
async fn node_behind_a_relay() -> (TestCluster, Relay, Vec<u32>) {
    let cluster = TestCluster::builder().start().await.unwrap();
    let relay = Relay::start(&cluster.head_addr()).await.unwrap();
    let i = cluster
        .spawn_node(&NodeSpec::new().join_via(relay.addr()))
        .unwrap();
    let node = cluster
        .wait_joined(i, Duration::from_secs(30))
        .await
        .unwrap();
    let s = cluster.scheduler();
    let kind = WorkerKind::HttpService(
        HttpServiceSpec::new([SERVER, "--port", "{port}"]).ready_within(Duration::from_secs(20)),
    );
    s.create_workers(
        Job::new("svc", 2)
            .kind(kind)
            .spec(SchedulingSpec::default().ports(1)),
    )
    .await
    .unwrap();
    s.get_workers("svc", Duration::from_secs(30)).await.unwrap();
    let status = cluster.head().status().await.unwrap();
    let (_, svc) = status.roles.iter().find(|(r, _)| r == "svc").unwrap();
    let pids: Vec<u32> = svc
        .iter()
        .filter(|w| w.node == node.to_string())
        .map(|w| w.child_pid.expect("a running service has a child pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{svc:#?}");
    assert!(pids.iter().all(|p| pid_alive(*p)));
    (cluster, relay, pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_kills_its_children_before_the_head_declares_it_down() {
    let (cluster, relay, pids) = node_behind_a_relay().await;
    let node = cluster.node_id(0).unwrap();
    let mut events = cluster.head().member_events();

    relay.cut();
    let cut = Instant::now();
    // Each round first looks at the children, then at the events: a child seen dead in an
    // earlier round than the one that saw `Down` died before `Down` was published.
    let mut died: Vec<Option<(u64, Duration)>> = vec![None; pids.len()];
    let mut down: Option<(u64, Duration, String)> = None;
    let deadline = cluster.membership().timeout + Duration::from_secs(15);
    let mut round = 0u64;
    while (down.is_none() || died.iter().any(Option::is_none)) && cut.elapsed() < deadline {
        round += 1;
        for (i, pid) in pids.iter().enumerate() {
            if died[i].is_none() && !pid_alive(*pid) {
                died[i] = Some((round, cut.elapsed()));
            }
        }
        loop {
            match events.try_recv() {
                Ok(MemberEvent::Down { node: n, reason }) if n == node && down.is_none() => {
                    down = Some((round, cut.elapsed(), reason));
                }
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (down_round, down_after, reason) = down.expect("the head declares the node down");
    println!("head's Down after {down_after:?} ({reason}); children died after {died:?}");
    assert!(reason.contains("heartbeat"), "{reason}");
    for (pid, d) in pids.iter().zip(&died) {
        let (round, _) = d.unwrap_or_else(|| panic!("child {pid} still runs"));
        assert!(
            round < down_round,
            "child {pid} died (round {round}) before the head's Down (round {down_round})"
        );
    }
    let log = cluster.node_log(0);
    assert!(log.contains("fenced"), "{log}");
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_heals_the_node_dials_afresh_and_rejoins_under_a_new_id() {
    let (cluster, relay, pids) = node_behind_a_relay().await;
    let old = cluster.node_id(0).unwrap();
    relay.cut();
    let cut = tokio::time::Instant::now();
    let bound = cluster.membership().timeout + Duration::from_secs(10);
    cluster.wait_down(0, bound).await.unwrap();
    for pid in &pids {
        assert!(
            !pid_alive(*pid),
            "child {pid} of the fenced node still runs"
        );
    }
    wait_for_log(&cluster, "fenced", Duration::from_secs(10)).await;
    // The link stays down for 10 s (FLEET_TEST_CUT_SECS to measure others): well past the
    // lease, the timeout and the backoff cap.
    let secs = std::env::var("FLEET_TEST_CUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    tokio::time::sleep_until(cut + Duration::from_secs(secs)).await;
    relay.restore();
    let healed = Instant::now();
    let new = cluster
        .wait_rejoined(0, &old, Duration::from_secs(60))
        .await
        .unwrap();
    println!(
        "rejoined as {new} {:?} after the partition healed",
        healed.elapsed()
    );
    if std::env::var_os("FLEET_TEST_CUT_SECS").is_some() {
        println!("{}", cluster.node_log(0));
    }
    assert_ne!(new, old);
    // The rejoined node takes work.
    let s = cluster.scheduler();
    let fresh = s
        .create_workers(Job::new("fresh", 1).spec(SchedulingSpec::default().cpu(0.5)))
        .await
        .unwrap();
    assert_eq!(fresh[0].node, new);
    s.delete_workers(None, false).await.unwrap();
}

async fn wait_for_log(cluster: &TestCluster, what: &str, deadline: Duration) {
    fleet_tests::wait_until(&format!("{what:?} in the node's log"), deadline, || {
        let hit = cluster.node_log(0).contains(what).then_some(());
        async move { hit }
    })
    .await
    .unwrap();
}
