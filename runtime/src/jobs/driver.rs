//! The driver of one submitted job: runs the rollout loop on the head's scheduler with the
//! job's log as its display, deletes the job's roles again whatever happened (a returned error,
//! a panic), writes the summary, and records how the job ended.

use super::log::{unix_ms, JobLog};
use super::protocol::{JobRow, JobState};
use crate::rollout::job::RolloutJob;
use crate::rollout::run::{RunOptions, Stop};
use crate::scheduler::Scheduler;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Runs `job` to its end; `ended` turns true once its row and files say how it ended.
pub(super) async fn drive(
    job: RolloutJob,
    scheduler: Scheduler,
    roles: Vec<String>,
    log: Arc<JobLog>,
    row: Arc<Mutex<JobRow>>,
    stop: watch::Receiver<Stop>,
    ended: watch::Sender<bool>,
) {
    let (id, name) = {
        let r = row.lock().unwrap_or_else(|p| p.into_inner());
        (r.id.clone(), r.name.clone())
    };
    log.line(&format!(
        "fleet job {id} ({name}): {} episodes on {} rollout workers (role {}), batch {} per version, staleness {}, output {}",
        job.episodes,
        job.workers.replicas,
        job.role,
        job.batch_size,
        job.max_staleness,
        job.output.display()
    ));
    log.event("started", serde_json::json!({"roles": roles}));
    metrics::gauge!("fleet_jobs_running").increment(1.0);
    let opts = RunOptions {
        resume: false,
        overwrite: false,
        stop: stop.clone(),
        progress: log.clone(),
        observe: Some({
            let log = log.clone();
            Arc::new(move |_, episode| log.observe(episode))
        }),
    };
    let min_accepted = job.min_accepted;
    let run = {
        let scheduler = scheduler.clone();
        tokio::spawn(async move { job.run(&scheduler, "fleet", opts).await })
    };
    let result = run.await;
    // The loop deletes its workers before it returns; a panic or an early error may not have.
    for role in &roles {
        if let Err(e) = scheduler.delete_workers(Some(role), false).await {
            log.line(&format!("deleting the job's role {role} failed: {e}"));
        }
    }
    let stopped = *stop.borrow() != Stop::Run;
    let (state, code, error) = match result {
        Ok(Ok(report)) => {
            let mut table = Vec::new();
            crate::cli::rollout_report::write_summary(&mut table, &report);
            log.block(&String::from_utf8_lossy(&table));
            let (code, message) = crate::cli::rollout_report::verdict(&report, min_accepted, false);
            if let Some(m) = &message {
                log.line(m);
            }
            let state = match code {
                0 => JobState::Succeeded,
                _ if stopped => JobState::Stopped,
                _ => JobState::Failed,
            };
            (state, code, message.filter(|_| code != 0 && !stopped))
        }
        Ok(Err(e)) => {
            log.line(&format!("fleet: error: {e}"));
            let state = if stopped {
                JobState::Stopped
            } else {
                JobState::Failed
            };
            (state, 1, Some(e.to_string()))
        }
        Err(e) => {
            let why = format!("the job's driver panicked: {e}");
            log.line(&format!("fleet: error: {why}"));
            (JobState::Failed, 1, Some(why))
        }
    };
    let last = {
        let mut r = row.lock().unwrap_or_else(|p| p.into_inner());
        r.state = state;
        r.exit_code = Some(code);
        r.error = error.clone();
        r.ended_unix_ms = Some(unix_ms());
        r.clone()
    };
    // The whole row: a restarted head lists the job from it (`super::restore`).
    log.event(
        "ended",
        serde_json::json!({"state": state.as_str(), "exit_code": code, "error": error, "row": last}),
    );
    log.line(&format!(
        "job {id} {}; run directory {}",
        state.as_str(),
        last.run_dir
    ));
    metrics::gauge!("fleet_jobs_running").decrement(1.0);
    metrics::counter!("fleet_jobs_total", "state" => state.as_str().to_lowercase()).increment(1);
    tracing::info!(job = %id, state = state.as_str(), "job ended");
    let _ = ended.send(true);
}
