//! The node agent never blocks: a real `fleet node --join` process, its workers' real child
//! processes, and a head in the test process.
//!
//! - The child pids the agent reports are the ones its launchers started (checked against
//!   `/proc`: the node process's children that carry `FLEET_WORKER`), also after a restart.
//! - A child printing as fast as it can does not keep its node from answering calls to another
//!   worker, its log file is rotated under the cap, and its lines are not on the node's stderr.
//! - Spawns do not hold up the agent: with 16 spawns stuck in their workers' start (each log
//!   file is a FIFO nobody reads yet, so its open waits), calls to another worker are answered.

use fleet_actors::{CallOptions, HttpServiceSpec, Job, RestartPolicy, SchedulingSpec, WorkerKind};
use fleet_runtime::membership::child_pids;
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::wait::wait_until;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_child_does_not_stop_its_node_answering_and_its_log_is_rotated_under_the_cap() {
    const CAP: u64 = 1 << 20;
    let cluster = TestCluster::builder()
        .node(NodeSpec::new().env("FLEET_CHILD_LOG_MAX_BYTES", CAP.to_string()))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    let w = s.get_workers("w", Duration::from_secs(20)).await.unwrap();
    let engine = s
        .create_engine(&w[0].id, "c", "counter", &())
        .await
        .unwrap();

    // A service that answers its probe and prints 1 KB lines as fast as `yes` can (the shell
    // makes `chatty-2-line`, so only the output holds that text, not the command).
    let line = format!("chatty-$((1+1))-line-{}", "x".repeat(1000));
    let script = format!("{SERVER} --port {{port}} & exec yes {line}");
    let spec =
        HttpServiceSpec::new(["sh", "-c", script.as_str()]).ready_within(Duration::from_secs(20));
    s.create_workers(
        Job::new("chatty", 1)
            .kind(WorkerKind::HttpService(spec))
            .spec(SchedulingSpec::default().ports(1)),
    )
    .await
    .unwrap();
    let chatty = s
        .get_workers("chatty", Duration::from_secs(30))
        .await
        .unwrap();
    let log = std::path::PathBuf::from(chatty[0].log_path.clone().expect("a process has a log"));
    let rotated = fleet_launcher::process::rotated_path(&log);
    wait_until("the chatty log to rotate", Duration::from_secs(30), || {
        let r = rotated.clone();
        async move { r.exists().then_some(()) }
    })
    .await
    .unwrap();

    // Calls to the other worker while it prints: every one is answered, in order.
    let opts = CallOptions::default().timeout(Duration::from_secs(10));
    let start = Instant::now();
    let mut answered = 0u64;
    while start.elapsed() < Duration::from_secs(3) && answered < 100_000 {
        let n: u64 = engine.call("incr", &1u64, &opts).await.unwrap();
        answered += 1;
        assert_eq!(n, answered);
    }
    assert!(answered > 0);

    // It still answers, and neither file is past the cap.
    s.ping(&chatty[0].id, Duration::from_secs(10))
        .await
        .unwrap();
    for f in [&log, &rotated] {
        let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(len <= CAP, "{} holds {len} bytes, cap {CAP}", f.display());
    }
    assert!(
        !cluster.node_log(0).contains("chatty-2-line"),
        "child output reached the node's stderr at the default log level"
    );
    s.delete_workers(None, false).await.unwrap();
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_while_sixteen_spawns_on_the_node_are_in_progress() {
    const N: u32 = 16;
    let cluster = TestCluster::builder()
        .node(NodeSpec::new().cpus(64.0))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    let w = s.get_workers("w", Duration::from_secs(20)).await.unwrap();
    let engine = s
        .create_engine(&w[0].id, "c", "counter", &())
        .await
        .unwrap();

    // Each new worker's log file is a FIFO: opening it for writing waits for a reader, so
    // every spawn stays inside its worker's start until the test reads.
    let node_pid = cluster.node_pid(0);
    let logs = std::env::temp_dir().join(format!("fleet-node-{node_pid}/logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let fifos: Vec<_> = (0..N).map(|i| logs.join(format!("slow_{i}.log"))).collect();
    for f in &fifos {
        let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
            0,
            "{}",
            f.display()
        );
    }
    let spec =
        HttpServiceSpec::new([SERVER, "--port", "{port}"]).ready_within(Duration::from_secs(30));
    let create = {
        let s = s.clone();
        tokio::spawn(async move {
            s.create_workers(
                Job::new("slow", N)
                    .kind(WorkerKind::HttpService(spec))
                    .spec(SchedulingSpec::default().cpu(0.5).ports(1)),
            )
            .await
        })
    };
    // All sixteen are inside their start: each has its log writer thread, waiting to open.
    wait_until("16 spawns in progress", Duration::from_secs(30), || async {
        (threads_named(node_pid, "log slow/") == N as usize).then_some(())
    })
    .await
    .unwrap();

    let opts = CallOptions::default().timeout(Duration::from_secs(10));
    for k in 1..=100u64 {
        let n: u64 = engine.call("incr", &1u64, &opts).await.unwrap();
        assert_eq!(n, k);
    }
    assert!(!create.is_finished(), "the spawns were still in progress");

    // Readers let the spawns finish; every worker starts.
    // (Detached: each ends at end of file, when its worker's log writer closes.)
    for f in fifos {
        std::thread::spawn(move || {
            if let Ok(mut r) = std::fs::File::open(f) {
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
        });
    }
    create.await.unwrap().unwrap();
    let slow = s
        .get_workers("slow", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(slow.len(), N as usize);
    s.delete_workers(None, false).await.unwrap();
}
