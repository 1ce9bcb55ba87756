//! `fleet demo`: the main job on the embedded single-node default.

use super::rollout_report::{conclude, print_summary, Display};
use crate::rollout::job::RolloutJob;
use crate::rollout::run::RunOptions;
use crate::Cluster;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run the demo rollout job on an embedded single node, with nothing else installed.
///
/// Starts a local node and 2 rollout workers. Each worker gets its own inference backend
/// (`fleet mock-llm`, a test double of an OpenAI-compatible inference server) and its own
/// OpenAI-compatible proxy (`fleet proxy`), both forked through the HTTP launcher. It then runs
/// 64 episodes of the built-in multi-turn agent while a simulated trainer moves the policy
/// version every 8 accepted episodes (admission goes on under the staleness bound 1), writes every turn (token ids, logprobs, policy
/// version, reward) to `trajectories.jsonl`, and prints a summary.
///
/// Ctrl-C stops it as it stops `fleet run` (episodes in flight finish, every accepted one is
/// in the output; exit 130). The same job from a file, with your own backend and agent:
/// `fleet run JOB.toml`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Episodes to run.
    #[arg(long, default_value_t = 64)]
    episodes: u64,
    /// Rollout workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Where the trajectories go (replaced if it exists).
    #[arg(long, default_value = "trajectories.jsonl")]
    output: PathBuf,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the demo.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
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
        "fleet demo: node {} with {} rollout workers (mock-llm backend + proxy each), {} episodes, a policy version every {} accepted",
        cluster.node_id(),
        job.workers.replicas,
        job.episodes,
        job.batch_size
    );
    let opts = RunOptions {
        resume: false,
        overwrite: true,
        stop,
        progress: Display::new(args.quiet),
        observe: None,
    };
    let report = job.run(cluster.scheduler(), &fleet, opts).await;
    let shutdown = cluster.shutdown().await;
    let report = report?;
    shutdown?;
    print_summary(&report);
    Ok(conclude(&report, job.min_accepted))
}
