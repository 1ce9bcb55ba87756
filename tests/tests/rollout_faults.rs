//! Rollout under injected faults, over real processes: a backend SIGKILLed mid-job, a failed
//! worker, SIGINT and SIGTERM of `fleet run`, `--resume`, agents that fail the same way, a
//! missing agent program, slow and unreachable backends, group sampling, and the staleness bound
//! while the version moves during admission. What must hold: every task exactly once in the
//! output, nothing accepted lost, a clear error, the right exit code, no child left behind.

use fleet_actors::{
    AgentSpec, Backend, HttpServiceSpec, Job, RolloutSpec, SchedulingSpec, WorkerKind,
};
use fleet_runtime::rollout::job::RolloutJob;
use fleet_runtime::rollout::run::{Ending, Progress, ProgressState, RunOptions};
use fleet_runtime::rollout::{RolloutConfig, RolloutController};
use fleet_runtime::{Cluster, WorkerState};
use fleet_tests::process::descendants;
use fleet_tests::rollout::{count_accepted, keys_once, output_lines as lines};
use fleet_tests::{fleet_bin, pid_alive, wait_until};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn fleet() -> String {
    fleet_bin().to_string_lossy().into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleet-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a job file into `dir` and reads it back as the job `fleet run` would.
fn job_file(dir: &Path, toml: &str) -> RolloutJob {
    let p = dir.join("job.toml");
    std::fs::write(&p, toml).unwrap();
    RolloutJob::from_file(&p).unwrap()
}

/// A local cluster with the ports `ports`, and the job `keys` with role `name` and its output
/// in a fresh directory of its own.
async fn local_job(name: &str, ports: (u16, u16), keys: &str) -> (Cluster, RolloutJob) {
    let dir = temp_dir(name);
    let cluster = Cluster::local()
        .port_range(ports.0, ports.1)
        .start()
        .await
        .unwrap();
    let job = job_file(
        &dir,
        &format!(
            "role = \"{name}\"\noutput = \"{}\"\n{keys}",
            dir.join("out.jsonl").display()
        ),
    );
    (cluster, job)
}

/// The pid of a child of this process serving `worker` (e.g. `kill.backend/0`).
fn child_pid(worker: &str) -> Option<u32> {
    fleet_runtime::membership::child_pids::by_worker()
        .get(worker)
        .copied()
}

/// Starts `job` in a task and waits until `n` episodes were accepted; returns the task.
async fn run_until_accepted(
    cluster: &Cluster,
    job: &RolloutJob,
    n: u64,
) -> tokio::task::JoinHandle<Result<fleet_runtime::rollout::job::JobReport, fleet_actors::FleetError>>
{
    let (accepted, observer) = count_accepted();
    let opts = RunOptions {
        observe: Some(observer),
        ..Default::default()
    };
    let run = {
        let s = cluster.scheduler().clone();
        let job = job.clone();
        tokio::spawn(async move { job.run(&s, &fleet(), opts).await })
    };
    wait_until(
        &format!("{n} episodes accepted"),
        Duration::from_secs(60),
        || {
            let a = accepted.clone();
            async move { (a.load(Ordering::SeqCst) >= n).then_some(()) }
        },
    )
    .await
    .unwrap();
    run
}

/// SIGKILLs the child of this process that serves `worker` (e.g. `killb.backend/0`).
fn kill_child(worker: &str) {
    let pid = child_pid(worker).unwrap_or_else(|| panic!("{worker} runs"));
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A progress display that keeps the messages.
#[derive(Default)]
struct Messages(Mutex<Vec<String>>);

impl Progress for Messages {
    fn update(&self, _: &ProgressState) {}
    fn message(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
    fn finish(&self, _: &ProgressState) {}
}

/// The `command = [...]` line of a mock backend answering after `latency_ms`.
fn mock(latency_ms: u64) -> String {
    format!(
        "command = {}",
        serde_json::to_string(&fleet_tests::rollout::mock_backend(latency_ms)).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_job_loses_no_episode_and_runs_none_twice() {
    let (cluster, job) = local_job(
        "killb",
        (27400, 27449),
        &format!(
            "episodes = 60\nbatch_size = 10\nmax_concurrent = 8\n[workers]\nreplicas = 2\n[backend]\n{}\n[tasks]\nturns = 2\n",
            mock(30)
        ),
    )
    .await;
    let run = run_until_accepted(&cluster, &job, 10).await;
    kill_child("killb.backend/0");
    let report = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the job finishes")
        .unwrap()
        .unwrap();
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.accepted, 60, "rejections: {:?}", report.rejected);
    let lines = lines(&job.output);
    let keys = keys_once(&lines);
    assert_eq!(
        keys,
        (0..60).map(|i| (i, 0)).collect(),
        "every task exactly once"
    );
    cluster.shutdown().await.unwrap();
}

/// Experiment A of the review: a failed worker used to draw 38 of 40 episodes (least-loaded
/// picked it, since it failed each at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollout_worker_gets_no_episodes_and_the_others_run_them_all() {
    let cluster = Cluster::local()
        .port_range(27450, 27499)
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    let backend = Backend::Command(HttpServiceSpec::new([
        fleet(),
        "mock-llm".into(),
        "--port".into(),
        "{port}".into(),
    ]));
    let mut spec = RolloutSpec::new(backend, AgentSpec::Registered("multi-turn".into()));
    spec.proxy_command = Some(vec![
        fleet(),
        "proxy".into(),
        "--backend".into(),
        "{backend}".into(),
        "--port".into(),
        "{port}".into(),
    ]);
    s.create_workers(
        Job::new("blackhole", 2)
            .kind(WorkerKind::Rollout(spec))
            .spec(SchedulingSpec::default().ports(2)),
    )
    .await
    .unwrap();
    let config = RolloutConfig {
        batch_size: 1000,
        max_staleness: 0,
        max_concurrent: 4,
        episode_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let ctl = RolloutController::new(s.clone(), "blackhole", config, Duration::from_secs(60))
        .await
        .unwrap();
    kill_child("blackhole.backend/0");
    wait_until("blackhole/0 failed", Duration::from_secs(10), || {
        let s = s.clone();
        async move {
            let ws = s.workers("blackhole").await.ok()?;
            matches!(ws[0].state, WorkerState::Failed(_)).then_some(())
        }
    })
    .await
    .unwrap();
    let tasks: Vec<Value> = (0..40).map(|i| json!({"id": i, "turns": 2})).collect();
    let eps = ctl.rollout_batch(tasks, |_, _, _| {}).await.unwrap();
    assert_eq!(eps.len(), 40);
    for e in &eps {
        assert!(e.rejected.is_none(), "{:?}", e.rejected);
        assert_eq!(
            e.worker, "blackhole/1",
            "no episode ends on the failed worker"
        );
    }
    cluster.shutdown().await.unwrap();
}

fn spawn_fleet_run(dir: &Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(fleet_bin())
        .arg("run")
        .arg("job.toml")
        .args(extra)
        .current_dir(dir)
        .env("FLEET_BIN", fleet_bin())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` (bounded), returning (exit code, stdout, stderr).
async fn finish(child: std::process::Child, within: Duration) -> (Option<i32>, String, String) {
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(within, waited).await {
        Ok(r) => {
            let out = r.unwrap().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("fleet run did not exit within {within:?}");
        }
    }
}

fn long_job(dir: &Path, episodes: u64, role: &str) {
    std::fs::write(
        dir.join("job.toml"),
        format!(
            r#"
episodes = {episodes}
batch_size = 20
max_concurrent = 8
role = "{role}"
output = "out.jsonl"
interrupt_grace = "20s"
[workers]
replicas = 2
[backend]
{}
[tasks]
turns = 1
"#,
            mock(20)
        ),
    )
    .unwrap();
}

async fn interrupt_mid_job(signal: i32, expect_code: i32, name: &str) -> PathBuf {
    let dir = temp_dir(name);
    long_job(&dir, 400, name);
    let child = spawn_fleet_run(&dir, &["--quiet"]);
    let pid = child.id();
    let out = dir.join("out.jsonl");
    wait_until("20 episodes written", Duration::from_secs(90), || {
        let out = out.clone();
        async move { (lines(&out).len() >= 20).then_some(()) }
    })
    .await
    .unwrap();
    let kids = descendants(pid);
    assert!(!kids.is_empty(), "fleet run has its backends and proxies");
    unsafe { libc::kill(pid as i32, signal) };
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60)).await;
    assert_eq!(code, Some(expect_code), "{stdout}\n{stderr}");
    let written = lines(&out);
    keys_once(&written);
    assert!(written.len() < 400, "it stopped early");
    let said = format!("{} trajectories in out.jsonl", written.len());
    assert!(
        stderr.contains("interrupted:") && stderr.contains(&said),
        "it says what it kept ({said}):\n{stderr}"
    );
    wait_until("no child left", Duration::from_secs(10), || {
        let kids = kids.clone();
        async move { kids.iter().all(|k| !pid_alive(*k)).then_some(()) }
    })
    .await
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_job_keeps_every_accepted_episode_and_resume_runs_exactly_the_rest() {
    let dir = interrupt_mid_job(libc::SIGINT, 130, "sigint").await;
    let before = keys_once(&lines(&dir.join("out.jsonl")));
    let child = spawn_fleet_run(&dir, &["--resume", "--quiet"]);
    let (code, stdout, stderr) = finish(child, Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let after = lines(&dir.join("out.jsonl"));
    let keys = keys_once(&after);
    assert_eq!(
        keys,
        (0..400).map(|i| (i, 0)).collect(),
        "every task exactly once"
    );
    assert!(before.is_subset(&keys));
    let new = after.len() - before.len();
    assert!(
        stdout.contains(&format!("{new} accepted")),
        "the resumed run ran only the missing {new}:\n{stdout}"
    );
    // Versions continue after the last one recorded before the interrupt.
    let last_before = after[..before.len()]
        .iter()
        .map(|l| l["admitted_version"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(after[before.len()..]
        .iter()
        .all(|l| l["admitted_version"].as_u64().unwrap() > last_before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_job_keeps_every_accepted_episode_and_exits_143() {
    interrupt_mid_job(libc::SIGTERM, 143, "sigterm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_all_fail_the_same_way_stop_the_job_with_that_error() {
    let dir = temp_dir("failfast");
    std::fs::write(
        dir.join("job.toml"),
        format!(
            r#"
episodes = 200
max_concurrent = 2
role = "failfast"
output = "out.jsonl"
[workers]
replicas = 1
[backend]
{}
[agent]
command = ["python3", "-c", "import fleet_no_such_module_for_this_test"]
"#,
            mock(0)
        ),
    )
    .unwrap();
    let child = spawn_fleet_run(&dir, &["--quiet"]);
    let (code, stdout, stderr) = finish(child, Duration::from_secs(90)).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("all failed the same way") && stderr.contains("ModuleNotFoundError"),
        "{stderr}"
    );
    let summary_rejected: u64 = stdout
        .lines()
        .find(|l| l.starts_with("| episodes |"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(" accepted, ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        summary_rejected < 20,
        "it stopped instead of repeating: {stdout}"
    );
    // The same traceback is printed once, not once per episode.
    assert_eq!(stderr.matches("ModuleNotFoundError").count(), 2, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_agent_program_or_a_bad_output_is_refused_before_anything_starts() {
    let dir = temp_dir("preflight");
    std::fs::write(
        dir.join("job.toml"),
        "episodes = 4\n[agent]\ncommand = [\"fleet-no-such-agent-program\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = finish(spawn_fleet_run(&dir, &[]), Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot find the program \"fleet-no-such-agent-program\""),
        "{stderr}"
    );
    std::fs::write(dir.join("job.toml"), "episodes = 4\n").unwrap();
    let (code, _, stderr) = finish(
        spawn_fleet_run(&dir, &["--output", "/proc/nope/x.jsonl"]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/proc/nope/x.jsonl"), "{stderr}");
    assert!(!stderr.contains("episodes:"), "no episode ran: {stderr}");
    // An output that holds trajectories is not overwritten unless asked.
    std::fs::write(dir.join("old.jsonl"), "{\"task_index\":0}\n").unwrap();
    let (code, _, stderr) = finish(
        spawn_fleet_run(&dir, &["--output", "old.jsonl"]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--resume") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("old.jsonl")).unwrap(),
        "{\"task_index\":0}\n"
    );
}

/// Review C2: the proxy's readiness used to be tied to the backend with a fixed 60 s deadline,
/// so any backend slower than that to listen killed its worker, whatever `ready_timeout` said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_needs_65_seconds_to_listen_works_with_a_matching_ready_timeout() {
    let (cluster, job) = local_job(
        "slow",
        (27500, 27519),
        &format!(
            "episodes = 4\n[workers]\nreplicas = 1\n[backend]\ncommand = [\"sh\", \"-c\", \"sleep 65; exec {} mock-llm --port {{port}}\"]\nready_timeout = \"150s\"\n",
            fleet()
        ),
    )
    .await;
    let messages = Arc::new(Messages::default());
    let opts = RunOptions {
        progress: messages.clone(),
        ..Default::default()
    };
    let report = job.run(cluster.scheduler(), &fleet(), opts).await.unwrap();
    assert_eq!(report.accepted, 4, "{:?}", report.rejected);
    let said = messages.0.lock().unwrap().join("\n");
    assert!(
        said.contains("waiting for 1 of 1 rollout workers"),
        "it said what it waits for: {said}"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_url_is_named_in_the_error() {
    let (cluster, job) = local_job(
        "url",
        (27520, 27539),
        "episodes = 2\n[workers]\nreplicas = 1\n[backend]\nurl = \"http://127.0.0.1:9\"\nready_timeout = \"3s\"\n",
    )
    .await;
    let e = job
        .run(cluster.scheduler(), &fleet(), Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http://127.0.0.1:9/health is unreachable") && e.contains("ready_timeout"),
        "{e}"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_size_runs_each_task_k_times_recorded_under_one_group_id() {
    let (cluster, job) = local_job(
        "groups",
        (27540, 27579),
        "episodes = 12\ngroup_size = 3\nbatch_size = 6\n[tasks]\nturns = 1\n",
    )
    .await;
    let report = job
        .run(cluster.scheduler(), &fleet(), Default::default())
        .await
        .unwrap();
    assert_eq!(report.accepted, 12);
    let lines = lines(&job.output);
    let keys = keys_once(&lines);
    let want: BTreeSet<(u64, u64)> = (0..4).flat_map(|t| (0..3).map(move |s| (t, s))).collect();
    assert_eq!(keys, want);
    for l in &lines {
        assert_eq!(l["group_id"], l["task_index"]);
        assert_eq!(
            l["task"]["id"], l["task_index"],
            "the group's samples share the task"
        );
    }
    cluster.shutdown().await.unwrap();
}

/// The asynchronous loop: the trainer moves the version every batch while admission goes on;
/// the staleness bound holds on every admission, and each turn records the version that served
/// it (never older than its episode's admission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staleness_bound_and_per_turn_versions_hold_while_versions_advance_during_admission() {
    let (batch, staleness) = (8u64, 1u64);
    let (cluster, job) = local_job(
        "async",
        (27580, 27619),
        &format!(
            "episodes = 96\nbatch_size = {batch}\nmax_staleness = {staleness}\nmax_concurrent = 12\n[trainer]\nstep_time = \"30ms\"\n[backend]\n{}\n[tasks]\nturns = 2\n",
            mock(10)
        ),
    )
    .await;
    let report = job
        .run(cluster.scheduler(), &fleet(), Default::default())
        .await
        .unwrap();
    assert_eq!(report.accepted, 96, "{:?}", report.rejected);
    let lines = lines(&job.output);
    keys_once(&lines);
    let admitted: Vec<u64> = lines
        .iter()
        .map(|l| l["admitted_version"].as_u64().unwrap())
        .collect();
    let max_v = *admitted.iter().max().unwrap();
    assert!(max_v >= 4, "the version moved during the job (to {max_v})");
    for v in 0..=max_v {
        let upto = admitted.iter().filter(|a| **a <= v).count() as u64;
        assert!(
            upto <= (v + staleness + 1) * batch,
            "{upto} episodes admitted by version {v}, over the bound"
        );
    }
    for l in &lines {
        let a = l["admitted_version"].as_u64().unwrap();
        let vs: Vec<u64> = l["turns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["version"].as_u64().unwrap())
            .collect();
        assert!(
            vs.iter().all(|v| *v >= a),
            "turn versions {vs:?}, admitted at {a}"
        );
        assert!(
            vs.windows(2).all(|w| w[0] <= w[1]),
            "versions never go back: {vs:?}"
        );
    }
    cluster.shutdown().await.unwrap();
}

/// Newcomer F7: a backend that exits at once sometimes failed its worker with a bare "it
/// stopped while handling health" (the ping raced the failure report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_exits_before_ready_always_reports_its_exit_status_and_last_output() {
    let (cluster, job) = local_job(
        "exits",
        (27620, 27639),
        "episodes = 2\n[workers]\nreplicas = 2\n[backend]\ncommand = [\"sh\", \"-c\", \"echo loading; echo ValueError: no such model >&2; exit 3\"]\n",
    )
    .await;
    for round in 0..5 {
        let e = job
            .run(cluster.scheduler(), &fleet(), Default::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exited with code 3") && e.contains("ValueError: no such model"),
            "round {round}: {e}"
        );
    }
    cluster.shutdown().await.unwrap();
}

/// `kill -9` of `fleet run` itself: what it had appended survives (at most a torn last line),
/// its children die with it, and `--resume` finishes exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_fleet_run_keeps_what_it_wrote_leaves_no_child_and_resumes() {
    let dir = temp_dir("sigkill");
    long_job(&dir, 300, "sigkill");
    let child = spawn_fleet_run(&dir, &["--quiet"]);
    let pid = child.id();
    let out = dir.join("out.jsonl");
    wait_until("20 episodes written", Duration::from_secs(90), || {
        let out = out.clone();
        async move {
            let n = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .lines()
                .count();
            (n >= 20).then_some(())
        }
    })
    .await
    .unwrap();
    let kids = descendants(pid);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let (code, _, _) = finish(child, Duration::from_secs(30)).await;
    assert_eq!(code, None, "killed by a signal");
    wait_until("no child left", Duration::from_secs(10), || {
        let kids = kids.clone();
        async move { kids.iter().all(|k| !pid_alive(*k)).then_some(()) }
    })
    .await
    .unwrap();
    let (code, stdout, stderr) = finish(
        spawn_fleet_run(&dir, &["--resume", "--quiet"]),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let keys = keys_once(&lines(&out));
    assert_eq!(
        keys,
        (0..300).map(|i| (i, 0)).collect(),
        "every task exactly once"
    );
}

/// When nothing can serve (the only worker's backend is killed), the job stops and says why;
/// what was accepted before stays in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_every_worker_failed_stops_and_says_so() {
    let (cluster, job) = local_job(
        "allgone",
        (27640, 27659),
        &format!(
            "episodes = 200\nbatch_size = 10\nmax_concurrent = 4\n[workers]\nreplicas = 1\n[backend]\n{}\n[tasks]\nturns = 2\n",
            mock(30)
        ),
    )
    .await;
    let run = run_until_accepted(&cluster, &job, 5).await;
    kill_child("allgone.backend/0");
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the job stops")
        .unwrap()
        .unwrap();
    match &report.ending {
        Ending::Aborted(why) => assert!(
            why.contains("every rollout worker has failed") && why.contains("allgone/0"),
            "{why}"
        ),
        other => panic!("expected the job to stop, got {other:?}"),
    }
    let written = keys_once(&lines(&job.output));
    assert_eq!(written.len() as u64, report.accepted);
    assert!(report.accepted >= 5 && report.accepted < 200);
    cluster.shutdown().await.unwrap();
}

/// An attached URL without `/health` (a hosted OpenAI-compatible API answers 404 there) still
/// counts as serving: any answer below 500 makes the worker ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_backend_without_a_health_route_is_ready_when_it_answers() {
    let port = fleet_tests::free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let (cluster, job) = local_job(
        "nohealth",
        (27660, 27679),
        &format!("episodes = 4\nmax_concurrent = 1\n[workers]\nreplicas = 1\n[backend]\nurl = \"http://127.0.0.1:{port}\"\nready_timeout = \"20s\"\n"),
    )
    .await;
    let r = job
        .run(cluster.scheduler(), &fleet(), Default::default())
        .await;
    let _ = server.kill();
    let _ = server.wait();
    // Ready, then every episode fails (the server is no model): the job stops itself, it does
    // not time out waiting for readiness.
    let report = r.unwrap_or_else(|e| panic!("readiness failed: {e}"));
    assert!(
        matches!(report.ending, Ending::Aborted(_)),
        "{:?}",
        report.ending
    );
    cluster.shutdown().await.unwrap();
}
