//! The node agent never blocks: a real `fleet node --join` process, its workers' real child
//! processes, and a head in the test process.
//!
//! - The child pids the agent reports are the ones its launchers started (checked against
//!   `/proc`: the node process's children that carry `FLEET_WORKER`), also after a restart.

use fleet_actors::{HttpServiceSpec, Job, RestartPolicy, SchedulingSpec, WorkerKind};
use fleet_runtime::membership::child_pids;
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::wait::wait_until;
use std::collections::HashMap;
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

/// Worker id → child pid, as `fleet status` reports them for `role`.
async fn reported(cluster: &TestCluster, role: &str) -> HashMap<String, u32> {
    let status = cluster.head().status().await.unwrap();
    status
        .roles
        .iter()
        .filter(|(r, _)| r == role)
        .flat_map(|(_, rows)| rows.iter())
        .filter_map(|w| w.child_pid.map(|p| (w.worker.clone(), p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_pids_of_the_launchers_children_also_after_a_restart() {
    let cluster = TestCluster::builder()
        .node(NodeSpec::new())
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    let spec = HttpServiceSpec::new([SERVER, "--port", "{port}"])
        .ready_within(Duration::from_secs(20))
        .restart(RestartPolicy::OnFailure {
            max_restarts: 3,
            backoff_ms: 10,
        });
    s.create_workers(
        Job::new("svc", 3)
            .kind(WorkerKind::HttpService(spec))
            .spec(SchedulingSpec::default().ports(1)),
    )
    .await
    .unwrap();
    s.get_workers("svc", Duration::from_secs(30)).await.unwrap();
    let node_pid = cluster.node_pid(0);

    let before = reported(&cluster, "svc").await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(before, child_pids::by_worker_of(node_pid));

    // Its child killed, a worker restarts with a new process: the new pid is reported.
    let (victim, old) = before.iter().next().map(|(w, p)| (w.clone(), *p)).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(old as i32, libc::SIGKILL);
    }
    let after = wait_until("the restarted child's pid", Duration::from_secs(20), || {
        let (c, v) = (&cluster, &victim);
        async move {
            let now = reported(c, "svc").await;
            (now.len() == 3 && now.get(v).is_some_and(|p| *p != old)).then_some(now)
        }
    })
    .await
    .unwrap();
    assert_eq!(after, child_pids::by_worker_of(node_pid));
}
