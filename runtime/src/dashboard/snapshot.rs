//! What `GET /api/state` answers: the cluster's nodes and workers (from the head's status
//! report), its jobs (from the job service) and the recent events, in the flat shape the page
//! draws (state names instead of enums, free and total side by side, a worker's role and index
//! apart, a job's rate worked out).

use super::events::Event;
use crate::jobs::{JobPoint, JobProgress, JobRow};
use crate::membership::{MemberState, NodeRow, StatusReport, WorkerRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// The most ended jobs the page gets (a long-lived head keeps every job, each with its curve).
pub const MAX_ENDED_JOBS: usize = 20;

/// The whole page's data.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// The cluster id.
    pub cluster_id: String,
    /// When this was put together (Unix ms).
    pub generated_unix_ms: u64,
    /// Why nodes and workers are missing: the head's status did not come (the page shows it
    /// as a banner).
    pub status_error: Option<String>,
    /// Members, current ones first.
    pub nodes: Vec<NodeView>,
    /// Every worker, by role then index.
    pub workers: Vec<WorkerView>,
    /// Every job that has not ended and the newest [`MAX_ENDED_JOBS`] that have, newest first.
    pub jobs: Vec<JobView>,
    /// Ended jobs left out (`fleet job list` shows them).
    pub jobs_not_shown: usize,
    /// Recent events, newest first.
    pub events: Vec<Event>,
}

/// One node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// Its id (`name#suffix`).
    pub node: String,
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
    /// Why it is down.
    pub state_detail: Option<String>,
    /// Whether it is the head's own node.
    pub is_head: bool,
    /// The node process's pid.
    pub pid: u32,
    /// Free and total CPU, in thousandths of a core.
    pub cpu_free_millis: u64,
    /// Total CPU, in thousandths of a core.
    pub cpu_total_millis: u64,
    /// Free memory, MiB.
    pub mem_free_mib: u64,
    /// Total memory, MiB.
    pub mem_total_mib: u64,
    /// Free GPU ids.
    pub gpus_free: Vec<u32>,
    /// Every GPU id.
    pub gpus_total: Vec<u32>,
    /// Workers placed on it.
    pub workers: u64,
    /// Milliseconds since its last beat (0 for the head's own node).
    pub last_beat_ms: u64,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// One worker.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerView {
    /// `role/index`.
    pub worker: String,
    /// Its role.
    pub role: String,
    /// Its index in the role.
    pub index: String,
    /// Its node.
    pub node: String,
    /// Its kind.
    pub kind: String,
    /// `starting`, `running` or `failed`.
    pub state: String,
    /// What failed, for a failed worker.
    pub error: Option<String>,
    /// For a colocated role: the worker it stands for.
    pub alias_of: Option<String>,
    /// Its GPUs.
    pub gpus: Vec<u32>,
    /// Its ports.
    pub ports: Vec<u16>,
    /// The pid of its child process, if it has one.
    pub child_pid: Option<u32>,
}

/// One job.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    /// The job id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `RUNNING`, `STOPPING`, `SUCCEEDED`, `FAILED` or `STOPPED`.
    pub state: String,
    /// The job file as the submitter named it.
    pub file_name: String,
    /// Who submitted it.
    pub submitter: String,
    /// When it was submitted (Unix ms).
    pub submitted_unix_ms: u64,
    /// When it ended (Unix ms).
    pub ended_unix_ms: Option<u64>,
    /// Counts so far.
    pub progress: JobProgress,
    /// Episodes ended (accepted or rejected) per second since the first was admitted.
    pub rate_per_s: f64,
    /// Reward and version over time.
    pub series: Vec<JobPoint>,
    /// The roles of its workers.
    pub roles: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Snapshot {
    /// Puts the page's data together from what the head and the job service said.
    pub fn build(
        cluster_id: &str,
        status: Result<StatusReport, String>,
        jobs: &[JobRow],
        events: Vec<Event>,
        generated_unix_ms: u64,
    ) -> Snapshot {
        let (nodes, workers, status_error) = match status {
            Ok(s) => (
                s.nodes.iter().map(node_view).collect(),
                s.roles
                    .iter()
                    .flat_map(|(_, ws)| ws.iter().map(worker_view))
                    .collect(),
                None,
            ),
            Err(e) => (vec![], vec![], Some(e)),
        };
        let mut ended = 0;
        let shown: Vec<JobView> = jobs
            .iter()
            .filter(|j| {
                if !j.state.is_final() {
                    return true;
                }
                ended += 1;
                ended <= MAX_ENDED_JOBS
            })
            .map(job_view)
            .collect();
        Snapshot {
            cluster_id: cluster_id.to_string(),
            generated_unix_ms,
            status_error,
            nodes,
            workers,
            jobs_not_shown: jobs.len() - shown.len(),
            jobs: shown,
            events,
        }
    }
}

fn node_view(n: &NodeRow) -> NodeView {
    NodeView {
        node: n.node.clone(),
        state: n.state.name().to_string(),
        state_detail: match &n.state {
            MemberState::Down { reason } => Some(reason.clone()),
            _ => None,
        },
        is_head: n.is_head,
        pid: n.pid,
        cpu_free_millis: n.free_cpu_millis,
        cpu_total_millis: n.resources.cpu_millis,
        mem_free_mib: n.free_mem_mib,
        mem_total_mib: n.resources.mem_mib,
        gpus_free: n.free_gpus.clone(),
        gpus_total: n.resources.gpus.clone(),
        workers: n.workers,
        last_beat_ms: n.last_beat_ms,
        labels: n.resources.labels.clone(),
    }
}

fn worker_view(w: &WorkerRow) -> WorkerView {
    let (role, index) = match w.worker.rsplit_once('/') {
        Some((r, i)) => (r.to_string(), i.to_string()),
        None => (w.worker.clone(), String::new()),
    };
    let (state, error) = match w.state.split_once(':') {
        Some((s, e)) => (s.trim().to_string(), Some(e.trim().to_string())),
        None => (w.state.clone(), None),
    };
    WorkerView {
        worker: w.worker.clone(),
        role,
        index,
        node: w.node.clone(),
        kind: w.kind.clone(),
        state,
        error,
        alias_of: w.alias_of.clone(),
        gpus: w.gpus.clone(),
        ports: w.ports.clone(),
        child_pid: w.child_pid,
    }
}

fn job_view(j: &JobRow) -> JobView {
    let p = &j.progress;
    let ended = (p.accepted + p.rejected) as f64;
    JobView {
        id: j.id.clone(),
        name: j.name.clone(),
        state: j.state.as_str().to_string(),
        file_name: j.file_name.clone(),
        submitter: j.submitter.clone(),
        submitted_unix_ms: j.submitted_unix_ms,
        ended_unix_ms: j.ended_unix_ms,
        progress: p.clone(),
        rate_per_s: if p.elapsed_s > 0.0 {
            ended / p.elapsed_s
        } else {
            0.0
        },
        series: j.series.clone(),
        roles: j.roles.clone(),
        error: j.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobState;
    use crate::node::resources::NodeResources;

    #[test]
    fn a_snapshot_flattens_states_splits_worker_names_and_keeps_every_running_job() {
        let report = StatusReport {
            cluster_id: "c1".into(),
            nodes: vec![NodeRow {
                node: "n1#ab".into(),
                state: MemberState::Down {
                    reason: "no beat".into(),
                },
                is_head: false,
                pid: 7,
                resources: NodeResources {
                    cpu_millis: 2000,
                    mem_mib: 1024,
                    gpus: vec![0, 1],
                    port_range: (1, 2),
                    labels: BTreeMap::new(),
                },
                free_cpu_millis: 500,
                free_mem_mib: 512,
                free_gpus: vec![1],
                workers: 3,
                last_beat_ms: 40,
                store: None,
            }],
            roles: vec![(
                "rollout-x".into(),
                vec![WorkerRow {
                    worker: "rollout-x/1".into(),
                    alias_of: None,
                    node: "n1#ab".into(),
                    kind: "rollout".into(),
                    state: "failed: worker_lost".into(),
                    gpus: vec![],
                    ports: vec![9],
                    child_pid: None,
                }],
            )],
        };
        let job = JobRow {
            id: "deadbeef".into(),
            name: "demo".into(),
            state: JobState::Running,
            file_name: "demo.toml".into(),
            submitter: "me".into(),
            submitted_unix_ms: 1,
            ended_unix_ms: None,
            run_dir: String::new(),
            output: String::new(),
            roles: vec![],
            progress: JobProgress {
                total: 100,
                accepted: 30,
                rejected: 10,
                elapsed_s: 4.0,
                ..Default::default()
            },
            series: vec![],
            exit_code: None,
            error: None,
        };
        let s_job = job.clone();
        let s = Snapshot::build("c1", Ok(report), &[job], vec![], 5);
        assert_eq!(s.nodes[0].state, "down");
        assert_eq!(s.nodes[0].state_detail.as_deref(), Some("no beat"));
        assert_eq!(s.nodes[0].gpus_total, [0, 1]);
        let w = &s.workers[0];
        assert_eq!((w.role.as_str(), w.index.as_str()), ("rollout-x", "1"));
        assert_eq!(w.state, "failed");
        assert_eq!(w.error.as_deref(), Some("worker_lost"));
        assert_eq!(s.jobs[0].state, "RUNNING");
        assert_eq!(s.jobs[0].rate_per_s, 10.0);
        assert!(s.status_error.is_none());

        let mut many: Vec<JobRow> = (0..MAX_ENDED_JOBS + 5)
            .map(|i| JobRow {
                id: format!("{i:08x}"),
                state: JobState::Succeeded,
                ..s_job.clone()
            })
            .collect();
        many.push(s_job.clone());
        let s = Snapshot::build("c1", Err("x".into()), &many, vec![], 5);
        assert_eq!(
            s.jobs.len(),
            MAX_ENDED_JOBS + 1,
            "every running job is kept"
        );
        assert_eq!(s.jobs.last().map(|j| j.state.as_str()), Some("RUNNING"));
        assert_eq!(s.jobs_not_shown, 5);

        let down = Snapshot::build("c1", Err("the head did not answer".into()), &[], vec![], 5);
        assert!(down.nodes.is_empty());
        assert_eq!(
            down.status_error.as_deref(),
            Some("the head did not answer")
        );
    }
}
