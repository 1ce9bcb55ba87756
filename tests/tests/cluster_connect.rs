//! `Cluster::connect`: a Rust program attached to a running `fleet head` (real processes: a
//! head without workers and a `fleet node --join`) gets the scheduler API of an embedded
//! cluster, run by the head; a killed program costs only its own workers; and a connect to
//! nothing, with a wrong cookie, or to a process that is no head fails with a clear error.

use fleet_actors::{CallOptions, FleetError, Job, WorkerId};
use fleet_runtime::Cluster;
use fleet_tests::head_proc::{HeadProc, HeadSpec};
use fleet_tests::process::{descendants, pid_alive};
use fleet_tests::{fleet_bin, free_port, wait_until, ChildGuard};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const DRIVER: &str = env!("CARGO_BIN_EXE_fleet-test-driver");

async fn head_with_a_node() -> HeadProc {
    let mut head = HeadProc::start(HeadSpec::new()).await.unwrap();
    head.spawn_node("n1").unwrap();
    head.wait_joined("n1", Duration::from_secs(60))
        .await
        .unwrap();
    head
}

async fn connect(head: &HeadProc) -> fleet_runtime::ConnectedCluster {
    Cluster::connect(head.addr())
        .cookie(head.cookie().expect("the test head has a cookie"))
        .timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap()
}

/// `fleet status --json` from the head.
fn status(head: &HeadProc) -> Value {
    let o = head
        .client(&["status", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fleet status failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Role name -> its worker rows, from a status report.
fn roles(st: &Value) -> Vec<(String, Vec<Value>)> {
    st["roles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or("").to_string(),
                r[1].as_array().cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn node_alive(st: &Value, name: &str) -> bool {
    st["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n["node"].as_str().is_some_and(|id| id.starts_with(name)) && n["state"] == "Alive")
}

/// Live (not zombie) descendants of the node processes: the workers' child processes.
fn node_children(head: &HeadProc) -> Vec<u32> {
    head.node_pids()
        .into_iter()
        .flat_map(descendants)
        .filter(|p| pid_alive(*p))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_program_gets_the_scheduler_api_run_by_the_head() {
    let head = head_with_a_node().await;
    let cluster = connect(&head).await;
    let s = cluster.scheduler();
    assert!(s.is_remote());

    let created = s.create_workers(Job::new("counters", 2)).await.unwrap();
    assert_eq!(created.len(), 2);
    let ready = s
        .get_workers("counters", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ready.len(), 2);
    assert!(ready.iter().all(|w| w.node.to_string().starts_with("n1")));

    for i in 0..2 {
        let w = WorkerId::new("counters", i);
        let engine = s.create_engine(&w, "c", "counter", &()).await.unwrap();
        let o = CallOptions::default();
        let a: u64 = engine.call("incr", &5u64, &o).await.unwrap();
        let b: u64 = engine.call("incr", &(i as u64 + 1), &o).await.unwrap();
        assert_eq!((a, b), (5, 6 + i as u64));
        // A request id is honoured through the head: the repeat is answered from the
        // worker's record, not run again.
        let once = CallOptions::default().request_id(format!("once-{i}"));
        let first: u64 = engine.call("incr", &100u64, &once).await.unwrap();
        let again: u64 = engine.call("incr", &100u64, &once).await.unwrap();
        assert_eq!(first, again);
        let runs: u64 = engine.call("runs", &(), &o).await.unwrap();
        assert_eq!(runs, 3, "the repeated request ran once");
        s.ping(&w, Duration::from_secs(5)).await.unwrap();
        let st = s.status(&w, Duration::from_secs(5)).await.unwrap();
        assert!(!format!("{st:?}").is_empty());
    }
    assert_eq!(s.workers("counters").await.unwrap().len(), 2);
    assert_eq!(s.job("counters").await.unwrap().replicas, 2);
    assert_eq!(s.roles().await, vec!["counters".to_string()]);
    // A typed error crosses back: an unknown engine method.
    let err = s
        .call::<_, u64>(
            &WorkerId::new("counters", 0),
            "c",
            "nope",
            &(),
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // Local-only methods say so.
    assert!(s.store().is_none());
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    assert!(matches!(
        s.follow_events(rx),
        Err(FleetError::BadRequest { .. })
    ));

    let st = status(&head);
    let rows = roles(&st);
    assert_eq!(rows.len(), 1, "{st:#}");
    assert_eq!(rows[0].0, "counters");
    assert_eq!(rows[0].1.len(), 2, "{st:#}");

    s.delete_workers(Some("counters"), false).await.unwrap();
    assert!(s.roles().await.is_empty());
    assert!(roles(&status(&head)).is_empty());
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_with_a_request_id_is_cancelled_on_the_worker_through_the_head() {
    let head = head_with_a_node().await;
    let cluster = connect(&head).await;
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    s.get_workers("w", Duration::from_secs(30)).await.unwrap();
    let w = WorkerId::new("w", 0);
    let sleeper = s.create_engine(&w, "z", "sleep", &()).await.unwrap();
    let counter = s.create_engine(&w, "c", "counter", &()).await.unwrap();
    // The worker's engine thread is busy for 3 s; a counter call queued behind it is given up
    // (its future dropped) long before it can run.
    let busy = {
        let sleeper = sleeper.clone();
        tokio::spawn(async move {
            sleeper
                .call::<_, u64>("sleep", &3000u64, &CallOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let given_up = CallOptions::default().request_id("given-up");
    let queued = counter.call::<_, u64>("incr", &1u64, &given_up);
    assert!(tokio::time::timeout(Duration::from_millis(300), queued)
        .await
        .is_err());
    busy.await.unwrap().unwrap();
    let runs: u64 = counter
        .call("runs", &(), &CallOptions::default())
        .await
        .unwrap();
    assert_eq!(runs, 0, "the given-up call never ran");
    cluster.shutdown().await.unwrap();
    assert!(roles(&status(&head)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_driver_costs_only_its_own_workers_and_the_node_serves_the_next() {
    let head = head_with_a_node().await;
    let cookie = head.cookie().unwrap().to_string();
    let out = head.dir().join("driver.out");
    let mut cmd = Command::new(DRIVER);
    cmd.arg(head.addr())
        .arg(fleet_bin())
        .args(["served", "2"])
        .env("FLEET_COOKIE", &cookie)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out).unwrap());
    let mut driver = ChildGuard::spawn("driver", &mut cmd).unwrap();
    wait_until("the driver's ready line", Duration::from_secs(90), || {
        let ready = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .any(|l| l == "ready");
        let exited = driver.try_wait();
        async move {
            if let Some(e) = exited {
                panic!("the driver exited early: {e:?}");
            }
            ready.then_some(())
        }
    })
    .await
    .unwrap();
    let st = status(&head);
    let rows = roles(&st);
    assert_eq!(rows.len(), 1, "{st:#}");
    assert_eq!(rows[0].0, "served");
    assert_eq!(rows[0].1.len(), 2);
    assert!(rows[0].1.iter().all(|w| w["child_pid"].is_u64()), "{st:#}");
    let children = node_children(&head);
    assert!(
        children.len() >= 2,
        "the workers' children run: {children:?}"
    );

    driver.signal_group(libc::SIGKILL);

    wait_no_roles(&head, "the head to delete the killed driver's role").await;
    let mut left = vec![];
    wait_until(
        "the workers' child processes to be gone",
        Duration::from_secs(30),
        || {
            left = children.iter().copied().filter(|p| pid_alive(*p)).collect();
            let done = left.is_empty();
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: still alive {left:?}"));
    let st = status(&head);
    assert!(node_alive(&st, "n1"), "the node is still a member: {st:#}");

    // The node serves the next program.
    let cluster = connect(&head).await;
    let s = cluster.scheduler();
    s.create_workers(Job::new("next", 1)).await.unwrap();
    s.get_workers("next", Duration::from_secs(30))
        .await
        .unwrap();
    let e = s
        .create_engine(&WorkerId::new("next", 0), "c", "counter", &())
        .await
        .unwrap();
    let n: u64 = e
        .call("incr", &7u64, &CallOptions::default())
        .await
        .unwrap();
    assert_eq!(n, 7);
    cluster.shutdown().await.unwrap();
    assert!(roles(&status(&head)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_with_a_wrong_cookie_or_to_no_head_is_a_clear_error() {
    // Nothing listens there: refused at once.
    let addr = format!("127.0.0.1:{}", free_port());
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        Cluster::connect(addr.as_str()).cookie("c").start(),
    )
    .await
    .expect("a refused connection fails within its connect timeout")
    .unwrap_err();
    assert!(
        matches!(&err, FleetError::Unavailable { detail, .. } if detail.contains("cannot connect")),
        "{err}"
    );

    // A head, the wrong cookie.
    let head = HeadProc::start(HeadSpec::new()).await.unwrap();
    let err = Cluster::connect(head.addr())
        .cookie("not-the-cookie")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FleetError::BadRequest { detail, .. } if detail.contains("cookie")),
        "{err}"
    );
    // The head still serves the right cookie.
    connect(&head).await.shutdown().await.unwrap();

    // A fleet process that is no head: an embedded cluster.
    let local = Cluster::local()
        .cookie("local-cookie")
        .start()
        .await
        .unwrap();
    let err = Cluster::connect(format!("127.0.0.1:{}", local.listen_port()))
        .cookie("local-cookie")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FleetError::Unavailable { detail, .. } if detail.contains("no scheduler service")),
        "{err}"
    );
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_programs_keep_their_roles_apart_and_each_one_s_leaving_deletes_only_its_own() {
    let head = head_with_a_node().await;
    let a = connect(&head).await;
    let b = connect(&head).await;
    a.scheduler()
        .create_workers(Job::new("a", 1))
        .await
        .unwrap();
    b.scheduler()
        .create_workers(Job::new("b", 1))
        .await
        .unwrap();
    // A name that is taken stays the first program's.
    let err = b
        .scheduler()
        .create_workers(Job::new("a", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::RoleExists { .. }), "{err}");
    assert_eq!(
        b.scheduler().roles().await,
        vec!["a".to_string(), "b".to_string()]
    );
    // A program's shutdown (delete_workers(None)) deletes its own roles only.
    a.shutdown().await.unwrap();
    let left: Vec<String> = roles(&status(&head)).into_iter().map(|(r, _)| r).collect();
    assert_eq!(left, vec!["b".to_string()]);
    // Dropping the other (no shutdown) closes its session: the head deletes its role.
    drop(b);
    wait_no_roles(&head, "the head to delete the dropped program's role").await;
}

/// Waits (up to 30 s) until the head's status shows no roles.
async fn wait_no_roles(head: &HeadProc, what: &str) {
    wait_until(what, Duration::from_secs(30), || {
        let gone = roles(&status(head)).is_empty();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            gone.then_some(())
        }
    })
    .await
    .unwrap();
}
