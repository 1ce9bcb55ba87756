//! The dashboard's recent events: a bounded ring buffer of what happened to nodes (joined,
//! suspect, down, left, refused) and jobs (submitted, stopping, ended), newest last.
//!
//! Membership events come from the head's broadcast ([`crate::Cluster::member_events`]), which
//! a page polling once a second would miss; job events are the differences between two
//! listings of the job service, taken by a task of the dashboard's own every
//! [`JOB_WATCH_EVERY`] (the job service has no event stream). Both tasks write here and the
//! page reads the buffer with every poll. A broadcast receiver that falls behind loses events:
//! that shows as one "missed" event instead of silence.

use crate::jobs::{JobRow, JobService, JobState};
use crate::MemberEvent;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How many events the buffer keeps; older ones are dropped.
pub const CAPACITY: usize = 200;

/// How often the job list is compared with the previous one.
pub const JOB_WATCH_EVERY: Duration = Duration::from_millis(500);

/// One event, as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Counts up from 1 per dashboard, so the page can tell new events from seen ones.
    pub seq: u64,
    /// When the dashboard saw it (Unix ms).
    pub unix_ms: u64,
    /// `node_joined`, `node_suspect`, `node_down`, `node_left`, `refused`, `job_submitted`,
    /// `job_stopping`, `job_ended` or `events_missed`.
    pub kind: String,
    /// The node, the peer's address, or the job (`name id`).
    pub subject: String,
    /// What else is known (a node's resources, why it is down, a job's final state).
    pub detail: String,
}

/// The ring buffer; clones share it.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    events: VecDeque<Event>,
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog::default()
    }

    /// Appends an event stamped now, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&self, kind: &str, subject: impl Into<String>, detail: impl Into<String>) {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.next_seq += 1;
        let e = Event {
            seq: ring.next_seq,
            unix_ms: unix_ms(),
            kind: kind.to_string(),
            subject: subject.into(),
            detail: detail.into(),
        };
        ring.events.push_back(e);
        while ring.events.len() > CAPACITY {
            ring.events.pop_front();
        }
    }

    /// Every event kept, newest first.
    pub fn recent(&self) -> Vec<Event> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.events.iter().rev().cloned().collect()
    }

    /// Records one membership event.
    pub fn member(&self, ev: &MemberEvent) {
        match ev {
            MemberEvent::Joined { node, resources } => self.push(
                "node_joined",
                node.to_string(),
                format!(
                    "{:.1} CPUs, {} MiB, GPUs {:?}",
                    resources.cpu_millis as f64 / 1000.0,
                    resources.mem_mib,
                    resources.gpus
                ),
            ),
            MemberEvent::Suspect { node } => {
                self.push("node_suspect", node.to_string(), "missed heartbeats")
            }
            MemberEvent::Down { node, reason } => {
                self.push("node_down", node.to_string(), reason.clone())
            }
            MemberEvent::Left { node } => self.push("node_left", node.to_string(), "left cleanly"),
            MemberEvent::Refused { peer, reason } => {
                self.push("refused", peer.clone(), reason.clone())
            }
        }
    }

    /// Records membership events from `rx` until the broadcast closes.
    pub fn feed_members(&self, mut rx: broadcast::Receiver<MemberEvent>) -> JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => log.member(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => log.push(
                        "events_missed",
                        "membership",
                        format!("{n} membership event(s) came faster than the dashboard read them"),
                    ),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }

    /// Compares the job list with the previous one every [`JOB_WATCH_EVERY`] and records the
    /// differences. Jobs that exist at the first look are taken as known, without events.
    pub fn watch_jobs(&self, jobs: JobService) -> JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut watch = JobWatch::seeded(&jobs.list());
            let mut tick = tokio::time::interval(JOB_WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for (kind, subject, detail) in watch.diff(&jobs.list()) {
                    log.push(kind, subject, detail);
                }
            }
        })
    }
}

/// The states of the jobs seen at the previous look.
#[derive(Debug, Default)]
pub struct JobWatch {
    seen: HashMap<String, JobState>,
}

impl JobWatch {
    /// A watch that knows `rows` already.
    pub fn seeded(rows: &[JobRow]) -> Self {
        JobWatch {
            seen: rows.iter().map(|r| (r.id.clone(), r.state)).collect(),
        }
    }

    /// The events between the previous look and `rows`: `(kind, subject, detail)`, oldest job
    /// first.
    pub fn diff(&mut self, rows: &[JobRow]) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        // The list is newest first; events read better oldest first.
        for r in rows.iter().rev() {
            let subject = format!("{} {}", r.name, r.id);
            let before = self.seen.insert(r.id.clone(), r.state);
            if before.is_none() {
                out.push((
                    "job_submitted",
                    subject.clone(),
                    format!("{} by {}", r.file_name, r.submitter),
                ));
            }
            if before == Some(r.state) {
                continue;
            }
            if r.state == JobState::Stopping {
                out.push(("job_stopping", subject, "a stop was asked".to_string()));
            } else if r.state.is_final() {
                let mut detail = r.state.as_str().to_string();
                if let Some(e) = &r.error {
                    detail.push_str(": ");
                    detail.push_str(e);
                }
                out.push(("job_ended", subject, detail));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobProgress;

    fn row(id: &str, state: JobState) -> JobRow {
        JobRow {
            id: id.into(),
            name: "demo".into(),
            state,
            file_name: "demo.toml".into(),
            submitter: "me".into(),
            submitted_unix_ms: 0,
            ended_unix_ms: None,
            run_dir: String::new(),
            output: String::new(),
            roles: vec![],
            progress: JobProgress::default(),
            series: vec![],
            exit_code: None,
            error: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_events_up_to_its_capacity() {
        let log = EventLog::new();
        for i in 0..CAPACITY + 10 {
            log.push("node_joined", format!("n{i}"), "");
        }
        let recent = log.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].subject, format!("n{}", CAPACITY + 9));
        assert_eq!(recent[0].seq, (CAPACITY + 10) as u64);
        assert_eq!(recent[CAPACITY - 1].subject, "n10");
    }

    #[test]
    fn a_job_watch_reports_new_jobs_and_state_changes_once() {
        let mut w = JobWatch::seeded(&[row("old", JobState::Running)]);
        assert!(w.diff(&[row("old", JobState::Running)]).is_empty());
        let d = w.diff(&[
            row("new", JobState::Running),
            row("old", JobState::Stopping),
        ]);
        let kinds: Vec<_> = d.iter().map(|e| (e.0, e.1.as_str())).collect();
        assert_eq!(
            kinds,
            [("job_stopping", "demo old"), ("job_submitted", "demo new")]
        );
        let mut failed = row("new", JobState::Failed);
        failed.error = Some("boom".into());
        let d = w.diff(&[failed.clone(), row("old", JobState::Stopped)]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], ("job_ended", "demo old".into(), "STOPPED".into()));
        assert_eq!(
            d[1],
            ("job_ended", "demo new".into(), "FAILED: boom".into())
        );
        assert!(w.diff(&[failed, row("old", JobState::Stopped)]).is_empty());
    }

    #[tokio::test]
    async fn membership_events_are_recorded_in_order_and_a_lagging_feed_says_what_it_missed() {
        let log = EventLog::new();
        let (tx, rx) = broadcast::channel(2);
        let node = fleet_actors::NodeId::generate("n1");
        // Four events into a channel of two: the feed lags behind by two.
        for ev in [
            MemberEvent::Suspect { node: node.clone() },
            MemberEvent::Suspect { node: node.clone() },
            MemberEvent::Down {
                node: node.clone(),
                reason: "no heartbeat for 3s".into(),
            },
            MemberEvent::Refused {
                peer: "10.0.0.9:5000".into(),
                reason: "wrong cookie".into(),
            },
        ] {
            tx.send(ev).unwrap();
        }
        drop(tx);
        let feed = log.feed_members(rx);
        tokio::time::timeout(Duration::from_secs(10), feed)
            .await
            .expect("the feed ends when the broadcast closes")
            .unwrap();
        let got: Vec<(String, String, String)> = log
            .recent()
            .into_iter()
            .rev()
            .map(|e| (e.kind, e.subject, e.detail))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "events_missed");
        assert!(got[0].2.starts_with("2 "), "{got:?}");
        assert_eq!(
            got[1],
            (
                "node_down".into(),
                node.to_string(),
                "no heartbeat for 3s".into()
            )
        );
        assert_eq!(
            got[2],
            (
                "refused".into(),
                "10.0.0.9:5000".into(),
                "wrong cookie".into()
            )
        );
    }

    #[test]
    fn a_job_seen_first_when_it_is_over_is_submitted_and_ended() {
        let mut w = JobWatch::default();
        let d = w.diff(&[row("quick", JobState::Succeeded)]);
        let kinds: Vec<_> = d.iter().map(|e| e.0).collect();
        assert_eq!(kinds, ["job_submitted", "job_ended"]);
    }
}
