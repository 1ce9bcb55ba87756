//! A submitted job's record on the head: `job.log` (what `fleet run` would have printed:
//! messages, a progress line at every tenth and at every new version, the summary) and
//! `events.jsonl` (one JSON object per event: submitted, started, version, stop asked, ended).
//! Both are plain text, appended and flushed line by line, so `fleet job logs --follow` and a
//! crash of the head lose nothing already said.

use super::protocol::{JobPoint, JobRow, MAX_POINTS};
use crate::rollout::controller::Episode;
use crate::rollout::run::{Progress, ProgressState};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn timestamp() -> String {
    let ms = unix_ms();
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
}

/// The job's log and event files, and its row (which progress updates keep current).
pub struct JobLog {
    log: Mutex<File>,
    events: Mutex<File>,
    row: Arc<Mutex<JobRow>>,
    /// The last tenth and version a progress line was written for.
    last: Mutex<(u64, u64)>,
    /// Rewards of the episodes accepted since the last point: sum and count.
    window: Mutex<(f64, u64)>,
}

impl JobLog {
    /// Creates `job.log` and `events.jsonl` in `dir`.
    pub fn create(dir: &Path, row: Arc<Mutex<JobRow>>) -> std::io::Result<JobLog> {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
        };
        Ok(JobLog {
            log: Mutex::new(open("job.log")?),
            events: Mutex::new(open("events.jsonl")?),
            row,
            last: Mutex::new((0, 0)),
            window: Mutex::new((0.0, 0)),
        })
    }

    /// Counts a finished episode into the current point of the series (its reward: the first
    /// turn's discounted reward, as the trainer sees it).
    pub fn observe(&self, episode: &Episode) {
        let reward = episode
            .trajectory
            .as_ref()
            .and_then(|t| t.get("turns"))
            .and_then(|t| t.get(0))
            .and_then(|t| t.get("reward"))
            .and_then(serde_json::Value::as_f64);
        if let Some(r) = reward {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            w.0 += r;
            w.1 += 1;
        }
    }

    fn point(&self, s: &ProgressState) {
        let (sum, n) = std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()));
        let mut row = self.row.lock().unwrap_or_else(|p| p.into_inner());
        if row.series.len() >= MAX_POINTS {
            // Thin out the older half: every other point goes.
            let keep: Vec<JobPoint> = row
                .series
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0 || *i >= MAX_POINTS / 2)
                .map(|(_, p)| p.clone())
                .collect();
            row.series = keep;
        }
        row.series.push(JobPoint {
            t_s: s.elapsed_s,
            version: s.version,
            accepted: s.accepted,
            mean_reward: (n > 0).then(|| sum / n as f64),
        });
    }

    /// Appends `text` (one or more lines) to `job.log`, each line time-stamped.
    pub fn line(&self, text: &str) {
        let mut f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let ts = timestamp();
        for l in text.lines() {
            let _ = writeln!(f, "{ts} {l}");
        }
        let _ = f.flush();
    }

    /// Appends a block (the summary table) to `job.log` as it is.
    pub fn block(&self, text: &str) {
        let mut f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(text.as_bytes());
        let _ = f.flush();
    }

    /// Appends an event to `events.jsonl`: `{"t_ms": .., "event": kind, ..fields}`.
    pub fn event(&self, kind: &str, fields: serde_json::Value) {
        let mut obj = serde_json::json!({"t_ms": unix_ms(), "event": kind});
        if let (Some(o), serde_json::Value::Object(extra)) = (obj.as_object_mut(), fields) {
            o.extend(extra);
        }
        let mut f = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{obj}");
        let _ = f.flush();
    }

    fn set_progress(&self, s: &ProgressState) {
        let mut row = self.row.lock().unwrap_or_else(|p| p.into_inner());
        row.progress = s.clone();
    }
}

fn progress_line(s: &ProgressState) -> String {
    format!(
        "{}/{} episodes: {}",
        s.accepted + s.rejected,
        s.total,
        crate::cli::rollout_report::summary_line(s)
    )
}

impl Progress for JobLog {
    fn update(&self, s: &ProgressState) {
        self.set_progress(s);
        if s.total == 0 {
            return;
        }
        let done = s.accepted + s.rejected;
        let tenth = done * 10 / s.total;
        let new_version = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let (t, v) = *last;
            if tenth <= t && s.version <= v && done != s.total {
                return;
            }
            *last = (tenth.max(t), s.version.max(v));
            s.version > v
        };
        self.line(&progress_line(s));
        if new_version {
            self.point(s);
            self.event(
                "version",
                serde_json::json!({"version": s.version, "accepted": s.accepted}),
            );
        }
    }

    fn message(&self, line: &str) {
        self.line(line);
    }

    fn finish(&self, s: &ProgressState) {
        self.set_progress(s);
        self.point(s);
        // The last update already wrote the final line of a job that ran to the end.
        if s.accepted + s.rejected != s.total {
            self.line(&progress_line(s));
        }
    }
}
