//! Liveness after readiness: an HTTP service that stops answering (here: SIGSTOPped, as a frozen
//! inference server would be) is noticed by its liveness probe, reported by `ping`, killed at
//! the threshold and then restarted or failed by its restart policy. Real child processes.

use fleet_actors::{
    FleetError, HttpServiceSpec, Job, Liveness, RestartPolicy, SchedulingSpec, WorkerId, WorkerKind,
};
use fleet_runtime::{Cluster, WorkerState};
use fleet_tests::{pid_alive, wait_until};
use std::time::Duration;

const TEST_SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn spec(threshold: u32, restart: RestartPolicy) -> WorkerKind {
    WorkerKind::HttpService(
        HttpServiceSpec::new([TEST_SERVER, "--port", "{port}"])
            .stop_grace(Duration::from_secs(1))
            .liveness(Liveness {
                interval_ms: 100,
                timeout_ms: 300,
                failure_threshold: threshold,
            })
            .restart(restart),
    )
}

async fn start(role: &str, lo: u16, kind: WorkerKind) -> (Cluster, u32) {
    let c = Cluster::local()
        .port_range(lo, lo + 19)
        .start()
        .await
        .unwrap();
    let s = c.scheduler();
    s.create_workers(
        Job::new(role, 1)
            .kind(kind)
            .spec(SchedulingSpec::default().ports(1)),
    )
    .await
    .unwrap();
    s.get_workers(role, Duration::from_secs(10)).await.unwrap();
    let pid = s
        .status(&WorkerId::new(role, 0), Duration::from_secs(2))
        .await
        .unwrap()
        .pid
        .expect("a pid");
    (c, pid)
}

fn signal(pid: u32, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_a_service_that_stopped_answering_and_its_recovery() {
    let (c, pid) = start("frozen", 29100, spec(1000, RestartPolicy::Never)).await;
    let s = c.scheduler().clone();
    let w = WorkerId::new("frozen", 0);
    signal(pid, libc::SIGSTOP);
    let e = wait_until("ping to report the freeze", Duration::from_secs(10), || {
        let s = s.clone();
        let w = w.clone();
        async move { s.ping(&w, Duration::from_secs(1)).await.err() }
    })
    .await
    .unwrap();
    assert!(
        matches!(&e, FleetError::Unavailable { detail, .. } if detail.contains("liveness probe")),
        "{e}"
    );
    signal(pid, libc::SIGCONT);
    wait_until("ping ok again", Duration::from_secs(10), || {
        let s = s.clone();
        let w = w.clone();
        async move { s.ping(&w, Duration::from_secs(1)).await.ok() }
    })
    .await
    .unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_service_is_killed_at_the_threshold_and_failed_without_a_restart_policy() {
    let (c, pid) = start("stuck", 29120, spec(3, RestartPolicy::Never)).await;
    let s = c.scheduler().clone();
    signal(pid, libc::SIGSTOP);
    let why = wait_until("the worker to fail", Duration::from_secs(15), || {
        let s = s.clone();
        async move {
            match &s.workers("stuck").await.ok()?[0].state {
                WorkerState::Failed(e) => Some(e.to_string()),
                _ => None,
            }
        }
    })
    .await
    .unwrap();
    assert!(why.contains("stopped answering"), "{why}");
    wait_until(
        "the frozen process gone",
        Duration::from_secs(5),
        || async move { (!pid_alive(pid)).then_some(()) },
    )
    .await
    .unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_service_is_restarted_by_its_restart_policy() {
    let policy = RestartPolicy::OnFailure {
        max_restarts: 2,
        backoff_ms: 50,
    };
    let (c, pid) = start("again", 29140, spec(3, policy)).await;
    let s = c.scheduler().clone();
    let w = WorkerId::new("again", 0);
    signal(pid, libc::SIGSTOP);
    let new_pid = wait_until(
        "a new process that answers",
        Duration::from_secs(15),
        || {
            let s = s.clone();
            let w = w.clone();
            async move {
                let st = s.status(&w, Duration::from_secs(1)).await.ok()?;
                let p = st.pid.filter(|p| *p != pid)?;
                s.ping(&w, Duration::from_secs(1)).await.ok()?;
                Some(p)
            }
        },
    )
    .await
    .unwrap();
    assert!(pid_alive(new_pid));
    assert!(!pid_alive(pid), "the frozen process was killed");
    c.shutdown().await.unwrap();
}
