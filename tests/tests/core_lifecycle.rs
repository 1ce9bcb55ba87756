//! Worker lifecycle under faults: a create whose caller gave up, a delete racing a create, and
//! resources that come back only when a worker is really gone.

use fleet_actors::{FleetError, HttpServiceSpec, Job, SchedulingSpec, WorkerKind};
use fleet_runtime::scheduler::WorkerState;
use fleet_runtime::{Cluster, Scheduler};
use fleet_tests::wait_until;
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn services(role: &str, n: u32) -> Job {
    Job::new(role, n)
        .kind(WorkerKind::HttpService(HttpServiceSpec::new([
            SERVER, "--port", "{port}",
        ])))
        .spec(SchedulingSpec::default().ports(1))
}

async fn node_workers(cluster: &Cluster) -> usize {
    cluster.node_info().await.unwrap().workers.len()
}

/// Whether `role` is fully up (`Some(true)`), absent (`Some(false)`), or neither yet (`None`).
async fn up_or_absent(s: &Scheduler, role: &str, n: usize) -> Option<bool> {
    match s.workers(role).await {
        Err(FleetError::RoleNotFound { .. }) => Some(false),
        Ok(ws) if ws.len() == n && ws.iter().all(|w| w.state == WorkerState::Running) => Some(true),
        _ => None,
    }
}

/// Experiment G (C5): a `create_workers` whose caller gives up after 3 ms still ends on its own:
/// the role is then either fully up or absent, the node runs exactly the workers the role
/// says, and creating the role again (after deleting it) works. Before, the role stayed
/// `Starting` forever, its workers ran on, and the retry got `RoleExists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_caller_gave_up_completes_or_rolls_back_and_create_again_works() {
    let cluster = Cluster::local()
        .port_range(43100, 43199)
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    let first = tokio::time::timeout(
        Duration::from_millis(3),
        s.create_workers(services("svc", 8)),
    )
    .await;
    assert!(
        first.is_err(),
        "8 processes do not start in 3 ms: {first:?}"
    );
    let up = wait_until(
        "the abandoned create to end",
        Duration::from_secs(60),
        || up_or_absent(&s, "svc", 8),
    )
    .await
    .unwrap();
    assert_eq!(
        node_workers(&cluster).await,
        if up { 8 } else { 0 },
        "the node runs exactly the workers of the role (up: {up})"
    );
    s.delete_workers(Some("svc"), false).await.unwrap();
    assert_eq!(node_workers(&cluster).await, 0);

    let again = s.create_workers(services("svc", 8)).await.unwrap();
    assert_eq!(again.len(), 8);
    let ready = s.get_workers("svc", Duration::from_secs(10)).await.unwrap();
    assert_eq!(ready.len(), 8);
    s.delete_workers(None, false).await.unwrap();
    assert_eq!(node_workers(&cluster).await, 0);
    cluster.shutdown().await.unwrap();
}

/// C5: `delete_workers(role)` while the role's workers are starting never yields a "successful"
/// create with no workers (`Ok(vec![])`) and orphans: the create fails with `RoleNotFound`
/// (or, had it finished first, returned all 8), and no worker is left running on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_create_fails_the_create_and_leaves_no_worker_running() {
    let cluster = Cluster::local()
        .port_range(43200, 43299)
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    let create = {
        let s = s.clone();
        tokio::spawn(async move { s.create_workers(services("svc", 8)).await })
    };
    wait_until("the role to be recorded", Duration::from_secs(10), || {
        let s = s.clone();
        async move { s.roles().await.contains(&"svc".to_string()).then_some(()) }
    })
    .await
    .unwrap();
    s.delete_workers(Some("svc"), false).await.unwrap();
    let r = create.await.unwrap();
    match &r {
        Ok(ws) => assert_eq!(ws.len(), 8, "a create that succeeds has all its workers"),
        Err(FleetError::RoleNotFound { known, .. }) => {
            assert!(known.contains("deleted while"), "{known}")
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    wait_until(
        "no worker left on the node",
        Duration::from_secs(20),
        || async { (node_workers(&cluster).await == 0).then_some(()) },
    )
    .await
    .unwrap();
    assert!(matches!(
        s.workers("svc").await,
        Err(FleetError::RoleNotFound { .. })
    ));
    let again = s.create_workers(services("svc", 8)).await.unwrap();
    assert_eq!(again.len(), 8);
    s.delete_workers(None, false).await.unwrap();
    cluster.shutdown().await.unwrap();
}
