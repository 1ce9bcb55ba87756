//! Worker lifecycle under faults: a create whose caller gave up, a delete racing a create, and
//! resources that come back only when a worker is really gone.

use fleet_actors::{
    CallOptions, Engine, EngineCall, EngineError, FleetError, HttpServiceSpec, Job, Payload,
    SchedulingSpec, WorkerId, WorkerKind,
};
use fleet_runtime::scheduler::WorkerState;
use fleet_runtime::{Cluster, Scheduler};
use fleet_tests::wait_until;
use std::sync::atomic::{AtomicBool, Ordering};
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
        .port_range(23100, 23199)
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
        .port_range(23200, 23299)
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

/// Set when the engine of experiment H is dropped (its engine thread is ending).
static HELD_ENGINE_GONE: AtomicBool = AtomicBool::new(false);

/// An engine whose `sleep` call blocks its thread for the given milliseconds, like a GPU
/// kernel that cannot be interrupted, and that records when it is dropped.
struct Holds;

impl Engine for Holds {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        let ms: u64 = call.decode()?;
        std::thread::sleep(Duration::from_millis(ms));
        call.reply(&ms)
    }
}

impl Drop for Holds {
    fn drop(&mut self) {
        HELD_ENGINE_GONE.store(true, Ordering::SeqCst);
    }
}

/// Experiment H (C6): deleting an in-process GPU worker whose engine call outlives the destroy
/// deadline does not give its GPU back while the engine thread still runs: the node shows the
/// worker as stopping, with the reason, and a new GPU worker gets GPU 0 only once the old
/// engine is gone. The deleted worker's in-flight call is answered with `WorkerFailed` at
/// destroy, never later with `Ok(5000)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_gpu_worker_keeps_its_gpu_until_its_engine_thread_ends() {
    let cluster = Cluster::local()
        .gpus([0])
        .destroy_timeout(Duration::from_millis(200))
        .engine("holds", |_: &fleet_actors::EngineInit| Ok(Holds))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    s.create_workers(Job::new("train", 1).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap();
    let w = WorkerId::new("train", 0);
    s.create_engine(&w, "e", "holds", &()).await.unwrap();
    let call = {
        let (s, w) = (s.clone(), w.clone());
        tokio::spawn(async move {
            s.call::<_, u64>(&w, "e", "sleep", &5000u64, &CallOptions::default())
                .await
        })
    };
    wait_until("the call to run", Duration::from_secs(10), || {
        let (s, w) = (s.clone(), w.clone());
        async move {
            let st = s.status(&w, Duration::from_secs(1)).await.ok()?;
            st.in_flight.is_some().then_some(())
        }
    })
    .await
    .unwrap();
    // A second call waits behind the first in the engine queue.
    let queued = {
        let (s, w) = (s.clone(), w.clone());
        tokio::spawn(async move {
            s.call::<_, u64>(&w, "e", "sleep", &1u64, &CallOptions::default())
                .await
        })
    };
    wait_until("the second call to queue", Duration::from_secs(10), || {
        let (s, w) = (s.clone(), w.clone());
        async move {
            let st = s.status(&w, Duration::from_secs(1)).await.ok()?;
            (st.queued >= 1).then_some(())
        }
    })
    .await
    .unwrap();
    // Its destroy hook cannot run before the 5 s call ends: the delete reports the worker
    // stopped but still holding its resources.
    let _ = s.delete_workers(Some("train"), false).await;
    let q = tokio::time::timeout(Duration::from_secs(3), queued)
        .await
        .expect("the queued call is answered at destroy")
        .unwrap();
    assert!(
        matches!(&q, Err(FleetError::WorkerFailed { reason, .. }) if reason.contains("destroyed")),
        "{q:?}"
    );
    let r = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .expect("the in-flight call is answered at destroy, not when the engine ends")
        .unwrap();
    assert!(
        matches!(&r, Err(FleetError::WorkerFailed { reason, .. }) if reason.contains("destroyed")),
        "{r:?}"
    );
    assert!(!HELD_ENGINE_GONE.load(Ordering::SeqCst));
    let info = cluster.node_info().await.unwrap();
    let old = info
        .workers
        .iter()
        .find(|l| l.worker == w)
        .expect("the deleted worker is listed while its engine thread runs");
    assert!(
        old.stopping
            .as_deref()
            .is_some_and(|why| why.contains("engine thread")),
        "{old:?}"
    );
    assert!(info.free_gpus.is_empty(), "{info:?}");

    let job = Job::new("train2", 1).spec(SchedulingSpec::default().gpu(1));
    let again = wait_until("GPU 0 to be free again", Duration::from_secs(30), || {
        let (s, job) = (s.clone(), job.clone());
        async move {
            match s.create_workers(job).await {
                Ok(ws) => Some(ws),
                Err(FleetError::InsufficientResources { resource, .. }) if resource == "gpu" => {
                    None
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(
        HELD_ENGINE_GONE.load(Ordering::SeqCst),
        "the new worker got GPU 0 while the old engine thread still ran"
    );
    assert_eq!(again[0].gpus, vec![0]);
    s.delete_workers(None, false).await.unwrap();
    cluster.shutdown().await.unwrap();
}
