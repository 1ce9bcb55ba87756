//! What `fleet demo` and `fleet run` print: a progress line while episodes finish, and a
//! summary table at the end.

use crate::rollout::controller::Episode;
use crate::rollout::job::JobReport;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

/// A progress callback: on a terminal, one line on stderr redrawn as episodes finish; otherwise
/// (logs, CI) a plain line at every tenth of the job.
pub fn progress_line(started: Instant) -> impl Fn(&Episode, usize, usize) + Send + Sync + Clone {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    move |ep: &Episode, done: usize, total: usize| {
        let width = 30;
        let filled = (done * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        if tty {
            let mark = if ep.rejected.is_some() {
                " (last: rejected)"
            } else {
                ""
            };
            let _ = write!(
                err,
                "\r[{}{}] {done}/{total} episodes  {rate:.1}/s{mark}        ",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if done == total {
                let _ = writeln!(err);
            }
        } else {
            let step = (total / 10).max(1);
            if done % step == 0 || done == total {
                let _ = writeln!(err, "{done}/{total} episodes done ({rate:.1}/s)");
            }
        }
        let _ = err.flush();
    }
}

/// Prints the summary table of a finished job.
pub fn print_summary(report: &JobReport) {
    let eps = &report.episodes;
    let accepted: Vec<&Episode> = eps.iter().filter(|e| e.trajectory.is_some()).collect();
    let rejected: Vec<&Episode> = eps.iter().filter(|e| e.rejected.is_some()).collect();
    let turns: usize = accepted
        .iter()
        .filter_map(|e| {
            e.trajectory
                .as_ref()?
                .get("turns")?
                .as_array()
                .map(|t| t.len())
        })
        .sum();
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_version: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &accepted {
        *per_worker.entry(e.worker.as_str()).or_default() += 1;
        *per_version.entry(e.admitted_version).or_default() += 1;
    }
    let s = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    println!();
    println!("| rollout summary | |");
    println!("| --- | --- |");
    println!(
        "| episodes | {} ({} accepted, {} rejected) |",
        eps.len(),
        accepted.len(),
        rejected.len()
    );
    println!("| turns recorded | {turns} |");
    println!(
        "| output tokens | {} ({:.0}/s) |",
        s.output_tokens,
        s.output_tokens as f64 / secs.max(1e-9)
    );
    println!(
        "| wall time | {secs:.2} s ({:.1} episodes/s) |",
        eps.len() as f64 / secs.max(1e-9)
    );
    println!(
        "| episode latency p50 / p90 / p99 | {} / {} / {} ms |",
        s.latency_ms.0, s.latency_ms.1, s.latency_ms.2
    );
    println!(
        "| episodes per worker | {} |",
        per_worker
            .iter()
            .map(|(w, n)| format!("{w}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| episodes per policy version | {} |",
        per_version
            .iter()
            .map(|(v, n)| format!("v{v}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !rejected.is_empty() {
        println!(
            "| rejections | {} |",
            s.rejected
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("| trajectories | {} |", report.output.display());
    for e in rejected.iter().take(5) {
        println!(
            "rejected episode {} on {}: {}",
            e.episode_id,
            e.worker,
            e.rejected.as_deref().unwrap_or("")
        );
    }
}
