//! `fleet demo`: the main job on the embedded single-node default — reinforcement learning end
//! to end on CPU (`examples/grpo-reverse.toml`), or with `--mock` the quick rollout against a
//! mock backend.

use super::rollout_report::{conclude, print_summary, Display};
use crate::rollout::job::RolloutJob;
use crate::rollout::run::{JobReport, RunOptions};
use crate::Cluster;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The demo job (the same file as `examples/grpo-reverse.toml`).
const GRPO_JOB: &str = include_str!("../../../examples/grpo-reverse.toml");

/// Train a tiny language model with reinforcement learning on this machine, end to end.
///
/// Starts an embedded single-node cluster and runs `examples/grpo-reverse.toml` on it: a tiny
/// transformer policy (fleet-policy on candle, ~110k parameters, random weights from a seed,
/// nothing downloaded) learns to reverse short strings. Two inference servers (`fleet infer`,
/// OpenAI-compatible, forked through the HTTP launcher) behind the rollout workers' proxies and
/// routers; the built-in `answer` agent scores each completion (share of positions right); a GRPO
/// trainer on an RpcServer worker makes a new version from every 64 accepted episodes (8
/// problems × 8 completions), and the new weights roll onto the servers through the object store
/// while the other server keeps generating.
///
/// Prints a line per version (mean reward, staleness, train step, weight update, the logprob
/// check: the trainer recomputes the logprobs the proxy recorded), a summary with the reward of
/// the first and last 10% of versions, and `run directory: PATH`, which holds `metrics.jsonl`
/// (one JSON object per version), `reward.svg` (the reward curve), `trajectories.jsonl` (every
/// turn with token ids, logprobs, version and reward), `job.toml` and the model. About 1–3
/// minutes on 2 cores.
///
/// Ctrl-C stops it as it stops `fleet run` (episodes in flight finish, exit 130). `--mock` runs
/// the old quick demo instead: 64 episodes of a multi-turn agent against `fleet mock-llm` (a test
/// double), a simulated trainer, well under a second.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The quick rollout against a mock backend instead of training a model.
    #[arg(long)]
    mock: bool,
    /// Batches of 64 episodes to run; the trainer makes a version from each one that ends
    /// while episodes are still running (so N − 2 versions, about).
    #[arg(long, default_value_t = 120)]
    versions: u64,
    /// The seed of the model's initial weights.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where run directories go (`<root>/demo-<date>-<time>/`).
    #[arg(long, default_value = "fleet-runs")]
    runs: PathBuf,
    /// --mock: episodes to run.
    #[arg(long, default_value_t = 64)]
    episodes: u64,
    /// --mock: rollout workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// --mock: where the trajectories go (replaced if it exists).
    #[arg(long, default_value = "trajectories.jsonl")]
    output: PathBuf,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the demo.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.mock {
        return run_mock(args).await;
    }
    let fleet = crate::exe::fleet_executable()
        .ok_or_else(|| anyhow::anyhow!("cannot find the fleet executable; set FLEET_BIN"))?;
    if args.versions < 2 {
        anyhow::bail!("--versions {} is too few: at least 2", args.versions);
    }
    let mut job: RolloutJob = toml::from_str(GRPO_JOB)
        .map_err(|e| anyhow::anyhow!("the built-in demo job does not parse: {e}"))?;
    let dir = run_directory(&args.runs)?;
    job.run_dir = Some(dir.clone());
    job.output = dir.join("trajectories.jsonl");
    job.episodes = args.versions * job.batch_size;
    job.trainer.init_seed = Some(args.seed);
    job.preflight(&fleet).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::write(dir.join("job.toml"), GRPO_JOB)?;
    let stop = super::job_stop_signals();
    let cluster = Cluster::local().start().await?;
    let servers = job.inference.as_ref().map_or(0, |i| i.servers);
    eprintln!(
        "fleet demo: node {}: {} versions of {} episodes (groups of {}), {servers} `fleet infer` servers, {} rollout workers, the GRPO trainer (model seed {})",
        cluster.node_id(),
        args.versions,
        job.batch_size,
        job.group_size,
        job.workers.replicas,
        args.seed,
    );
    eprintln!("run directory: {}", dir.display());
    let report = run_then_shut_down(&job, cluster, &fleet, stop, args.quiet).await?;
    print_learning(&report);
    Ok(conclude(&report, job.min_accepted))
}

/// Runs `job` on `cluster`, shuts the cluster down, and prints the summary table.
async fn run_then_shut_down(
    job: &RolloutJob,
    cluster: Cluster,
    fleet: &str,
    stop: tokio::sync::watch::Receiver<crate::rollout::run::Stop>,
    quiet: bool,
) -> anyhow::Result<JobReport> {
    let opts = RunOptions {
        resume: false,
        overwrite: true,
        stop,
        progress: Display::new(quiet),
        observe: None,
    };
    let report = job.run(cluster.scheduler(), fleet, opts).await;
    let shutdown = cluster.shutdown().await;
    let report = report?;
    shutdown?;
    print_summary(&report);
    Ok(report)
}

/// The reward of the first and last 10% of versions, and where the run's files are.
fn print_learning(report: &JobReport) {
    let points: Vec<(u64, f64)> = report
        .versions
        .iter()
        .map(|(v, b)| (*v, b.mean_reward))
        .collect();
    if let Some(l) = Learning::of(&points) {
        println!(
            "reward: first 10% of versions (v{}-v{}) {:.3}, last 10% (v{}-v{}) {:.3}: {:+.3}",
            l.first.0, l.first.1, l.first_mean, l.last.0, l.last.1, l.last_mean, l.gain
        );
    }
    if let Some(p) = &report.picture {
        println!("reward curve: {}", p.display());
    }
    if let Some(d) = &report.run_dir {
        println!("run directory: {}", d.display());
    }
}

/// The first and last tenth of a run's versions.
#[derive(Debug, PartialEq)]
pub struct Learning {
    /// The first tenth's versions (first, last).
    pub first: (u64, u64),
    /// Their mean reward.
    pub first_mean: f64,
    /// The last tenth's versions.
    pub last: (u64, u64),
    /// Their mean reward.
    pub last_mean: f64,
    /// `last_mean - first_mean`.
    pub gain: f64,
}

impl Learning {
    /// `None` with fewer than 2 versions.
    pub fn of(points: &[(u64, f64)]) -> Option<Learning> {
        if points.len() < 2 {
            return None;
        }
        let k = (points.len() / 10).max(1);
        let mean = |s: &[(u64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64;
        let (a, b) = (&points[..k], &points[points.len() - k..]);
        Some(Learning {
            first: (a[0].0, a[k - 1].0),
            first_mean: mean(a),
            last: (b[0].0, b[k - 1].0),
            last_mean: mean(b),
            gain: mean(b) - mean(a),
        })
    }
}

/// A new run directory `<root>/demo-YYYYmmdd-HHMMSS` (UTC; `-2`, `-3`... if taken).
fn run_directory(root: &Path) -> anyhow::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let stamp = format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    std::fs::create_dir_all(root)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", root.display()))?;
    for n in 1..1000 {
        let name = if n == 1 {
            format!("demo-{stamp}")
        } else {
            format!("demo-{stamp}-{n}")
        };
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(std::path::absolute(&dir).unwrap_or(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => anyhow::bail!("cannot create the run directory {}: {e}", dir.display()),
        }
    }
    anyhow::bail!("{} holds too many runs named demo-{stamp}", root.display())
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The quick demo: 64 episodes of the multi-turn agent against `fleet mock-llm`.
async fn run_mock(args: Args) -> anyhow::Result<ExitCode> {
    let fleet = crate::exe::fleet_executable()
        .ok_or_else(|| anyhow::anyhow!("cannot find the fleet executable; set FLEET_BIN"))?;
    let mut job = RolloutJob::demo();
    job.episodes = args.episodes;
    job.batch_size = args.episodes.div_ceil(8).max(1);
    job.workers.replicas = args.workers;
    job.output = args.output;
    job.preflight(&fleet).map_err(|e| anyhow::anyhow!(e))?;
    let stop = super::job_stop_signals();
    let cluster = Cluster::local().start().await?;
    eprintln!(
        "fleet demo --mock: node {} with {} rollout workers (mock-llm backend + proxy each), {} episodes, a policy version every {} accepted",
        cluster.node_id(),
        job.workers.replicas,
        job.episodes,
        job.batch_size
    );
    let report = run_then_shut_down(&job, cluster, &fleet, stop, args.quiet).await?;
    Ok(conclude(&report, job.min_accepted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_424), (2025, 12, 2));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn learning_compares_the_first_and_last_tenth() {
        let pts: Vec<(u64, f64)> = (1..=20).map(|v| (v, v as f64 / 20.0)).collect();
        let l = Learning::of(&pts).unwrap();
        assert_eq!((l.first, l.last), ((1, 2), (19, 20)));
        assert!((l.gain - 0.9).abs() < 1e-9);
        assert_eq!(Learning::of(&pts[..1]), None);
    }

    #[test]
    fn the_built_in_demo_job_is_a_grpo_job_that_passes_preflight() {
        let job: RolloutJob = toml::from_str(GRPO_JOB).unwrap();
        job.preflight_keys().unwrap();
        assert!(job.grpo_plan().unwrap().is_some());
    }
}
