//! Rollout end to end through real processes: the controller, rollout workers, their proxies
//! (`fleet proxy`) and mock backends (`fleet mock-llm`), and agents in Rust, in Python and in
//! Python with the official `openai` package.

use fleet_actors::{
    AgentSpec, Backend, HttpServiceSpec, Job, RolloutSpec, SchedulingSpec, WorkerKind,
};
use fleet_runtime::rollout::job::RolloutJob;
use fleet_runtime::rollout::{RolloutConfig, RolloutController};
use fleet_runtime::Cluster;
use fleet_tests::{fleet_bin, pid_alive, wait_until};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn fleet() -> String {
    fleet_bin().to_string_lossy().into_owned()
}

fn scripted_agent() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("agents/scripted_agent.py")
        .to_string_lossy()
        .into_owned()
}

fn rollout_kind(agent: AgentSpec) -> WorkerKind {
    let backend = Backend::Command(HttpServiceSpec::new([
        fleet(),
        "mock-llm".into(),
        "--port".into(),
        "{port}".into(),
        "--seed".into(),
        "{index}".into(),
    ]));
    let mut spec = RolloutSpec::new(backend, agent);
    spec.proxy_command = Some(vec![
        fleet(),
        "proxy".into(),
        "--backend".into(),
        "{backend}".into(),
        "--port".into(),
        "{port}".into(),
    ]);
    WorkerKind::Rollout(spec)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_episodes_are_recorded_once_each_with_tokens_logprobs_versions_and_discounted_rewards(
) {
    let dir = temp_dir("e2e");
    let cluster = Cluster::local()
        .port_range(27000, 27199)
        .start()
        .await
        .unwrap();
    let mut job = RolloutJob::demo();
    job.episodes = 64;
    job.batch_size = 16;
    job.max_staleness = 1;
    job.discount = 0.5;
    job.output = dir.join("out.jsonl");
    let report = job
        .run(cluster.scheduler(), &fleet(), Default::default())
        .await
        .unwrap();
    assert_eq!(report.accepted, 64, "{:?}", report.rejected);

    let text = std::fs::read_to_string(&job.output).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 64, "one line per episode");
    let ids: BTreeSet<u64> = lines
        .iter()
        .map(|l| l["episode_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..64).collect(), "none lost, none duplicated");
    let sessions: BTreeSet<&str> = lines
        .iter()
        .map(|l| l["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(sessions.len(), 64);
    for l in &lines {
        let admitted = l["admitted_version"].as_u64().unwrap();
        let turns = l["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 3, "the multi-turn agent talks 3 times");
        let last_raw = turns.last().unwrap()["raw_reward"]
            .as_f64()
            .expect("the last turn has the agent's reward");
        for (i, t) in turns.iter().enumerate() {
            let prompt = t["prompt_token_ids"].as_array().unwrap();
            let out = t["output_token_ids"].as_array().unwrap();
            let lp = t["output_logprobs"].as_array().unwrap();
            assert!(!prompt.is_empty() && !out.is_empty(), "{t}");
            assert_eq!(out.len(), lp.len(), "a logprob per output token");
            let v = t["version"].as_u64().unwrap();
            assert!(
                v >= admitted && v <= admitted + job.max_staleness,
                "turn version {v}, admitted at {admitted}"
            );
            // r[i] = raw[i] + discount * r[i+1], with only the last turn rewarded.
            let expect = last_raw * 0.5f64.powi((turns.len() - 1 - i) as i32);
            let got = t["reward"].as_f64().unwrap();
            assert!(
                (got - expect).abs() < 1e-9,
                "turn {i}: reward {got}, expected {expect}"
            );
        }
    }
    let versions: BTreeSet<u64> = lines
        .iter()
        .map(|l| l["admitted_version"].as_u64().unwrap())
        .collect();
    // The trainer moves the version every 16 accepted episodes while admission goes on, so
    // episodes were admitted under several versions (at most 3 steps for 64 episodes).
    assert!(
        versions.len() >= 2 && versions.iter().all(|v| *v <= 3),
        "the version moved during the job: {versions:?}"
    );
    assert_eq!(
        cluster.node_info().await.unwrap().workers.len(),
        0,
        "the job deleted its workers"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_staleness_0_no_more_than_a_batch_is_admitted_per_version() {
    let cluster = Cluster::local()
        .port_range(27200, 27299)
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    s.create_workers(
        Job::new("rollout", 2)
            .kind(rollout_kind(AgentSpec::Registered("multi-turn".into())))
            .spec(SchedulingSpec::default().ports(2)),
    )
    .await
    .unwrap();
    let config = RolloutConfig {
        batch_size: 4,
        max_staleness: 0,
        max_concurrent: 16,
        episode_timeout: Duration::from_secs(30),
        discount: 1.0,
        admission_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let ctl = RolloutController::new(s.clone(), "rollout", config, Duration::from_secs(60))
        .await
        .unwrap();
    let tasks: Vec<Value> = (0..12).map(|i| json!({"id": i, "turns": 1})).collect();
    let batch = {
        let ctl = ctl.clone();
        tokio::spawn(async move { ctl.rollout_batch(tasks, |_, _, _| {}).await })
    };
    for v in 0..3u64 {
        // Wait until this version's batch is done; nothing more may be admitted meanwhile.
        wait_until("a batch to finish", Duration::from_secs(30), || {
            let ctl = ctl.clone();
            async move {
                let st = ctl.stats();
                (st.accepted == 4 * (v + 1) && st.running == 0).then_some(())
            }
        })
        .await
        .unwrap();
        let st = ctl.stats();
        assert_eq!(st.admitted_by_version.get(&v), Some(&4), "{st:?}");
        assert_eq!(
            st.admitted_by_version.values().sum::<u64>(),
            4 * (v + 1),
            "nothing admitted past the bound: {st:?}"
        );
        if v < 2 {
            assert!(!batch.is_finished());
            ctl.set_version(v + 1).await.unwrap();
        }
    }
    let episodes = batch.await.unwrap().unwrap();
    assert_eq!(episodes.len(), 12);
    for e in &episodes {
        let t = e.trajectory.as_ref().unwrap();
        for turn in t["turns"].as_array().unwrap() {
            assert_eq!(
                turn["version"].as_u64(),
                Some(e.admitted_version),
                "tokens carry the version they were generated under"
            );
        }
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_agent_is_killed_at_its_deadline_and_the_worker_takes_the_next_episode() {
    let dir = temp_dir("hang");
    let cluster = Cluster::local()
        .port_range(27300, 27399)
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    let agent = AgentSpec::Command {
        argv: vec!["python3".into(), scripted_agent()],
        env: Default::default(),
        cwd: None,
    };
    s.create_workers(
        Job::new("rollout", 1)
            .kind(rollout_kind(agent))
            .spec(SchedulingSpec::default().ports(2)),
    )
    .await
    .unwrap();
    let config = RolloutConfig {
        batch_size: 8,
        max_staleness: 0,
        max_concurrent: 1,
        episode_timeout: Duration::from_secs(2),
        discount: 1.0,
        admission_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let ctl = RolloutController::new(s.clone(), "rollout", config, Duration::from_secs(60))
        .await
        .unwrap();
    let pidfile = dir.join("agent.pid");
    let tasks = vec![
        json!({"mode": "hang", "pidfile": pidfile}),
        json!({"mode": "talk", "turns": 2, "reward": 0.25}),
        json!({"mode": "fail"}),
        json!({"mode": "garbage"}),
    ];
    let eps = ctl.rollout_batch(tasks, |_, _, _| {}).await.unwrap();
    let hung = &eps[0];
    let why = hung
        .rejected
        .as_deref()
        .expect("the hanging episode is rejected");
    assert!(why.contains("deadline") && why.contains("killed"), "{why}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        "the hung agent process to be gone",
        Duration::from_secs(5),
        || async move { (!pid_alive(pid)).then_some(()) },
    )
    .await
    .unwrap();
    // Its session was ended: the proxy holds no session now.
    let h = s
        .http(
            &fleet_actors::WorkerId::new("rollout", 0),
            fleet_actors::HttpCall::get("/health"),
        )
        .await
        .unwrap();
    let health: Value = h.json().unwrap();
    assert_eq!(health["sessions"].as_u64(), Some(0), "{health}");
    // The worker went on to the next episodes: one accepted, two rejected with their reasons.
    let talk = eps[1].trajectory.as_ref().expect("the next episode ran");
    assert_eq!(talk["turns"].as_array().unwrap().len(), 2);
    assert!(
        eps[2].rejected.as_deref().unwrap().contains("code 3"),
        "{:?}",
        eps[2].rejected
    );
    assert!(
        eps[3].rejected.as_deref().unwrap().contains("not JSON"),
        "{:?}",
        eps[3].rejected
    );
    let st = ctl.stats();
    assert_eq!(st.accepted, 1);
    assert_eq!(st.rejected.get("agent_timeout"), Some(&1), "{st:?}");
    cluster.shutdown().await.unwrap();
}

/// The Python interpreter with the official `openai` package, or `None` (skip) outside CI.
fn python_with_openai() -> Option<String> {
    let candidates: Vec<String> = std::env::var("FLEET_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()])
        .collect();
    for py in candidates {
        let ok = std::process::Command::new(&py)
            .args(["-c", "import openai"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(py);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("the openai Python package is required under CI: .ci/run installs it into target/ci-venv and sets FLEET_PYTHON");
    }
    eprintln!("SKIP: no python with the `openai` package (set FLEET_PYTHON, or run .ci/run)");
    None
}

#[test]
fn an_openai_python_agent_completes_episodes_through_fleet_run() {
    let Some(python) = python_with_openai() else {
        return;
    };
    let dir = temp_dir("python-agent");
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    std::fs::copy(
        example.join("agents/openai_agent.py"),
        dir.join("agents/openai_agent.py"),
    )
    .unwrap();
    let job = std::fs::read_to_string(example.join("python-agent.toml"))
        .unwrap()
        .replace("episodes = 16", "episodes = 6")
        .replace("batch_size = 8", "batch_size = 3");
    std::fs::write(dir.join("job.toml"), job).unwrap();
    let out = std::process::Command::new(fleet_bin())
        .args(["run", "job.toml"])
        .current_dir(&dir)
        .env("FLEET_PYTHON", &python)
        .env("FLEET_BIN", fleet_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fleet run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("6 accepted"), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(dir.join("python-trajectories.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        let turns = l["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 2, "two chat completions per episode");
        assert!(turns
            .iter()
            .all(|t| !t["output_token_ids"].as_array().unwrap().is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_controller_admits_nothing_until_resumed() {
    let cluster = Cluster::local()
        .port_range(27400, 27499)
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler().clone();
    s.create_workers(
        Job::new("rollout", 1)
            .kind(rollout_kind(AgentSpec::Registered("multi-turn".into())))
            .spec(SchedulingSpec::default().ports(2)),
    )
    .await
    .unwrap();
    let ctl = RolloutController::new(
        s.clone(),
        "rollout",
        RolloutConfig::default(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    ctl.pause();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<&str>::new()));
    let pending = {
        let (ctl, events) = (ctl.clone(), events.clone());
        tokio::spawn(async move {
            let ticket = ctl.submit(json!({"turns": 1})).await.unwrap();
            events.lock().unwrap().push("admitted");
            ticket.result().await.unwrap()
        })
    };
    // Give admission every chance to (wrongly) happen while paused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ctl.stats().running + ctl.stats().accepted, 0);
    events.lock().unwrap().push("resumed");
    ctl.resume();
    let ep = pending.await.unwrap();
    assert!(ep.trajectory.is_some());
    assert_eq!(*events.lock().unwrap(), vec!["resumed", "admitted"]);
    assert!(!ctl.stats().paused);
    cluster.shutdown().await.unwrap();
}
