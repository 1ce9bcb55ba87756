//! What `fleet demo` and `fleet run` print: progress while episodes finish (a bar on a
//! terminal, plain lines in a log, nothing with `--quiet`), messages that never share the bar's
//! line, the summary table at the end, and the exit code a job's ending deserves.

use crate::rollout::job::JobReport;
use crate::rollout::run::{Ending, Progress, ProgressState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The bar on screen, if any: log lines are written around it (see [`suspended`]).
static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn bar_slot() -> &'static Mutex<Option<ProgressBar>> {
    BAR.get_or_init(|| Mutex::new(None))
}

/// Runs `f` (which writes to stderr) with the progress bar, if one is drawn, cleared and redrawn
/// after, so log lines and the bar never share a line.
pub fn suspended<R>(f: impl FnOnce() -> R) -> R {
    let bar = bar_slot().lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// How progress is shown.
pub struct Display {
    bar: Option<ProgressBar>,
    quiet: bool,
    /// Plain-line mode: the last tenth printed.
    last_tenth: Mutex<u64>,
}

impl Display {
    /// A bar on a terminal, plain lines at every tenth otherwise; with `quiet`, only messages
    /// that matter (errors, interrupts) and no progress.
    pub fn new(quiet: bool) -> Arc<Display> {
        let tty = std::io::stderr().is_terminal();
        let bar = (tty && !quiet).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} episodes  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#>."),
            );
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        if let Ok(mut slot) = bar_slot().lock() {
            *slot = bar.clone();
        }
        Arc::new(Display {
            bar,
            quiet,
            last_tenth: Mutex::new(0),
        })
    }
}

fn eta(s: &ProgressState) -> String {
    let done = s.accepted + s.rejected;
    if done == 0 || s.elapsed_s <= 0.0 {
        return "-".into();
    }
    let rate = done as f64 / s.elapsed_s;
    let left = s.total.saturating_sub(done) as f64 / rate;
    if left < 60.0 {
        format!("{left:.0}s")
    } else if left < 3600.0 {
        format!("{}m{:02}s", (left / 60.0) as u64, (left % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (left / 3600.0) as u64,
            ((left % 3600.0) / 60.0) as u64
        )
    }
}

/// The counts, rate, version and ETA of a running job, on one line.
pub(crate) fn summary_line(s: &ProgressState) -> String {
    let done = s.accepted + s.rejected;
    let rate = done as f64 / s.elapsed_s.max(1e-3);
    format!(
        "{} ok, {} rejected, {} running, v{}, {rate:.1}/s, ETA {}{}",
        s.accepted,
        s.rejected,
        s.in_flight,
        s.version,
        eta(s),
        if s.stopping { " (stopping)" } else { "" }
    )
}

impl Progress for Display {
    fn update(&self, s: &ProgressState) {
        let done = s.accepted + s.rejected;
        if let Some(b) = &self.bar {
            b.set_length(s.total);
            b.set_position(done);
            b.set_message(summary_line(s));
            return;
        }
        if self.quiet || s.total == 0 {
            return;
        }
        let tenth = done * 10 / s.total;
        let mut last = self.last_tenth.lock().unwrap_or_else(|p| p.into_inner());
        if tenth > *last || done == s.total {
            *last = tenth;
            eprintln!("{done}/{} episodes: {}", s.total, summary_line(s));
        }
    }

    fn message(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self, s: &ProgressState) {
        if let Some(b) = &self.bar {
            b.set_position(s.accepted + s.rejected);
            b.set_message(summary_line(s));
            // Leave the bar where it stopped (an interrupted job is not at 100%).
            b.abandon();
        }
        if let Ok(mut slot) = bar_slot().lock() {
            *slot = None;
        }
    }
}

/// Prints the summary table of a job.
pub fn print_summary(report: &JobReport) {
    write_summary(&mut std::io::stdout().lock(), report);
}

/// Writes the summary table of a job to `out` (stdout, or a job's log on the head).
pub fn write_summary(out: &mut dyn Write, report: &JobReport) {
    let secs = report.elapsed.as_secs_f64();
    let _ = writeln!(out);
    let _ = writeln!(out, "| rollout summary | |");
    let _ = writeln!(out, "| --- | --- |");
    let ran = report.accepted + report.rejected_total();
    let _ = writeln!(
        out,
        "| episodes | {ran} ({} accepted, {} rejected){} |",
        report.accepted,
        report.rejected_total(),
        if report.skipped > 0 {
            format!("; {} already done before this run", report.skipped)
        } else {
            String::new()
        }
    );
    if report.requeued > 0 {
        let _ = writeln!(
            out,
            "| re-dispatched after infrastructure failures | {} |",
            report.requeued
        );
    }
    let _ = writeln!(out, "| turns recorded | {} |", report.turns);
    if let Some(s) = &report.stats {
        let _ = writeln!(
            out,
            "| output tokens | {} ({:.0}/s) |",
            s.output_tokens,
            s.output_tokens as f64 / secs.max(1e-9)
        );
        let _ = writeln!(
            out,
            "| episode latency p50 / p90 / p99 | {} / {} / {} ms |",
            s.latency_ms.0, s.latency_ms.1, s.latency_ms.2
        );
    }
    let _ = writeln!(
        out,
        "| wall time | {secs:.2} s ({:.1} episodes/s) |",
        ran as f64 / secs.max(1e-9)
    );
    let _ = writeln!(
        out,
        "| episodes per worker | {} |",
        report
            .per_worker
            .iter()
            .map(|(w, n)| format!("{w}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let versions: Vec<String> = report
        .per_version
        .iter()
        .map(|(v, n)| format!("v{v}: {n}"))
        .collect();
    let shown = if versions.len() > 8 {
        format!(
            "{} versions: {} ... {}",
            versions.len(),
            versions[..3].join(", "),
            versions[versions.len() - 3..].join(", ")
        )
    } else {
        versions.join(", ")
    };
    let _ = writeln!(out, "| episodes per policy version | {shown} |");
    let mut updates: Vec<Duration> = report.updates.iter().filter_map(|u| u.update).collect();
    if !updates.is_empty() {
        updates.sort();
        let mut train: Vec<Duration> = report.updates.iter().map(|u| u.train).collect();
        train.sort();
        let failed: usize = report.updates.iter().map(|u| u.failed.len()).sum();
        let _ = writeln!(
            out,
            "| weight updates | {} (trainer step p50 {:.0?}; update p50 {:.0?}, max {:.0?}; {failed} server failure(s) during updates, {} server(s) brought back) |",
            updates.len(),
            train[train.len() / 2],
            updates[updates.len() / 2],
            updates[updates.len() - 1],
            report.servers_recovered
        );
    }
    for (kind, r) in &report.rejected {
        let _ = writeln!(
            out,
            "| rejected: {kind} | {} (first: {}) |",
            r.count, r.first
        );
    }
    let _ = writeln!(
        out,
        "| trajectories | {} ({} episodes in the file) |",
        report.output.display(),
        report.in_output()
    );
    let _ = out.flush();
}

/// Prints what a job's ending means and returns the exit code: 0 when it completed with at
/// least `min_accepted` of its episodes accepted; 130/143 after SIGINT/SIGTERM; 1 when it
/// aborted or accepted too few.
pub fn conclude(report: &JobReport, min_accepted: f64) -> ExitCode {
    let (code, message) = verdict(report, min_accepted, true);
    if let Some(m) = message {
        eprintln!("{m}");
    }
    ExitCode::from(code)
}

/// What a job's ending means: its exit code, and the message that explains a non-zero one.
/// `resumable`: the run can be continued with `--resume` (not a job submitted to a head).
pub fn verdict(report: &JobReport, min_accepted: f64, resumable: bool) -> (u8, Option<String>) {
    // A GRPO trainer is not checkpointed: its run cannot be resumed.
    let grpo = report.updates.iter().any(|u| u.grpo.is_some());
    let again = if !resumable {
        "a submitted job cannot be resumed yet: submit it again, or `fleet run` it with --output at that file and --resume"
    } else if grpo {
        "a GRPO run cannot be resumed (its trainer is not checkpointed): run it again"
    } else {
        "continue with --resume"
    };
    match &report.ending {
        Ending::Interrupted(sig) => (
            sig.exit_code(),
            Some(format!(
                "interrupted: {} of {} episodes done, {} trajectories in {} ({again})",
                report.in_output() + report.rejected_total(),
                report.planned,
                report.in_output(),
                report.output.display()
            )),
        ),
        Ending::Aborted(why) => (
            1,
            Some(format!(
                "fleet: error: the job stopped early: {why}\n{} trajectories kept in {} ({again} once fixed)",
                report.in_output(),
                report.output.display()
            )),
        ),
        Ending::Completed => {
            let need = (min_accepted * report.planned as f64).ceil() as u64;
            if report.in_output() < need {
                (
                    1,
                    Some(format!(
                        "fleet: error: only {} of {} episodes were accepted, fewer than min_accepted = {min_accepted} requires ({need}); see the rejections above",
                        report.in_output(),
                        report.planned
                    )),
                )
            } else {
                (0, None)
            }
        }
    }
}
