//! `fleet submit JOB.toml`: hand a job to a running head and return at once.

use super::head_client::HeadClientArgs;
use crate::jobs::{JobRow, SubmitRequest};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Submit a rollout job to a running head (`fleet head`) and return at once; the job's id is the
/// last line printed.
///
/// The head runs the job's driver, so this command (and the machine it runs on) can go away:
/// the job goes on until it ends or `fleet job stop ID`. The job gets its own workers (role
/// `<role>-<id>`) and a run directory on the head's machine, `<runs dir>/<name>-<id>/`: the
/// job file, job.log (what `fleet run` would print), events.jsonl, the trajectories and the
/// run's metrics. Relative paths in the job file: inputs (`[tasks] file`, `[agent] cwd`) are
/// relative to the job file's directory, which the head must see at the same path (one
/// machine, a shared file system or the same checkout); outputs (`output`, `run_dir`,
/// `[trainer] model`, `[weights] dir`) are relative to the job's run directory, which takes the
/// place of `run_dir` (docs/job-file.md).
///
/// Examples:
///
///   fleet submit examples/demo.toml
///
///   id=$(fleet submit examples/demo.toml --name nightly | tail -1); fleet job logs "$id" --follow
///
///   FLEET_HEAD=10.0.0.5:7700 fleet submit job.toml --cookie-file /etc/fleet/cookie
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file.
    pub job: PathBuf,
    /// The job's name (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Override the number of episodes.
    #[arg(long)]
    pub episodes: Option<u64>,
    #[command(flatten)]
    pub head: HeadClientArgs,
}

/// The request for `job` as this machine sees it.
pub fn request(
    job: &Path,
    name: Option<String>,
    episodes: Option<u64>,
) -> anyhow::Result<SubmitRequest> {
    let len = std::fs::metadata(job)
        .with_context(|| format!("reading the job file {}", job.display()))?
        .len() as usize;
    if len > crate::jobs::protocol::MAX_JOB_FILE {
        return Err(crate::jobs::service::too_large(&job.display().to_string(), len).into());
    }
    let text = std::fs::read_to_string(job)
        .with_context(|| format!("reading the job file {}", job.display()))?;
    // Parsed here too, so a typo is reported before anything is sent.
    crate::rollout::job::RolloutJob::from_text(&text, &job.display().to_string(), Path::new("."))
        .map_err(|e| anyhow::anyhow!(e))?;
    let abs = std::fs::canonicalize(job)
        .with_context(|| format!("finding the job file {}", job.display()))?;
    let base = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    Ok(SubmitRequest {
        name,
        file_name: job.display().to_string(),
        text,
        base_dir: base.display().to_string(),
        submitter: format!("{user}@{host} pid {}", std::process::id()),
        episodes,
    })
}

/// Prints where a submitted job is, ending with its id.
pub fn print_submitted(row: &JobRow, head: &str) {
    println!(
        "submitted job {} ({}) to the head at {head}",
        row.id, row.name
    );
    println!("run directory (on the head's machine): {}", row.run_dir);
    println!(
        "follow it: fleet job logs {} --follow; stop it: fleet job stop {}",
        row.id, row.id
    );
    println!("{}", row.id);
}

/// Submits the job.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let req = request(&args.job, args.name, args.episodes)?;
    let client = args.head.connect().await?;
    let row = client.submit(req).await;
    client.close();
    let row = row.with_context(|| format!("submitting {}", args.job.display()))?;
    print_submitted(&row, &args.head.head);
    Ok(())
}
