//! `fleet job list|status|logs|stop`: the jobs of a running head.

use super::head_client::HeadClientArgs;
use super::node::parse_duration;
use crate::jobs::{JobClient, JobRow, JobState};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// See and control the jobs of a running head (submitted with `fleet submit` or
/// `fleet run --head`).
///
/// A job is named by its id (the last line `fleet submit` printed) or any prefix of it that
/// names one job.
///
/// Examples:
///
///   fleet job list
///
///   fleet job status 3fa2c1d0 --json | jq .progress
///
///   fleet job logs 3fa2c1d0 --follow
///
///   fleet job stop 3fa2
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// Every job the head knows, newest first: id, name, state, progress, policy version, age.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        head: HeadClientArgs,
    },
    /// One job: state, progress, run directory, output, roles, how it ended.
    Status {
        /// The job id (or a prefix of one).
        id: String,
        /// Print JSON instead (for scripts).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        head: HeadClientArgs,
    },
    /// A job's log (job.log in its run directory): what `fleet run` would have printed.
    Logs {
        /// The job id (or a prefix of one).
        id: String,
        /// Keep printing as the job goes on, until it ends (Ctrl-C stops following, not the job).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        head: HeadClientArgs,
    },
    /// Stop a job: admission stops, its episodes in flight finish within its interrupt_grace
    /// (or at once with --now), its workers are deleted. Waits until it ended.
    Stop {
        /// The job id (or a prefix of one).
        id: String,
        /// Cancel the episodes in flight at once.
        #[arg(long)]
        now: bool,
        /// Wait at most this long for the job to end (0: do not wait).
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        wait: Duration,
        #[command(flatten)]
        head: HeadClientArgs,
    },
}

fn age(unix_ms: u64) -> String {
    let now = crate::jobs::log::unix_ms();
    let s = now.saturating_sub(unix_ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn progress(r: &JobRow) -> String {
    let p = &r.progress;
    format!("{}/{}", p.accepted + p.rejected, p.total)
}

/// The jobs as a table.
pub fn render_list(rows: &[JobRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<20} {:<10} {:>11} {:>8} {:>8} {:>5}  run directory",
        "ID", "NAME", "STATE", "episodes", "rejected", "version", "age"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<10} {:<20} {:<10} {:>11} {:>8} {:>8} {:>5}  {}",
            r.id,
            r.name,
            r.state.as_str(),
            progress(r),
            r.progress.rejected,
            r.progress.version,
            age(r.submitted_unix_ms),
            r.run_dir
        );
    }
    if rows.is_empty() {
        out.push_str("(no jobs yet: fleet submit JOB.toml)\n");
    }
    out
}

/// One job, readable.
pub fn render_status(r: &JobRow) -> String {
    let mut out = String::new();
    let p = &r.progress;
    let _ = writeln!(out, "job {} ({})", r.id, r.name);
    let _ = writeln!(out, "  state        {}", r.state.as_str());
    let _ = writeln!(
        out,
        "  episodes     {} of {} ended: {} accepted, {} rejected, {} running",
        p.accepted + p.rejected,
        p.total,
        p.accepted,
        p.rejected,
        p.in_flight
    );
    let rate = (p.accepted + p.rejected) as f64 / p.elapsed_s.max(1e-3);
    let _ = writeln!(
        out,
        "  version      {} ({:.1} episodes/s over {:.1}s)",
        p.version, rate, p.elapsed_s
    );
    let _ = writeln!(
        out,
        "  submitted    {} ago by {} ({})",
        age(r.submitted_unix_ms),
        r.submitter,
        r.file_name
    );
    let _ = writeln!(out, "  run dir      {}", r.run_dir);
    let _ = writeln!(out, "  output       {}", r.output);
    let _ = writeln!(out, "  roles        {}", r.roles.join(", "));
    if let Some(c) = r.exit_code {
        let _ = writeln!(out, "  exit code    {c}");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error        {e}");
    }
    out
}

/// Waits until the job `id` ended, up to `within`; returns its last row.
pub async fn wait_ended(client: &JobClient, id: &str, within: Duration) -> anyhow::Result<JobRow> {
    let deadline = Instant::now() + within;
    loop {
        let row = client.status(id).await?;
        if row.state.is_final() || Instant::now() >= deadline {
            return Ok(row);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match args.command {
        JobCommand::List { json, head } => {
            let c = head.connect().await?;
            let rows = c.list().await;
            c.close();
            let rows = rows?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render_list(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Status { id, json, head } => {
            let c = head.connect().await?;
            let row = c.status(&id).await;
            c.close();
            let row = row?;
            if json {
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                print!("{}", render_status(&row));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Logs { id, follow, head } => {
            let c = head.connect().await?;
            let mut out = std::io::stdout();
            let r = c
                .copy_logs(&id, 0, follow, Duration::from_millis(300), &mut out)
                .await;
            c.close();
            r?;
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Stop {
            id,
            now,
            wait,
            head,
        } => {
            let c = head.connect().await?;
            let result = async {
                let row = c.stop(&id, now).await?;
                if row.state.is_final() {
                    println!("job {} had already ended: {}", row.id, row.state.as_str());
                    return Ok(row);
                }
                println!("job {}: stop asked{}", row.id, if now { " (now)" } else { "" });
                if wait.is_zero() {
                    return Ok(row);
                }
                let row = wait_ended(&c, &row.id, wait).await?;
                if row.state.is_final() {
                    println!("job {} {}; its workers are deleted", row.id, row.state.as_str());
                } else {
                    println!(
                        "job {} is still {} after {wait:?}; `fleet job status {}` shows when it ends",
                        row.id,
                        row.state.as_str(),
                        row.id
                    );
                }
                anyhow::Ok(row)
            }
            .await;
            c.close();
            let row = result?;
            Ok(if row.state.is_final() || wait.is_zero() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Whether a final state means success, for exit codes.
pub fn exit_code(row: &JobRow) -> u8 {
    match (row.state, row.exit_code) {
        (_, Some(c)) => c,
        (JobState::Succeeded, None) => 0,
        _ => 1,
    }
}
