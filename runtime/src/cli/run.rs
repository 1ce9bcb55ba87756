//! `fleet run JOB.toml`: a rollout job from a file.

use super::rollout_report::{print_summary, progress_line};
use crate::rollout::job::RolloutJob;
use crate::Cluster;
use std::path::PathBuf;
use std::time::Instant;

/// Run a rollout job described in a TOML file, on the embedded single node.
///
/// The file names the rollout workers (replicas, resources), their inference backend (a command
/// started next to each worker, e.g. `vllm serve ... --port {port}`, or the URL of one already
/// running), the agent (the built-in `multi-turn`, or a command in any language that talks to
/// `OPENAI_BASE_URL` with `OPENAI_API_KEY`, reads its task as JSON on stdin and prints
/// `{"reward": r}`), the tasks, the number of episodes, the staleness bound and the output
/// path. See `examples/*.toml` and the module docs of `fleet_runtime::rollout::job` for every
/// key. In commands, `fleet` means this executable and `{port}`/`{index}` are filled per worker.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file.
    job: PathBuf,
    /// Override the number of episodes.
    #[arg(long)]
    episodes: Option<u64>,
    /// Override the output path.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Runs the job.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut job = RolloutJob::from_file(&args.job).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(n) = args.episodes {
        job.episodes = n;
    }
    if let Some(o) = args.output {
        job.output = o;
    }
    let fleet = crate::exe::fleet_executable()
        .ok_or_else(|| anyhow::anyhow!("cannot find the fleet executable; set FLEET_BIN"))?;
    let cluster = Cluster::local().start().await?;
    eprintln!(
        "fleet run {}: {} episodes on {} rollout workers, batch {} per version, staleness {}",
        args.job.display(),
        job.episodes,
        job.workers.replicas,
        job.batch_size,
        job.max_staleness
    );
    let report = job
        .run(cluster.scheduler(), &fleet, progress_line(Instant::now()))
        .await;
    let shutdown = cluster.shutdown().await;
    let report = report?;
    shutdown?;
    print_summary(&report);
    Ok(())
}
