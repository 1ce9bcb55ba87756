//! Node failures with real processes: a SIGKILLed node and a hung (SIGSTOPped) one. The head
//! marks them down within the heartbeat timeout, calls in flight fail with a typed node-lost
//! error, the other node keeps serving, and no child process of a lost node survives: a
//! stopped node's children end on their own (their guards watch its lease file) before the
//! head declares it down.

use fleet_actors::{
    CallOptions, FleetError, HttpServiceSpec, Job, SchedulingSpec, WorkerId, WorkerKind,
};
use fleet_runtime::scheduler::Policy;
use fleet_runtime::{MemberEvent, Scheduler, WorkerInfo};
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::{pid_alive, wait_until};
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn opts(t: Duration) -> CallOptions {
    CallOptions::default().timeout(t)
}

/// Two nodes, spread: `w/0` and `w/2` on one node, `w/1` and `w/3` on the other, each with a
/// counter and a sleeper, and an HTTP service forked next to each.
async fn two_node_cluster() -> (TestCluster, Vec<WorkerInfo>) {
    let cluster = TestCluster::builder()
        .policy(Policy::Spread)
        .node(NodeSpec::new().label("n", "0"))
        .node(NodeSpec::new().label("n", "1"))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 4).spec(SchedulingSpec::default().cpu(1.0)))
        .await
        .unwrap();
    let workers = s.get_workers("w", Duration::from_secs(20)).await.unwrap();
    for w in &workers {
        s.create_engine(&w.id, "c", "counter", &()).await.unwrap();
        s.create_engine(&w.id, "s", "sleep", &()).await.unwrap();
    }
    let kind = WorkerKind::HttpService(
        HttpServiceSpec::new([SERVER, "--port", "{port}"]).ready_within(Duration::from_secs(20)),
    );
    s.fork_workers("svc", "w", kind, SchedulingSpec::default().ports(1))
        .await
        .unwrap();
    s.get_workers("svc", Duration::from_secs(30)).await.unwrap();
    (cluster, workers)
}

/// The child pids of the forked services on node `i`.
async fn children_on(cluster: &TestCluster, i: usize) -> Vec<u32> {
    let node = cluster.node_id(i).unwrap().to_string();
    let status = cluster.head().status().await.unwrap();
    let (_, svc) = status.roles.iter().find(|(r, _)| r == "svc").unwrap();
    let pids: Vec<u32> = svc
        .iter()
        .filter(|w| w.node == node)
        .map(|w| w.child_pid.expect("a running service has a child pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{svc:#?}");
    assert!(pids.iter().all(|p| pid_alive(*p)));
    pids
}

fn on_node<'a>(workers: &'a [WorkerInfo], cluster: &TestCluster, i: usize) -> Vec<&'a WorkerInfo> {
    let id = cluster.node_id(i).unwrap();
    workers.iter().filter(|w| w.node == id).collect()
}

/// Starts a 60 s call on `worker` that only a node loss can end early.
fn long_call(s: &Scheduler, worker: &WorkerId) -> tokio::task::JoinHandle<Result<(), FleetError>> {
    let s = s.clone();
    let w = worker.clone();
    tokio::spawn(async move {
        s.call::<_, ()>(&w, "s", "sleep", &60_000u64, &opts(Duration::from_secs(90)))
            .await
    })
}

async fn still_serving(s: &Scheduler, workers: &[&WorkerInfo]) {
    for w in workers {
        let before: u64 = s
            .call(&w.id, "c", "get", &(), &opts(Duration::from_secs(10)))
            .await
            .unwrap();
        let after: u64 = s
            .call(&w.id, "c", "incr", &1u64, &opts(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(after, before + 1, "{}", w.id);
    }
}

fn assert_node_lost(e: &FleetError, node: &str) {
    assert!(
        matches!(e, FleetError::NodeLost { node: n, .. } if n == node),
        "expected NodeLost for {node}, got {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_node_is_down_within_the_timeout_and_its_calls_and_children_end() {
    let (cluster, workers) = two_node_cluster().await;
    let s = cluster.scheduler().clone();
    let lost = cluster.node_id(1).unwrap();
    let victims = on_node(&workers, &cluster, 1);
    let survivors = on_node(&workers, &cluster, 0);
    assert_eq!((victims.len(), survivors.len()), (2, 2));
    let children = children_on(&cluster, 1).await;
    let in_flight = long_call(&s, &victims[0].id);
    // The call is running on the node before it dies.
    wait_until("the long call to start", Duration::from_secs(10), || {
        let s = s.clone();
        let w = victims[0].id.clone();
        async move {
            let st = s.status(&w, Duration::from_secs(5)).await.ok()?;
            st.in_flight.map(|_| ())
        }
    })
    .await
    .unwrap();

    cluster.kill_node(1);
    let bound = cluster.membership().timeout + Duration::from_secs(5);
    let reason = cluster.wait_down(1, bound).await.unwrap();
    assert!(!reason.is_empty());
    let r = tokio::time::timeout(bound, in_flight)
        .await
        .expect("the in-flight call ends within the timeout, not at its own 90 s deadline")
        .unwrap();
    assert_node_lost(&r.unwrap_err(), &lost.to_string());

    for w in &victims {
        let e = s
            .call::<_, u64>(&w.id, "c", "get", &(), &opts(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_node_lost(&e, &lost.to_string());
    }
    let e = s
        .get_workers("w", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_node_lost(&e, &lost.to_string());
    still_serving(&s, &survivors).await;

    // The lost node's children die with it.
    for pid in children {
        wait_until(
            &format!("child {pid} to die"),
            Duration::from_secs(10),
            || async move { (!pid_alive(pid)).then_some(()) },
        )
        .await
        .unwrap();
    }
    // Its resources are freed: it is no longer a placement target.
    assert!(!s.nodes().await.contains(&lost));
    let status = cluster.head().status().await.unwrap();
    let row = status
        .nodes
        .iter()
        .find(|n| n.node == lost.to_string())
        .unwrap();
    assert_eq!(row.state.name(), "down");
    // New work goes to the survivor.
    let more = s
        .create_workers(Job::new("more", 2).spec(SchedulingSpec::default().cpu(1.0)))
        .await
        .unwrap();
    assert!(more.iter().all(|w| w.node == cluster.node_id(0).unwrap()));
    s.delete_workers(None, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_s_children_end_on_their_own_before_it_is_down_and_after_sigcont_it_rejoins() {
    let (cluster, workers) = two_node_cluster().await;
    let s = cluster.scheduler().clone();
    let old = cluster.node_id(1).unwrap();
    let victims = on_node(&workers, &cluster, 1);
    let survivors = on_node(&workers, &cluster, 0);
    let children = children_on(&cluster, 1).await;
    let in_flight = long_call(&s, &victims[0].id);
    wait_until("the long call to start", Duration::from_secs(10), || {
        let s = s.clone();
        let w = victims[0].id.clone();
        async move {
            let st = s.status(&w, Duration::from_secs(5)).await.ok()?;
            st.in_flight.map(|_| ())
        }
    })
    .await
    .unwrap();

    // Hung: the process and its TCP connection stay, nothing answers. It cannot fence, but its
    // children's guards see its lease file stop changing and end their groups on their own:
    // each round looks at the children first, then at the events, so a child seen dead in an
    // earlier round than `Down` died before the head gave the node up.
    let mut events = cluster.head().member_events();
    cluster.stop_node(1);
    let stopped = std::time::Instant::now();
    let bound = cluster.membership().timeout + Duration::from_secs(5);
    let mut died: Vec<Option<u64>> = vec![None; children.len()];
    let mut down: Option<(u64, String)> = None;
    let mut round = 0u64;
    while (down.is_none() || died.iter().any(Option::is_none)) && stopped.elapsed() < bound * 2 {
        round += 1;
        for (i, pid) in children.iter().enumerate() {
            if died[i].is_none() && !pid_alive(*pid) {
                died[i] = Some(round);
            }
        }
        while let Ok(ev) = events.try_recv() {
            if let MemberEvent::Down { node, reason } = ev {
                if node == old && down.is_none() {
                    down = Some((round, reason));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (down_round, reason) = down.expect("the head marks the stopped node down");
    assert!(reason.contains("heartbeat"), "{reason}");
    for (pid, d) in children.iter().zip(&died) {
        let d = d.unwrap_or_else(|| panic!("child {pid} of the stopped node still runs"));
        assert!(
            d < down_round,
            "child {pid} died (round {d}) after Down (round {down_round})"
        );
    }
    let r = tokio::time::timeout(bound, in_flight)
        .await
        .expect("the in-flight call ends within the timeout")
        .unwrap();
    assert_node_lost(&r.unwrap_err(), &old.to_string());
    let e = s
        .call::<_, u64>(
            &victims[1].id,
            "c",
            "get",
            &(),
            &opts(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert_node_lost(&e, &old.to_string());
    still_serving(&s, &survivors).await;

    // Resumed, it notices it was cut off for longer than its lease, stops its workers and
    // joins again under a new id.
    cluster.cont_node(1);
    let new = cluster
        .wait_rejoined(1, &old, Duration::from_secs(20))
        .await
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(new.name, old.name);
    for pid in children {
        wait_until(
            &format!("child {pid} to die"),
            Duration::from_secs(15),
            || async move { (!pid_alive(pid)).then_some(()) },
        )
        .await
        .unwrap();
    }
    let log = cluster.node_log(1);
    assert!(log.contains("fenced"), "{log}");

    // Its old workers stay lost; new ones run on the rejoined node.
    let e = s
        .get_workers("w", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_node_lost(&e, &old.to_string());
    let fresh = s
        .create_workers(Job::new("fresh", 1).spec(SchedulingSpec::default().node_label("n", "1")))
        .await
        .unwrap();
    assert_eq!(fresh[0].node, new);
    let e = s
        .create_engine(&fresh[0].id, "c", "counter", &())
        .await
        .unwrap();
    let n: u64 = e
        .call("incr", &5u64, &opts(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(n, 5);
    s.delete_workers(None, false).await.unwrap();
}
