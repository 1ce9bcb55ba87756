//! The jobs of earlier heads, read back from their run directories when a head starts with the
//! same runs directory: `fleet job list` and `fleet job status` keep showing them, and a job
//! that was running when its head was killed is recorded as failed with that reason (its
//! output still holds every episode accepted before), instead of vanishing.
//!
//! Each run directory's `events.jsonl` carries the job's row in its `submitted` event and its
//! final row in its `ended` event; a directory without an `ended` event is a job whose head
//! died, and gets one appended now.

use super::log::unix_ms;
use super::protocol::{JobRow, JobState};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The most earlier jobs read back (the newest run directories first).
const MAX_RESTORED: usize = 1000;

/// Why a job without an end is failed.
pub const HEAD_DIED: &str = "the head stopped (killed or crashed) while this job ran; its output holds every episode accepted before, and its workers were stopped by their nodes' lease";

/// Reads one run directory: its last row, whether the job had ended, and the pid of the head
/// that ran it.
fn read(dir: &Path) -> Option<(JobRow, bool, Option<u32>)> {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).ok()?;
    let mut last: Option<(JobRow, bool)> = None;
    let mut head = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(pid) = v.get("head_pid").and_then(Value::as_u64) {
            head = Some(pid as u32);
        }
        let Some(row) = v
            .get("row")
            .and_then(|r| serde_json::from_value::<JobRow>(r.clone()).ok())
        else {
            continue;
        };
        last = Some((row, v["event"] == "ended"));
    }
    last.map(|(row, ended)| (row, ended, head))
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Lines in the output: the episodes it holds.
fn episodes_in(path: &str) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// The jobs recorded under `runs_root`, with their log files; jobs left without an end are
/// marked failed (on disk too).
pub fn earlier_jobs(runs_root: &Path) -> Vec<(JobRow, PathBuf)> {
    let Ok(dirs) = std::fs::read_dir(runs_root) else {
        return Vec::new();
    };
    let mut found: Vec<(JobRow, PathBuf)> = Vec::new();
    for d in dirs.flatten() {
        let dir = d.path();
        let Some((mut row, ended, head)) = read(&dir) else {
            continue;
        };
        let unended = !ended || !row.state.is_final();
        if unended && head.is_some_and(|p| p != std::process::id() && alive(p)) {
            // Another head, still running, runs it (two heads sharing a runs directory).
            continue;
        }
        if unended {
            row.state = JobState::Failed;
            row.exit_code = Some(1);
            row.error = Some(HEAD_DIED.into());
            row.progress.accepted = episodes_in(&row.output);
            row.progress.in_flight = 0;
            row.ended_unix_ms = Some(
                std::fs::metadata(dir.join("job.log"))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_else(unix_ms),
            );
            let event = serde_json::json!({
                "t_ms": unix_ms(), "event": "ended", "state": row.state.as_str(),
                "exit_code": 1, "error": HEAD_DIED, "row": row,
            });
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("events.jsonl"))
            {
                let _ = writeln!(f, "{event}");
            }
        }
        found.push((row, dir.join("job.log")));
    }
    found.sort_by_key(|(r, _)| std::cmp::Reverse(r.submitted_unix_ms));
    found.truncate(MAX_RESTORED);
    found
}
