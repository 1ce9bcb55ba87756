//! What a client (`fleet submit`, `fleet job ...`, `fleet run --head`) asks a head's job
//! service, and what it answers. Every variant is remotable; payloads are [`Wire`] so a message
//! that does not decode is answered with a typed protocol error.

use fleet_actors::wire::{Wire, WireReply};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

/// The process group (in [`crate::membership::protocol::FLEET_SCOPE`]) of the job service
/// behind the node server called `server`.
pub fn jobs_group(server: &str) -> String {
    let name = server.split_once('@').map(|(n, _)| n).unwrap_or(server);
    format!("jobs/{name}")
}

/// Whether `name` can name a job or its run directory (`<name>-<id>`): 1 to 80 ASCII letters,
/// digits, `-`, `_` or `.`, not starting with `.` (so never a path, never `..`).
pub fn valid_run_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The largest job file a head takes (job files are configuration; data goes in `[tasks]
/// file` or the object store).
pub const MAX_JOB_FILE: usize = 1 << 20;

/// A job handed to the head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The job's name (default: the job file's stem). Letters, digits, `-`, `_` and `.`.
    pub name: Option<String>,
    /// The job file's path as the submitter gave it (for messages).
    pub file_name: String,
    /// The job file's text.
    pub text: String,
    /// The job file's directory, absolute, as the submitter sees it: the base of the job's
    /// relative input paths (`[tasks] file`, `[agent] cwd`).
    pub base_dir: String,
    /// Who submitted it (`user@host pid N`), for `fleet job status`.
    pub submitter: String,
    /// Overrides `episodes`.
    pub episodes: Option<u64>,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Its workers are starting or its episodes are running.
    Running,
    /// A stop was asked: admission stopped, episodes in flight finish or are cancelled.
    Stopping,
    /// It ran every episode, with at least `min_accepted` of them accepted.
    Succeeded,
    /// It stopped itself with an error, accepted too few, or could not start.
    Failed,
    /// `fleet job stop` (or the head's shutdown) ended it.
    Stopped,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Stopped
        )
    }

    /// The state as `fleet job list` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "RUNNING",
            JobState::Stopping => "STOPPING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }
}

/// A job's counts so far: the rollout loop's own progress.
pub type JobProgress = crate::rollout::run::ProgressState;

/// One point of a job's curve: taken at every new policy version and at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobPoint {
    /// Seconds since the first episode was admitted.
    pub t_s: f64,
    /// The policy version then.
    pub version: u64,
    /// Episodes accepted by then.
    pub accepted: u64,
    /// The mean reward of the episodes accepted since the previous point (none: no episode
    /// with a reward).
    pub mean_reward: Option<f64>,
}

/// One job, as `fleet job status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    /// The job id (8 hex digits), unique on this head.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// The job file as the submitter named it.
    pub file_name: String,
    /// Who submitted it.
    pub submitter: String,
    /// When it was submitted (Unix ms).
    pub submitted_unix_ms: u64,
    /// When it ended (Unix ms).
    pub ended_unix_ms: Option<u64>,
    /// Its run directory on the head's machine: the job file, `job.log`, `events.jsonl`, the
    /// trajectories and the run's metrics.
    pub run_dir: String,
    /// The trajectories file.
    pub output: String,
    /// The roles of its workers (its own: `<role>-<id>`).
    pub roles: Vec<String>,
    /// Counts so far.
    pub progress: JobProgress,
    /// Reward and version over time (at most [`MAX_POINTS`]; older points are thinned out).
    pub series: Vec<JobPoint>,
    /// The exit code `fleet run` would have given (0 success, 1 failure, 143 stopped).
    pub exit_code: Option<u8>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The most points a job's series keeps.
pub const MAX_POINTS: usize = 512;

/// A piece of a job's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// The job (id or a unique prefix of one).
    pub id: String,
    /// The byte offset to read from.
    pub offset: u64,
    /// At most this many bytes.
    pub max_bytes: u32,
}

/// A piece of a job's log, and whether more can come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The text (whole lines where possible).
    pub text: String,
    /// The offset to ask for next.
    pub next_offset: u64,
    /// The job is over and this chunk reached the end of its log.
    pub done: bool,
}

/// Asks a job to stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The job (id or a unique prefix of one).
    pub id: String,
    /// Cancel the episodes in flight at once instead of letting them finish within the job's
    /// `interrupt_grace`.
    pub now: bool,
}

/// Messages of the job service.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum JobsMsg {
    /// Start a job; answered once its run directory exists and its driver runs.
    #[rpc]
    Submit(Wire<SubmitRequest>, RpcReplyPort<WireReply<JobRow>>),
    /// Every job this head knows, newest first.
    #[rpc]
    List(RpcReplyPort<WireReply<Vec<JobRow>>>),
    /// One job.
    #[rpc]
    Status(Wire<String>, RpcReplyPort<WireReply<JobRow>>),
    /// A piece of a job's log.
    #[rpc]
    Logs(Wire<LogsRequest>, RpcReplyPort<WireReply<LogChunk>>),
    /// Stop a job (its workers are deleted when it ends); answered at once.
    #[rpc]
    Stop(Wire<StopRequest>, RpcReplyPort<WireReply<JobRow>>),
}

impl std::fmt::Debug for JobsMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobsMsg::Submit(..) => "Submit",
            JobsMsg::List(..) => "List",
            JobsMsg::Status(..) => "Status",
            JobsMsg::Logs(..) => "Logs",
            JobsMsg::Stop(..) => "Stop",
        })
    }
}
