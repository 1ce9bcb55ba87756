//! `fleet run JOB.toml --head ADDR`: the job goes to a running head, and this process follows
//! it: the job's log streams to stdout, Ctrl-C stops the job, the exit code is the job's.

use super::run::Args;
use std::process::ExitCode;
use std::time::Duration;

/// Submits the job to the head at `head` and follows it until it ends.
pub(super) async fn run_on_head(args: &Args, head: &str) -> anyhow::Result<ExitCode> {
    use crate::rollout::run::Stop;
    let req = super::submit::request(&args.job, args.name.clone(), args.episodes)?;
    let client = super::head_client::connect(head, &args.security, Duration::from_secs(15)).await?;
    let row = match client.submit(req).await {
        Ok(r) => r,
        Err(e) => {
            client.close();
            anyhow::bail!("submitting {}: {e}", args.job.display());
        }
    };
    let id = row.id.clone();
    eprintln!(
        "fleet run: job {id} ({}) runs on the head at {head}; run directory there: {}; Ctrl-C stops the job",
        row.name, row.run_dir
    );
    let mut stop = super::job_stop_signals();
    let mut signal = None;
    let mut offset = 0;
    let mut out = std::io::stdout();
    let followed: Result<(), fleet_actors::FleetError> = async {
        loop {
            tokio::select! {
                chunk = client.logs(&id, offset) => {
                    let chunk = chunk?;
                    if !args.quiet {
                        use std::io::Write;
                        let _ = out.write_all(chunk.text.as_bytes());
                        let _ = out.flush();
                    }
                    let moved = chunk.next_offset > offset;
                    offset = chunk.next_offset;
                    if chunk.done {
                        return Ok(());
                    }
                    if !moved {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let asked = *stop.borrow();
                    let now = matches!(asked, Stop::Now(_));
                    if let Stop::Graceful(sig) | Stop::Now(sig) = asked {
                        signal = Some(sig);
                    }
                    eprintln!("fleet run: stopping job {id}{}", if now { " now (its episodes in flight are cancelled)" } else { " (episodes in flight may finish; Ctrl-C again cancels them)" });
                    client.stop(&id, now).await?;
                }
            }
        }
    }
    .await;
    let last = match followed {
        Ok(()) => client.status(&id).await,
        Err(e) => Err(e),
    };
    client.close();
    let row = last.map_err(|e| {
        anyhow::anyhow!(
            "lost the head while following job {id}: {e}; the job goes on there (fleet job status {id} --head {head})"
        )
    })?;
    eprintln!(
        "fleet run: job {id} {}: trajectories in {} (on the head's machine)",
        row.state.as_str(),
        row.output
    );
    Ok(ExitCode::from(match signal {
        // Stopped because this follower was interrupted: the signal's own code (130, 143).
        Some(sig) if row.state == crate::jobs::JobState::Stopped => sig.exit_code(),
        _ => super::job::exit_code(&row),
    }))
}
