//! The head's job service: an actor in the `fleet`/`jobs/<server>` group that takes jobs from
//! clients on any machine with the cookie, runs each one's driver on the head, and answers
//! list, status, logs and stop.
//!
//! A job's driver runs in the head process, not in the client: a client that crashes or is
//! killed costs nothing (the job goes on, `fleet job stop` ends it), and two jobs at once are
//! kept apart by their roles (`<role>-<id>`, so their workers, logs and routes never mix) and
//! by their run directories. A job's workers are deleted when it ends, however it ends: the
//! rollout loop deletes them, and the driver deletes the job's roles again after it returned or
//! panicked.

use super::log::{unix_ms, JobLog};
use super::protocol::{
    JobProgress, JobRow, JobState, JobsMsg, LogChunk, LogsRequest, StopRequest, SubmitRequest,
};
use crate::rollout::job::RolloutJob;
use crate::rollout::run::{Stop, StopSignal};
use crate::scheduler::Scheduler;
use fleet_actors::wire::Wire;
use fleet_actors::FleetError;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How a head runs submitted jobs.
#[derive(Clone, Debug)]
pub struct JobServiceConfig {
    /// Where run directories go: `<runs_root>/<name>-<id>/`.
    pub runs_root: PathBuf,
    /// Ended jobs kept in the list (the oldest are forgotten first; their run directories stay).
    pub keep_ended: usize,
}

impl Default for JobServiceConfig {
    fn default() -> Self {
        JobServiceConfig {
            runs_root: PathBuf::from("fleet-runs"),
            keep_ended: 1000,
        }
    }
}

/// The largest piece of a log one `Logs` call returns.
pub const MAX_LOG_CHUNK: u32 = 256 << 10;

struct Entry {
    row: Arc<Mutex<JobRow>>,
    stop: watch::Sender<Stop>,
    ended: watch::Receiver<bool>,
    log_path: PathBuf,
}

struct Shared {
    cfg: JobServiceConfig,
    scheduler: Scheduler,
    jobs: Mutex<BTreeMap<String, Entry>>,
}

/// A running job service (see the module docs).
#[derive(Clone)]
pub struct JobService {
    shared: Arc<Shared>,
    actor: ActorRef<JobsMsg>,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService")
            .field("runs_root", &self.shared.cfg.runs_root)
            .finish()
    }
}

struct JobsActor;

impl Actor for JobsActor {
    type Msg = JobsMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<JobsMsg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<JobsMsg>,
        msg: JobsMsg,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobsMsg::Submit(req, reply) => {
                let r = req.into_result().and_then(|req| submit(shared, req));
                let _ = reply.send(Wire::new(r));
            }
            JobsMsg::List(reply) => {
                let _ = reply.send(Wire::new(Ok(list(shared))));
            }
            JobsMsg::Status(id, reply) => {
                let r = id.into_result().and_then(|id| row(shared, &id));
                let _ = reply.send(Wire::new(r));
            }
            JobsMsg::Logs(req, reply) => {
                let r = req.into_result().and_then(|req| logs(shared, &req));
                let _ = reply.send(Wire::new(r));
            }
            JobsMsg::Stop(req, reply) => {
                let r = req.into_result().and_then(|req| stop(shared, &req));
                let _ = reply.send(Wire::new(r));
            }
        }
        Ok(())
    }
}

impl JobService {
    /// Starts the job service of the head whose node server is called `server` (its
    /// ractor_cluster name) and whose scheduler is `scheduler`.
    pub async fn start(
        server: &str,
        scheduler: Scheduler,
        cfg: JobServiceConfig,
    ) -> Result<JobService, FleetError> {
        std::fs::create_dir_all(&cfg.runs_root).map_err(|e| {
            FleetError::bad_request(
                format!("the runs directory {}", cfg.runs_root.display()),
                format!("cannot create it: {e}; give another with --runs-dir"),
            )
        })?;
        let restored: BTreeMap<String, Entry> = super::restore::earlier_jobs(&cfg.runs_root)
            .into_iter()
            .map(|(row, log_path)| {
                let (stop, _) = watch::channel(Stop::Run);
                let (_, ended) = watch::channel(true);
                let entry = Entry {
                    row: Arc::new(Mutex::new(row.clone())),
                    stop,
                    ended,
                    log_path,
                };
                (row.id, entry)
            })
            .collect();
        if !restored.is_empty() {
            tracing::info!(jobs = restored.len(), runs_dir = %cfg.runs_root.display(), "listed the jobs of earlier heads from their run directories");
        }
        let shared = Arc::new(Shared {
            cfg,
            scheduler,
            jobs: Mutex::new(restored),
        });
        let (actor, _) = Actor::spawn(None, JobsActor, shared.clone())
            .await
            .map_err(|e| FleetError::internal(format!("the job service did not start: {e}")))?;
        ractor::pg::join_scoped(
            crate::membership::protocol::FLEET_SCOPE.to_string(),
            super::protocol::jobs_group(server),
            vec![actor.get_cell()],
        );
        Ok(JobService { shared, actor })
    }

    /// Submits a job from this process (what a remote `Submit` does).
    pub fn submit(&self, req: SubmitRequest) -> Result<JobRow, FleetError> {
        submit(&self.shared, req)
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobRow> {
        list(&self.shared)
    }

    /// Stops every job that is still running (cancelling the episodes in flight) and waits
    /// up to `within` for them to end and delete their workers.
    pub async fn shutdown(&self, within: Duration) {
        let waits: Vec<watch::Receiver<bool>> = {
            let jobs = self.shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.values()
                .filter(|e| !*e.ended.borrow())
                .map(|e| {
                    let _ = e.stop.send(Stop::Now(StopSignal::Terminate));
                    e.ended.clone()
                })
                .collect()
        };
        let all = async {
            for mut w in waits {
                let _ = w.wait_for(|ended| *ended).await;
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                ?within,
                "some jobs did not end in time; their workers go with the cluster"
            );
        }
        self.actor.stop(None);
    }
}

fn job_name(req: &SubmitRequest) -> Result<String, FleetError> {
    let name = match &req.name {
        Some(n) => n.clone(),
        None => Path::new(&req.file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into()),
    };
    if name.len() > 64 || !super::protocol::valid_run_name(&name) {
        return Err(FleetError::bad_request(
            "the job's name",
            format!("{name:?} is not a name: use 1 to 64 letters, digits, '-', '_' or '.' (not starting with '.'), with --name"),
        ));
    }
    Ok(name)
}

fn submit(shared: &Arc<Shared>, req: SubmitRequest) -> Result<JobRow, FleetError> {
    if req.text.len() > super::protocol::MAX_JOB_FILE {
        return Err(too_large(&req.file_name, req.text.len()));
    }
    let name = job_name(&req)?;
    let base = PathBuf::from(&req.base_dir);
    let mut job = RolloutJob::from_text(&req.text, &req.file_name, &base)
        .map_err(|e| FleetError::bad_request("the job file", e))?;
    if let Some(n) = req.episodes {
        job.episodes = n;
    }
    if let Some(f) = &job.tasks.file {
        if !f.exists() {
            return Err(FleetError::bad_request(
                format!("the job file {}", req.file_name),
                format!(
                    "[tasks] file {} does not exist on the head's machine; relative input paths are relative to the job file's directory ({}), which must be there too (a shared file system or the same checkout), or give an absolute path",
                    f.display(),
                    req.base_dir
                ),
            ));
        }
    }
    if job.agent.command.is_some() {
        if let Some(cwd) = job.agent.cwd.as_deref().filter(|c| !Path::new(c).is_dir()) {
            return Err(FleetError::bad_request(
                format!("the job file {}", req.file_name),
                format!(
                    "the agent's directory {cwd} does not exist on the head's machine; the agent command runs in the job file's directory ({}) unless [agent] cwd says otherwise, and the nodes must have it too",
                    req.base_dir
                ),
            ));
        }
    }
    job.preflight_keys()
        .map_err(|e| FleetError::bad_request(format!("the job file {}", req.file_name), e))?;
    let id = {
        let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let id = format!("{:08x}", rand::random::<u32>());
            if !jobs.contains_key(&id) {
                break id;
            }
        }
    };
    let dir = shared.cfg.runs_root.join(format!("{name}-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| {
        FleetError::internal(format!("creating the run directory {}: {e}", dir.display()))
    })?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let io = |what: &str, e: std::io::Error| {
        FleetError::internal(format!("{what} in {}: {e}", dir.display()))
    };
    std::fs::write(dir.join("job.toml"), &req.text).map_err(|e| io("writing job.toml", e))?;
    job.place_outputs(&dir);
    job.role = format!("{}-{id}", job.role);
    job.run_name = Some(format!("{name}-{id}"));
    let roles = vec![
        job.role.clone(),
        format!("{}-inference", job.role),
        format!("{}-trainer", job.role),
    ];
    let row = Arc::new(Mutex::new(JobRow {
        id: id.clone(),
        name: name.clone(),
        state: JobState::Running,
        file_name: req.file_name.clone(),
        submitter: req.submitter.clone(),
        submitted_unix_ms: unix_ms(),
        ended_unix_ms: None,
        run_dir: dir.display().to_string(),
        output: job.output.display().to_string(),
        roles: roles.clone(),
        progress: JobProgress {
            total: job.episodes,
            ..Default::default()
        },
        series: Vec::new(),
        exit_code: None,
        error: None,
    }));
    let log = Arc::new(JobLog::create(&dir, row.clone()).map_err(|e| io("creating job.log", e))?);
    let snapshot = row.lock().unwrap_or_else(|p| p.into_inner()).clone();
    log.event(
        "submitted",
        serde_json::json!({"id": id, "name": name, "file": req.file_name, "submitter": req.submitter, "row": snapshot, "head_pid": std::process::id()}),
    );
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let (ended_tx, ended_rx) = watch::channel(false);
    {
        let mut jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
        forget_oldest_ended(&mut jobs, shared.cfg.keep_ended);
        jobs.insert(
            id.clone(),
            Entry {
                row: row.clone(),
                stop: stop_tx,
                ended: ended_rx,
                log_path: dir.join("job.log"),
            },
        );
    }
    tracing::info!(job = %id, %name, run_dir = %dir.display(), "job submitted");
    let scheduler = shared.scheduler.clone();
    tokio::spawn(super::driver::drive(
        job, scheduler, roles, log, row, stop_rx, ended_tx,
    ));
    Ok(snapshot)
}

/// The error for a job file over [`super::protocol::MAX_JOB_FILE`].
pub fn too_large(file: &str, len: usize) -> FleetError {
    FleetError::bad_request(
        format!("the job file {file}"),
        format!(
            "it is {len} bytes, more than a job file may be ({} bytes); put large data in a [tasks] file next to it",
            super::protocol::MAX_JOB_FILE
        ),
    )
}

fn forget_oldest_ended(jobs: &mut BTreeMap<String, Entry>, keep: usize) {
    let mut ended: Vec<(u64, String)> = jobs
        .iter()
        .filter(|(_, e)| *e.ended.borrow())
        .map(|(id, e)| {
            let r = e.row.lock().unwrap_or_else(|p| p.into_inner());
            (r.submitted_unix_ms, id.clone())
        })
        .collect();
    if ended.len() < keep {
        return;
    }
    ended.sort();
    for (_, id) in ended.iter().take(ended.len() + 1 - keep.max(1)) {
        jobs.remove(id);
    }
}

fn list(shared: &Shared) -> Vec<JobRow> {
    let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let mut rows: Vec<JobRow> = jobs
        .values()
        .map(|e| e.row.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.submitted_unix_ms));
    rows
}

/// The job `id` names: an id, or a prefix of exactly one.
fn find<'a>(jobs: &'a BTreeMap<String, Entry>, id: &str) -> Result<&'a Entry, FleetError> {
    if let Some(e) = jobs.get(id) {
        return Ok(e);
    }
    let matches: Vec<&String> = jobs.keys().filter(|k| k.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok(&jobs[*one]),
        [] => Err(FleetError::bad_request(
            format!("job {id}"),
            "no such job on this head (see `fleet job list`)",
        )),
        many => Err(FleetError::bad_request(
            format!("job {id}"),
            format!(
                "{} jobs start with it ({}); give more of the id",
                many.len(),
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn row(shared: &Shared, id: &str) -> Result<JobRow, FleetError> {
    let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let e = find(&jobs, id)?;
    let r = e.row.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(r)
}

fn stop(shared: &Shared, req: &StopRequest) -> Result<JobRow, FleetError> {
    let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let e = find(&jobs, &req.id)?;
    let mut r = e.row.lock().unwrap_or_else(|p| p.into_inner());
    if !r.state.is_final() {
        let signal = StopSignal::Terminate;
        let _ = e.stop.send(if req.now {
            Stop::Now(signal)
        } else {
            Stop::Graceful(signal)
        });
        r.state = JobState::Stopping;
        tracing::info!(job = %r.id, now = req.now, "job stop asked");
    }
    Ok(r.clone())
}

fn logs(shared: &Shared, req: &LogsRequest) -> Result<LogChunk, FleetError> {
    use std::io::{Read, Seek, SeekFrom};
    let (path, ended) = {
        let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let e = find(&jobs, &req.id)?;
        let ended = *e.ended.borrow();
        (e.log_path.clone(), ended)
    };
    let mut f = std::fs::File::open(&path)
        .map_err(|e| FleetError::internal(format!("opening {}: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = req.offset.min(len);
    let want = (len - offset).min(req.max_bytes.clamp(1, MAX_LOG_CHUNK) as u64);
    let mut buf = vec![0u8; want as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| FleetError::internal(format!("reading {}: {e}", path.display())))?;
    // Whole lines where possible, so a follower never prints half a line.
    if offset + want < len || !ended {
        if let Some(nl) = buf.iter().rposition(|b| *b == b'\n') {
            buf.truncate(nl + 1);
        } else if offset + want < len {
            // One line longer than a chunk: pass it on in pieces.
        } else {
            buf.clear();
        }
    }
    let next = offset + buf.len() as u64;
    Ok(LogChunk {
        text: String::from_utf8_lossy(&buf).into_owned(),
        next_offset: next,
        done: ended && next >= len,
    })
}
