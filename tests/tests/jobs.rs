//! Jobs submitted to a long-lived `fleet head` (real processes: a head without workers, two
//! `fleet node --join` on the same host, and the `fleet submit` / `fleet job` / `fleet run
//! --head` clients): two jobs at once keep apart and both finish with their own outputs, a
//! stopped job leaves no worker and no child process, a killed or interrupted follower costs
//! nothing but itself, and a bad job file is refused with a clear error while the head keeps
//! serving.

use fleet_tests::head_proc::{HeadProc, HeadSpec};
use fleet_tests::jobs_cli::{
    cluster_status, demo, is_final, run, state, status, submit, text, wait_accepted, wait_state,
};
use fleet_tests::process::descendants;
use fleet_tests::{wait_until, ChildGuard};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

async fn head_with_two_nodes() -> HeadProc {
    let mut head = HeadProc::start(HeadSpec::new()).await.unwrap();
    for n in ["n1", "n2"] {
        head.spawn_node(n).unwrap();
    }
    for n in ["n1", "n2"] {
        head.wait_joined(n, Duration::from_secs(60)).await.unwrap();
    }
    head
}

fn lines(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Children (and their children) of the node processes: the workers' backends and proxies.
fn node_children(head: &HeadProc) -> Vec<u32> {
    head.node_pids().into_iter().flat_map(descendants).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_on_one_head_run_apart_and_each_finishes_with_its_own_output() {
    let head = head_with_two_nodes().await;
    let a = submit(&head, "first", 1500);
    let b = submit(&head, "second", 120);
    assert_ne!(a, b);
    let sa = wait_state(&head, &a, Duration::from_secs(180), is_final).await;
    let sb = wait_state(&head, &b, Duration::from_secs(180), is_final).await;
    // They ran at the same time: the second ended before the first.
    assert!(
        sb["ended_unix_ms"].as_u64() < sa["ended_unix_ms"].as_u64(),
        "{sa:#} {sb:#}"
    );
    for (s, id, n) in [(&sa, &a, 1500usize), (&sb, &b, 120)] {
        assert_eq!(state(s), "Succeeded", "{s:#}");
        assert_eq!(s["exit_code"], 0, "{s:#}");
        let run_dir = s["run_dir"].as_str().unwrap();
        assert!(
            run_dir.starts_with(head.dir().join("runs").to_str().unwrap()),
            "{s:#}"
        );
        assert!(run_dir.ends_with(&format!("-{id}")), "{s:#}");
        let out = s["output"].as_str().unwrap();
        assert!(
            out.starts_with(run_dir),
            "the output is in the run directory: {s:#}"
        );
        let eps = lines(out);
        assert_eq!(
            eps.len(),
            n,
            "every episode of job {id} is in its own output"
        );
        // Only this job's workers served it.
        let role = format!("rollout-{id}/");
        for e in &eps {
            let w = e["worker"].as_str().unwrap_or("");
            assert!(w.starts_with(&role), "job {id} got an episode from {w}");
        }
        let dir = Path::new(run_dir);
        assert!(dir.join("job.toml").exists());
        let log = std::fs::read_to_string(dir.join("job.log")).unwrap();
        assert!(log.contains("rollout summary"), "{log}");
        assert!(!log.contains('\u{1b}'), "no ANSI codes in job.log");
        let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
        let kinds: Vec<String> = events
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("submitted"),
            "{events}"
        );
        assert_eq!(kinds.last().map(String::as_str), Some("ended"), "{events}");
    }
    // Each node wrote its share of the job's worker logs under its own runs directory, and
    // `fleet logs` fetches a worker's log from whichever node ran it.
    for id in [&a, &b] {
        let on_nodes: usize = ["n1", "n2"]
            .iter()
            .map(|n| {
                let d = head.dir().join("node-runs").join(n);
                std::fs::read_dir(&d)
                    .map(|it| {
                        it.flatten()
                            .filter(|e| {
                                e.file_name().to_string_lossy().ends_with(&format!("-{id}"))
                            })
                            .map(|e| {
                                std::fs::read_dir(e.path().join("logs"))
                                    .map(|l| l.count())
                                    .unwrap_or(0)
                            })
                            .sum::<usize>()
                    })
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(
            on_nodes, 4,
            "two rollout workers, a backend and a proxy log each, for job {id}"
        );
        let o = run(head.client(&["logs", &format!("rollout-{id}/0")]));
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && shown.contains("mock-llm listening"),
            "{}",
            text(&o)
        );
    }
    let o = run(head.client(&["logs", "no-such-role/0"]));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no node has logs of no-such-role/0"),
        "{}",
        text(&o)
    );
    // No worker of either job is left.
    let st = cluster_status(&head);
    assert_eq!(st["roles"].as_array().map(Vec::len), Some(0), "{st:#}");
    assert_listed(&head, &[&a, &b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_job_stop_ends_a_job_and_leaves_no_worker_and_no_child() {
    let head = head_with_two_nodes().await;
    let id = submit(&head, "long", 1_000_000);
    wait_state(&head, &id, Duration::from_secs(90), |_| true).await;
    wait_accepted(&head, &id, 10).await;
    assert!(
        !node_children(&head).is_empty(),
        "the job's backends run as children of the nodes"
    );
    let o = run(head.client(&["job", "stop", &id]));
    assert!(o.status.success(), "fleet job stop failed: {}", text(&o));
    let s = status(&head, &id);
    assert_eq!(state(&s), "Stopped", "{s:#}; {}", text(&o));
    assert_eq!(s["exit_code"], 143, "{s:#}");
    let st = cluster_status(&head);
    assert_eq!(
        st["roles"].as_array().map(Vec::len),
        Some(0),
        "no worker of the job is left: {st:#}"
    );
    wait_until(
        "the nodes' children to be gone",
        Duration::from_secs(30),
        || {
            let left = node_children(&head);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", node_children(&head)));
    // Everything accepted is in the output, once.
    let eps = lines(s["output"].as_str().unwrap());
    assert_eq!(
        eps.len() as u64,
        s["progress"]["accepted"].as_u64().unwrap(),
        "{s:#}"
    );
    // The nodes are still members and serve the next job.
    let next = submit(&head, "after", 40);
    let sn = wait_state(&head, &next, Duration::from_secs(120), is_final).await;
    assert_eq!(state(&sn), "Succeeded", "{sn:#}");
}

fn spawn_follower(head: &HeadProc, episodes: u64, out: &Path) -> ChildGuard {
    let job = demo();
    let mut cmd = head.client(&[
        "run",
        job.to_str().unwrap(),
        "--head",
        head.addr(),
        "--episodes",
        &episodes.to_string(),
    ]);
    cmd.stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap());
    ChildGuard::spawn("follower", &mut cmd).unwrap()
}

/// The job id from the follower's first line on stderr.
async fn follower_job(out: &Path) -> String {
    let err = out.with_extension("err");
    wait_until(
        "the follower to print its job id",
        Duration::from_secs(60),
        || {
            let s = std::fs::read_to_string(&err).unwrap_or_default();
            let id = s
                .split_once("fleet run: job ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .map(str::to_string);
            async move { id }
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_costs_nothing_and_an_interrupted_one_stops_its_job() {
    let head = head_with_two_nodes().await;
    // SIGKILL: the job goes on to the end on the nodes, which stay members.
    let out = head.dir().join("follower-kill.out");
    let f = spawn_follower(&head, 400, &out);
    let id = follower_job(&out).await;
    wait_until(
        "the follower to stream the job's log",
        Duration::from_secs(90),
        || {
            let s = std::fs::read_to_string(&out).unwrap_or_default();
            async move { s.contains(" episodes: ").then_some(()) }
        },
    )
    .await
    .unwrap();
    f.signal_group(libc::SIGKILL);
    drop(f);
    let s = wait_state(&head, &id, Duration::from_secs(180), is_final).await;
    assert_eq!(state(&s), "Succeeded", "{s:#}");
    assert_eq!(lines(s["output"].as_str().unwrap()).len(), 400);
    let st = cluster_status(&head);
    let alive = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "Alive")
        .count();
    assert_eq!(alive, 2, "both nodes are still members: {st:#}");
    assert!(!head.stdout().contains("is down"), "{}", head.stdout());

    // SIGINT (Ctrl-C): the follower stops its job and exits 130.
    let out = head.dir().join("follower-int.out");
    let mut f = spawn_follower(&head, 1_000_000, &out);
    let id = follower_job(&out).await;
    wait_accepted(&head, &id, 10).await;
    // SAFETY: a signal to the follower we started.
    unsafe { libc::kill(f.pid() as i32, libc::SIGINT) };
    let code = wait_until("the follower to exit", Duration::from_secs(90), || {
        let c = f.try_wait();
        async move { c }
    })
    .await
    .unwrap();
    assert_eq!(
        code.code(),
        Some(130),
        "{}",
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
    );
    let s = status(&head, &id);
    assert_eq!(state(&s), "Stopped", "{s:#}");
    let st = cluster_status(&head);
    assert_eq!(st["roles"].as_array().map(Vec::len), Some(0), "{st:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_job_file_is_refused_with_its_error_and_the_head_keeps_serving() {
    let head = HeadProc::start(HeadSpec::new()).await.unwrap();
    let bad = head.dir().join("bad.toml");
    std::fs::write(&bad, "episodes = 4\nepisodez = 5\n").unwrap();
    let o = run(head.client(&["submit", bad.to_str().unwrap()]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("episodez"),
        "the error names the bad key: {}",
        text(&o)
    );
    // Checked on the head too (a client that skips the local check).
    let missing = head.dir().join("missing-tasks.toml");
    std::fs::write(&missing, "[tasks]\nfile = \"no-such-tasks.jsonl\"\n").unwrap();
    let o = run(head.client(&["submit", missing.to_str().unwrap()]));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such-tasks.jsonl") && err.contains("does not exist"),
        "{}",
        text(&o)
    );
    let big = head.dir().join("big.toml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let o = run(head.client(&["submit", big.to_str().unwrap()]));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("more than a job file may be"),
        "{}",
        text(&o)
    );
    let o = run(head.client(&["job", "status", "ffffffff"]));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such job"),
        "{}",
        text(&o)
    );
    let o = run(head.client(&["job", "list"]));
    assert!(o.status.success(), "the head still serves: {}", text(&o));
    // No head there: a clear error that says what to do.
    let mut cmd = head.client(&["job", "list", "--timeout", "2s"]);
    cmd.env("FLEET_HEAD", "127.0.0.1:1");
    let o = run(cmd);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is `fleet head` running there?"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heads_metrics_parse_and_move_while_a_submitted_job_runs() {
    use fleet_tests::scrape::{scrape, value};
    let port = fleet_tests::free_port();
    let mut head = HeadProc::start(
        HeadSpec::new()
            .arg("--metrics")
            .arg(format!("127.0.0.1:{port}")),
    )
    .await
    .unwrap();
    head.spawn_node("n1").unwrap();
    head.wait_joined("n1", Duration::from_secs(60))
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let id = submit(&head, "metered", 1_000_000);
    let accepted = |url: String| async move {
        let s = scrape(&url).await;
        (
            value(&s, "fleet_episodes_total", &[("outcome", "accepted")]),
            value(&s, "fleet_jobs_running", &[]),
        )
    };
    let first = wait_until("episodes to be counted", Duration::from_secs(120), || {
        let f = accepted(url.clone());
        async move {
            let (v, running) = f.await;
            (v > 0.0 && running == 1.0).then_some(v)
        }
    })
    .await
    .unwrap();
    wait_until(
        "the episode counter to move",
        Duration::from_secs(120),
        || {
            let f = accepted(url.clone());
            async move { (f.await.0 > first).then_some(()) }
        },
    )
    .await
    .unwrap();
    let o = run(head.client(&["job", "stop", &id, "--now"]));
    assert!(o.status.success(), "{}", text(&o));
    let s = scrape(&url).await;
    assert_eq!(value(&s, "fleet_jobs_running", &[]), 0.0);
    assert_eq!(value(&s, "fleet_jobs_total", &[("state", "stopped")]), 1.0);
}

async fn head_on(runs: &Path) -> HeadProc {
    let mut head = HeadProc::start(HeadSpec::new().runs_dir(runs))
        .await
        .unwrap();
    head.spawn_node("n1").unwrap();
    head.wait_joined("n1", Duration::from_secs(60))
        .await
        .unwrap();
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_stops_or_dies_leaves_its_jobs_on_record_for_the_next_head() {
    let runs = std::env::temp_dir().join(format!("fleet-jobs-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    // SIGTERM: the head stops its running job (recorded as stopped), then exits.
    let mut first = head_on(&runs).await;
    let a = submit(&first, "stopped-by-term", 1_000_000);
    wait_accepted(&first, &a, 10).await;
    first.signal_head(libc::SIGTERM);
    let code = wait_until(
        "the head to exit after SIGTERM",
        Duration::from_secs(90),
        || {
            let c = first.head_exit();
            async move { c }
        },
    )
    .await
    .unwrap();
    assert!(code.success(), "{code:?}\n{}", first.stdout());
    drop(first);
    // SIGKILL: nothing is written at the end; the next head records the job as failed.
    let mut second = head_on(&runs).await;
    let sa = status(&second, &a);
    assert_eq!(state(&sa), "Stopped", "{sa:#}");
    assert_eq!(
        lines(sa["output"].as_str().unwrap()).len() as u64,
        sa["progress"]["accepted"].as_u64().unwrap(),
        "{sa:#}"
    );
    let b = submit(&second, "lost-with-its-head", 1_000_000);
    wait_accepted(&second, &b, 10).await;
    second.signal_head(libc::SIGKILL);
    wait_until("the head to die", Duration::from_secs(30), || {
        let c = second.head_exit();
        async move { c }
    })
    .await
    .unwrap();
    drop(second);
    let third = head_on(&runs).await;
    let sb = status(&third, &b);
    assert_eq!(state(&sb), "Failed", "{sb:#}");
    assert!(
        sb["error"]
            .as_str()
            .unwrap_or("")
            .contains("the head stopped"),
        "{sb:#}"
    );
    let kept = lines(sb["output"].as_str().unwrap()).len() as u64;
    assert!(kept >= 10, "the episodes accepted before are kept: {sb:#}");
    assert_eq!(sb["progress"]["accepted"].as_u64(), Some(kept), "{sb:#}");
    assert_listed(&third, &[&a, &b]);
    drop(third);
    let _ = std::fs::remove_dir_all(&runs);
}

/// `fleet job list` shows every one of `ids`.
fn assert_listed(head: &HeadProc, ids: &[&str]) {
    let list = run(head.client(&["job", "list"]));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(ids.iter().all(|id| listed.contains(id)), "{}", text(&list));
}
