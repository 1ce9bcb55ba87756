//! The main job end to end (`examples/grpo-reverse.toml`, what `fleet demo` runs): real `fleet
//! infer` servers behind the rollout workers' routers, the `answer` agent, the GRPO trainer on an
//! RpcServer worker, weights through the object store and rolling updates. What must hold: the
//! reward rises by a stated margin over a short run (learning, not time, is asserted); the
//! trainer's recomputed logprobs match what the proxy recorded to float precision for every
//! version; every turn's version is the version the server says generated it
//! (`system_fingerprint`); every episode is in the output exactly once; `metrics.jsonl` has a
//! line per version and the reward picture is drawn; and an inference server SIGKILLed mid-run
//! costs no episode while training goes on.

use fleet_runtime::rollout::job::RolloutJob;
use fleet_runtime::rollout::run::JobReport;
use fleet_runtime::Cluster;
use fleet_tests::rollout::{keys_once, output_lines, spawn_job};
use fleet_tests::wait_until;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../examples/grpo-reverse.toml");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleet-grpo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn child_pid(worker: &str) -> Option<u32> {
    fleet_runtime::membership::child_pids::by_worker()
        .get(worker)
        .copied()
}

/// The version in a `fleet-infer-v<N>-<hash>` fingerprint.
fn fingerprint_version(fp: &str) -> Option<u64> {
    fp.strip_prefix("fleet-infer-v")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Runs the example job for `versions` versions on a local cluster; with `kill`, SIGKILLs the
/// second inference server once 2 versions' worth of episodes were accepted.
async fn run_example(
    name: &str,
    ports: (u16, u16),
    versions: u64,
    kill: bool,
) -> (RolloutJob, JobReport, PathBuf) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("job.toml"), EXAMPLE).unwrap();
    let mut job = RolloutJob::from_file(&dir.join("job.toml")).unwrap();
    job.role = name.into();
    job.run_dir = Some(dir.join("run"));
    job.output = dir.join("run/trajectories.jsonl");
    job.episodes = versions * job.batch_size;
    let cluster = Cluster::local()
        .port_range(ports.0, ports.1)
        .start()
        .await
        .unwrap();
    let (accepted, run) = spawn_job(cluster.scheduler(), &job);
    let mut restarted = None;
    if kill {
        let victim = format!("{name}-inference/1");
        let after = 2 * job.batch_size;
        wait_until("2 versions accepted", Duration::from_secs(300), || {
            let a = accepted.clone();
            async move { (a.load(Ordering::SeqCst) >= after).then_some(()) }
        })
        .await
        .unwrap();
        let killed = child_pid(&victim).unwrap_or_else(|| panic!("{victim} runs"));
        unsafe { libc::kill(killed as i32, libc::SIGKILL) };
        let v = victim.clone();
        restarted = Some(
            wait_until(
                "the killed server restarted",
                Duration::from_secs(120),
                || {
                    let v = v.clone();
                    async move { child_pid(&v).filter(|p| *p != killed) }
                },
            )
            .await,
        );
    }
    let report = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the job ends")
        .unwrap()
        .unwrap();
    cluster.shutdown().await.unwrap();
    if let Some(r) = restarted {
        r.unwrap_or_else(|e| panic!("the killed server was restarted: {e}"));
        // Printed, not asserted: the restarted `fleet infer` builds its start-up model (40
        // warm-up steps) before it answers, and on a loaded machine that can outlast the rest
        // of the run; then nothing is recovered while the job runs (seen in 1 of 6 runs, with
        // the other GRPO test beside it). When it does come back in time, the coordinator counts
        // it, also when it restarted inside its own rolling update (its process changed since
        // it last confirmed). The recovery path is asserted with mock servers in
        // `weights_update.rs`.
        eprintln!("servers recovered: {}", report.servers_recovered);
    }
    (job, report, dir)
}

/// What holds for every run: all episodes once, fingerprints agree with recorded versions, the
/// logprob check holds for every version, weights went through the store, one metrics line per
/// version. Returns the per-version mean rewards.
fn check_run(job: &RolloutJob, report: &JobReport, versions: u64) -> Vec<f64> {
    let episodes = versions * job.batch_size;
    assert_eq!(report.accepted, episodes, "rejected: {:?}", report.rejected);
    let lines = output_lines(&job.output);
    assert_eq!(
        keys_once(&lines).len() as u64,
        episodes,
        "every episode once"
    );
    for l in &lines {
        for t in l["turns"].as_array().unwrap() {
            let v = t["version"].as_u64().unwrap();
            let fp = t["system_fingerprint"].as_str().unwrap();
            assert_eq!(fingerprint_version(fp), Some(v), "turn at {v} made by {fp}");
            assert_eq!(t["complete"], Value::Bool(true), "a complete record: {t}");
        }
    }
    let mut checked_versions = 0;
    for u in &report.updates {
        let g = u.grpo.as_ref().expect("the GRPO trainer reported");
        assert!(u.in_store, "version {} went through the store", u.version);
        assert!(!g.replayed, "each step applied once");
        if let Some(d) = g.max_logprob_diff {
            assert!(
                d < 1e-4,
                "version {}: recomputed logprobs differ from the recorded ones by {d}",
                u.version
            );
            checked_versions += 1;
        }
    }
    assert!(
        checked_versions as u64 + 2 >= report.updates.len() as u64,
        "the logprob check ran for almost every version ({checked_versions} of {})",
        report.updates.len()
    );
    let run_dir = job.run_dir.as_ref().unwrap();
    let metrics = output_lines(&run_dir.join("metrics.jsonl"));
    assert_eq!(metrics.len(), report.versions.len());
    assert!(metrics.len() as u64 + 3 >= versions, "a line per version");
    for m in &metrics {
        for k in ["version", "mean_reward", "episodes"] {
            assert!(m.get(k).is_some(), "metrics line without {k}: {m}");
        }
    }
    let svg = std::fs::read_to_string(report.picture.as_ref().expect("a picture")).unwrap();
    assert!(svg.starts_with("<svg"));
    metrics
        .iter()
        .map(|m| m["mean_reward"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpo_job_raises_the_reward_by_a_clear_margin_and_its_logprob_check_holds() {
    let versions = 24;
    let (job, report, dir) = run_example("grpo-learn", (28400, 28449), versions, false).await;
    let rewards = check_run(&job, &report, versions);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&rewards[..4]), mean(&rewards[rewards.len() - 4..]));
    assert!(
        last >= first + 0.08,
        "the mean reward of the last 4 versions ({last:.3}) exceeds the first 4's ({first:.3}) by at least 0.08: {rewards:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_server_killed_mid_grpo_job_costs_no_episode_and_training_goes_on() {
    // Long enough that the run outlasts the killed server's restart and the coordinator's
    // recovery (checked every second): with 10 versions a loaded machine could finish first.
    let versions = 30;
    let (job, report, dir) = run_example("grpo-kill", (28450, 28499), versions, true).await;
    check_run(&job, &report, versions);
    assert!(
        report.updates.len() as u64 + 3 >= versions,
        "versions kept coming after the kill: {}",
        report.updates.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}
