//! Running a [`RolloutJob`]: the asynchronous rollout loop, durable output, interrupts, fail-fast
//! and the report.
//!
//! Admission never waits for a batch to finish. A submitter admits episodes as fast as the
//! controller's staleness bound and concurrency allow; a trainer (today a simulated one: it
//! consumes `batch_size` accepted episodes, takes `[trainer] step_time`, and moves the policy
//! version) runs beside it, so the version advances while episodes are running and the
//! staleness bound is what paces admission, as in AReaL. A version move that some worker misses
//! does not stop the job (the controller holds that worker back until it has the version).
//!
//! Every accepted episode is appended to the output as it completes ([`super::output`]); the
//! output is synced at every version and at the end. A stop request ([`Stop`]) first stops
//! admission and lets the episodes in flight finish within a grace period, then cancels them;
//! an immediate stop cancels at once. Either way the workers are deleted before `run` returns.
//! When the first episodes all fail the same way, or every worker has failed, the job stops
//! with that error instead of repeating it.

use super::controller::{Episode, RolloutController, RolloutStats};
use super::job::RolloutJob;
use super::learning_curve::LearningCurve;
use super::output::{EpisodeKey, Output};
use crate::scheduler::{Scheduler, WorkerState};
use fleet_actors::{FleetError, Job};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How many of the first finished episodes must fail the same way (with none accepted) for the
/// job to stop with that error.
pub const FAIL_FAST_AFTER: usize = 4;

/// The signal that asked a job to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C): exit code 130.
    Interrupt,
    /// SIGTERM: exit code 143.
    Terminate,
}

impl StopSignal {
    /// The conventional exit code (128 + the signal number).
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// What the driver wants the running job to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Stop {
    /// Go on.
    #[default]
    Run,
    /// Admit nothing more; let the episodes in flight finish within the grace period.
    Graceful(StopSignal),
    /// Cancel the episodes in flight now.
    Now(StopSignal),
}

/// What a progress display is told.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProgressState {
    /// Episodes this run is to do (skipped ones excluded).
    pub total: u64,
    /// Accepted so far.
    pub accepted: u64,
    /// Rejected so far.
    pub rejected: u64,
    /// Admitted and not ended.
    pub in_flight: u64,
    /// The policy version.
    pub version: u64,
    /// Seconds since the first episode was admitted.
    pub elapsed_s: f64,
    /// Whether admission stopped (interrupt).
    pub stopping: bool,
}

/// A progress display: a bar on a terminal, plain lines in a log, nothing under `--quiet`.
pub trait Progress: Send + Sync {
    /// The counts changed.
    fn update(&self, state: &ProgressState);
    /// A message for the user (never on the bar's line).
    fn message(&self, line: &str);
    /// The job is over; clear or finish the display.
    fn finish(&self, state: &ProgressState);
}

/// A display that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: &ProgressState) {}
    fn message(&self, _: &str) {}
    fn finish(&self, _: &ProgressState) {}
}

/// How to run a job.
#[derive(Clone)]
pub struct RunOptions {
    /// Continue from the output file: its episodes are skipped, versions continue.
    pub resume: bool,
    /// Replace an existing output instead of refusing it.
    pub overwrite: bool,
    /// Stop requests.
    pub stop: watch::Receiver<Stop>,
    /// The display.
    pub progress: Arc<dyn Progress>,
    /// Called with every finished episode (accepted or rejected), after it was written.
    pub observe: Option<Observer>,
}

/// A callback for each finished episode.
pub type Observer = Arc<dyn Fn(EpisodeKey, &Episode) + Send + Sync>;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            overwrite: true,
            stop: watch::channel(Stop::Run).1,
            progress: Arc::new(NoProgress),
            observe: None,
        }
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// Every episode ran (accepted or rejected).
    Completed,
    /// A stop signal ended it early.
    Interrupted(StopSignal),
    /// It stopped itself with an error (fail-fast, or nothing left that can serve).
    Aborted(String),
}

/// One kind of rejection: how many, and the first message.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejections {
    /// Episodes rejected this way.
    pub count: u64,
    /// The first one's message.
    pub first: String,
}

/// The summary of a job.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// Episodes the job file asks for (`episodes`, rounded up to whole groups).
    pub planned: u64,
    /// Of which already in the output when the run began (`--resume`).
    pub skipped: u64,
    /// Accepted (and written) by this run.
    pub accepted: u64,
    /// Rejected by this run, by kind.
    pub rejected: BTreeMap<String, Rejections>,
    /// Turns in the accepted episodes.
    pub turns: u64,
    /// Accepted per worker.
    pub per_worker: BTreeMap<String, u64>,
    /// Accepted per admitted policy version.
    pub per_version: BTreeMap<u64, u64>,
    /// Episodes re-dispatched after infrastructure failures.
    pub requeued: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Where the trajectories went.
    pub output: PathBuf,
    /// The controller's final statistics (when it started).
    pub stats: Option<RolloutStats>,
    /// How it ended.
    pub ending: Ending,
    /// Weight updates (with `[weights]`): each trainer step's timings.
    pub updates: Vec<super::updates::StepReport>,
    /// Inference servers brought back after a failure (loaded at the current version).
    pub servers_recovered: u64,
    /// Each version's batch: `(version, its statistics)`, in order.
    pub versions: Vec<(u64, super::grpo::BatchStats)>,
    /// The run directory (`run_dir`), with `metrics.jsonl` and the reward picture.
    pub run_dir: Option<PathBuf>,
    /// The reward picture, if it was drawn.
    pub picture: Option<PathBuf>,
}

impl JobReport {
    /// Rejected episodes of every kind.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }

    /// Episodes in the output now (this run's and the skipped ones).
    pub fn in_output(&self) -> u64 {
        self.skipped + self.accepted
    }
}

/// A rejection message with numbers masked, so that the same failure is recognised across
/// episodes (pids, ports, ids differ).
fn shape(why: &str) -> String {
    let mut out = String::with_capacity(why.len());
    let mut in_digits = false;
    for c in why.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

enum Event {
    Done(EpisodeKey, Episode),
    /// An episode task ended without a result (it cannot, short of a panic).
    Lost(EpisodeKey, String),
    Trained(
        u64,
        Option<super::updates::StepReport>,
        super::grpo::BatchStats,
    ),
    /// A trainer step or its weight update failed for good.
    TrainFailed(u64, String),
}

impl RolloutJob {
    /// Runs the job on `scheduler`'s cluster: checks the job and its output, creates the
    /// rollout workers, waits for them (their backends' `ready_timeout`), runs the asynchronous
    /// loop, appends every accepted episode to the output, deletes the workers and reports.
    /// `fleet` is the fleet executable for `fleet` in commands.
    pub async fn run(
        &self,
        scheduler: &Scheduler,
        fleet: &str,
        mut opts: RunOptions,
    ) -> Result<JobReport, FleetError> {
        let bad = |e: String| FleetError::bad_request("the rollout job", e);
        let mut kinds = self.worker_kind(fleet).map_err(bad)?;
        let pool_plan = self.pool_plan(fleet).map_err(bad)?;
        let tasks = self.tasks().map_err(bad)?;
        let config = self.config().map_err(bad)?;
        let step_time = self.trainer_step_time().map_err(bad)?;
        let grace = self.interrupt_grace().map_err(bad)?;
        let ready_within = self.ready_timeout().map_err(bad)? + Duration::from_secs(30);
        let group = self.group_size.max(1);
        // The output first: a bad path is found before anything starts.
        let (mut output, resumed) = Output::open(&self.output, opts.resume, opts.overwrite)
            .map_err(|e| FleetError::bad_request("the rollout job's output", e))?;
        if resumed.torn_bytes > 0 {
            opts.progress.message(&format!(
                "the output's last line was torn ({} bytes, the job died while writing it); it was cut off and that episode runs again",
                resumed.torn_bytes
            ));
        }
        let mut pending: Vec<(EpisodeKey, Value)> = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            for s in 0..group {
                let key = (i as u64, s);
                if !resumed.done.contains(&key) {
                    pending.push((key, t.clone()));
                }
            }
        }
        let planned = tasks.len() as u64 * group as u64;
        let skipped = planned - pending.len() as u64;
        let start_version = resumed.last_version.map_or(0, |v| v + 1);
        if start_version > 0 && self.grpo_plan().map_err(bad)?.is_some() {
            return Err(bad(format!(
                "{} already holds episodes up to version {}, and resuming a GRPO job is not built: the trainer's weights and optimizer are not checkpointed; run it again with --overwrite (or another output)",
                self.output.display(),
                start_version - 1
            )));
        }
        let t0 = Instant::now();
        let mut report = JobReport {
            planned,
            skipped,
            accepted: 0,
            rejected: BTreeMap::new(),
            turns: 0,
            per_worker: BTreeMap::new(),
            per_version: BTreeMap::new(),
            requeued: 0,
            elapsed: Duration::ZERO,
            output: self.output.clone(),
            stats: None,
            ending: Ending::Completed,
            updates: Vec::new(),
            servers_recovered: 0,
            versions: Vec::new(),
            run_dir: self.run_dir.clone(),
            picture: None,
        };
        if pending.is_empty() {
            opts.progress.message(&format!(
                "nothing to do: all {planned} episodes are already in {}",
                self.output.display()
            ));
            return Ok(report);
        }
        if skipped > 0 {
            opts.progress.message(&format!(
                "resuming: {skipped} of {planned} episodes are already in {}; running the other {} from policy version {start_version}",
                self.output.display(),
                pending.len()
            ));
        }

        // The inference pool (and trainer) first: the rollout workers' proxies route over it.
        let mut plan = None;
        if let Some((pool, weights)) = pool_plan {
            let roles = [pool.role.clone()]
                .into_iter()
                .chain(weights.iter().map(|w| w.role.clone()))
                .collect::<Vec<_>>();
            opts.progress.message(&format!(
                "starting {} inference servers{}",
                pool.servers,
                weights.as_ref().map_or(String::new(), |w| match &w.grpo {
                    Some(g) => format!(
                        " and the GRPO trainer (model {}, {} updates)",
                        g.model_dir.display(),
                        w.mode
                    ),
                    None => format!(
                        " and the trainer ({} of weights per version, {} updates)",
                        human_bytes(w.size),
                        w.mode
                    ),
                })
            ));
            match super::updates::Plan::start(
                scheduler,
                self.base_spec(),
                pool,
                weights,
                ready_within,
            )
            .await
            {
                Ok(p) => {
                    if let fleet_actors::WorkerKind::Rollout(spec) = &mut kinds {
                        spec.backend = fleet_actors::Backend::Pool(p.servers.clone());
                    }
                    plan = Some(p);
                }
                Err(e) => {
                    for r in &roles {
                        let _ = scheduler.delete_workers(Some(r), false).await;
                    }
                    return Err(e);
                }
            }
        }
        let plan_roles = plan.as_ref().map(|p| p.roles.clone()).unwrap_or_default();
        let spec = self
            .base_spec()
            .cpu(self.workers.cpu)
            .gpu(self.workers.gpu)
            .ports(2);
        let job = Job::new(self.role.clone(), self.workers.replicas)
            .kind(kinds)
            .spec(spec);
        if let Err(e) = scheduler.create_workers(job).await {
            for r in &plan_roles {
                let _ = scheduler.delete_workers(Some(r), false).await;
            }
            return Err(e);
        }
        let result = async {
            if let Some(stop) = wait_ready(scheduler, &self.role, ready_within, &mut opts).await? {
                report.ending = Ending::Interrupted(stop);
                return Ok(());
            }
            let ctl = RolloutController::starting_at(
                scheduler.clone(),
                &self.role,
                config.clone(),
                Duration::from_secs(30),
                start_version,
            )
            .await?;
            let plan = match plan.take() {
                Some(mut p) => {
                    p.attach(scheduler, &ctl, start_version).await?;
                    Some(Arc::new(p))
                }
                None => None,
            };
            let supervisor = plan.as_ref().and_then(|p| p.supervise());
            let mut curve =
                match &self.run_dir {
                    Some(d) => Some(LearningCurve::create(d).map_err(|e| {
                        FleetError::bad_request("the rollout job's run directory", e)
                    })?),
                    None => None,
                };
            let r = drive(
                &ctl,
                plan.clone(),
                Batching {
                    batch_size: config.batch_size,
                    group_size: group,
                    step_time,
                },
                pending,
                grace,
                &mut output,
                &mut report,
                &mut opts,
                curve.as_mut(),
            )
            .await;
            if let Some(c) = &curve {
                if !c.points().is_empty() {
                    let title = match (&self.trainer.kind, &self.tasks.generate) {
                        (Some(k), Some(t)) if k == "grpo" => {
                            format!("GRPO on `{t}`: mean reward per policy version")
                        }
                        _ => format!("{}: mean reward per policy version", self.role),
                    };
                    match c.draw(&title) {
                        Ok(p) => report.picture = Some(p),
                        Err(e) => opts.progress.message(&format!("the reward picture: {e}")),
                    }
                }
            }
            if let Some(s) = supervisor {
                s.abort();
            }
            if let Some(p) = &plan {
                report.servers_recovered = p.recovered();
            }
            let stats = ctl.stats();
            report.requeued = stats.requeued.values().sum();
            report.stats = Some(stats);
            r
        }
        .await;
        let synced = output.sync();
        let deleted = scheduler.delete_workers(Some(&self.role), false).await;
        for r in &plan_roles {
            if let Err(e) = scheduler.delete_workers(Some(r), false).await {
                tracing::warn!(role = %r, error = %e, "could not delete the job's workers");
            }
        }
        report.elapsed = t0.elapsed();
        result?;
        synced.map_err(|e| FleetError::bad_request("the rollout job's output", e))?;
        deleted?;
        Ok(report)
    }
}

/// Waits for every worker of `role` to be ready, telling the user what it waits for (a real
/// model loads for minutes). Returns the stop signal if one came first.
async fn wait_ready(
    scheduler: &Scheduler,
    role: &str,
    within: Duration,
    opts: &mut RunOptions,
) -> Result<Option<StopSignal>, FleetError> {
    let t0 = Instant::now();
    let deadline = t0 + within;
    let mut last_note = t0;
    let mut pause = Duration::from_millis(5);
    loop {
        let workers = scheduler.workers(role).await?;
        let mut waiting = Vec::new();
        for w in &workers {
            match &w.state {
                WorkerState::Failed(e) => return Err(e.clone()),
                WorkerState::Starting => waiting.push((w.id.to_string(), "starting".to_string())),
                WorkerState::Running => {
                    if let Err(e) = scheduler.ping(&w.id, Duration::from_secs(2)).await {
                        if let FleetError::WorkerFailed { .. } = e {
                            return Err(failure_reason(scheduler, role, &w.id, e).await);
                        }
                        waiting.push((w.id.to_string(), e.to_string()));
                    }
                }
            }
        }
        if waiting.is_empty() {
            if t0.elapsed() > Duration::from_secs(3) {
                opts.progress.message(&format!(
                    "{} rollout workers ready after {:.0?}",
                    workers.len(),
                    t0.elapsed()
                ));
            }
            return Ok(None);
        }
        // A worker that stopped answering may be failing right now: its failure (exit status,
        // last output) reaches the scheduler a moment later. Look again before giving up.
        let now = Instant::now();
        if now >= deadline {
            return Err(FleetError::timeout(
                format!(
                    "the rollout workers of role {role:?} to become ready (raise [backend] ready_timeout if the model needs longer to load); waiting for: {}",
                    waiting
                        .iter()
                        .map(|(w, why)| format!("{w}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                within,
            ));
        }
        if now.duration_since(last_note) >= Duration::from_secs(5) {
            last_note = now;
            opts.progress.message(&format!(
                "waiting for {} of {} rollout workers ({:.0?} so far, up to {:.0?}): {}",
                waiting.len(),
                workers.len(),
                t0.elapsed(),
                within,
                waiting
                    .iter()
                    .take(3)
                    .map(|(w, why)| format!("{w}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            r = opts.stop.changed() => {
                if r.is_ok() {
                    if let Stop::Graceful(s) | Stop::Now(s) = *opts.stop.borrow() {
                        return Ok(Some(s));
                    }
                }
            }
        }
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The loop's bookkeeping of one run.
struct Tally<'a> {
    output: &'a mut Output,
    report: &'a mut JobReport,
    /// The shapes of the first finished episodes (`""` for an accepted one), for fail-fast.
    first: Vec<String>,
}

impl Tally<'_> {
    fn done(
        &mut self,
        key: EpisodeKey,
        ep: &Episode,
        progress: &dyn Progress,
    ) -> Result<(), FleetError> {
        match &ep.rejected {
            None => {
                self.output
                    .append(key, ep)
                    .map_err(|e| FleetError::bad_request("the rollout job's output", e))?;
                let r = &mut *self.report;
                r.accepted += 1;
                *r.per_worker.entry(ep.worker.clone()).or_default() += 1;
                *r.per_version.entry(ep.admitted_version).or_default() += 1;
                r.turns += ep
                    .trajectory
                    .as_ref()
                    .and_then(|t| t.get("turns"))
                    .and_then(Value::as_array)
                    .map_or(0, |t| t.len() as u64);
                self.first.push(String::new());
            }
            Some(why) => {
                let kind = ep
                    .rejected_kind
                    .clone()
                    .unwrap_or_else(|| "rejected".into());
                let entry =
                    self.report
                        .rejected
                        .entry(kind.clone())
                        .or_insert_with(|| Rejections {
                            count: 0,
                            first: why.clone(),
                        });
                entry.count += 1;
                if entry.count == 1 && kind != "cancelled" {
                    progress.message(&format!(
                        "episode {} (task {}) rejected ({kind}): {why} [repeats of this kind are counted in the summary]",
                        ep.episode_id, key.0
                    ));
                }
                self.first.push(format!("{kind}: {}", shape(why)));
            }
        }
        Ok(())
    }

    /// The fail-fast verdict once the first episodes are in.
    fn fail_fast(&self, total: u64) -> Option<String> {
        let n = FAIL_FAST_AFTER.min(total as usize);
        if n < 2 || self.first.len() != n || self.report.accepted > 0 {
            return None;
        }
        let same = self.first.windows(2).all(|w| w[0] == w[1]) && !self.first[0].is_empty();
        if !same || self.first[0].starts_with("cancelled") {
            return None;
        }
        let (kind, r) = self.report.rejected.iter().next()?;
        Some(format!(
            "the first {n} episodes all failed the same way ({kind}), so the job stopped instead of repeating it: {}",
            r.first
        ))
    }
}

/// A worker that stopped under a ping is being reported failed at this moment: its node's
/// report (exit status, last output of its backend) reaches the scheduler a moment after the
/// actor stops. Wait briefly for it and prefer it to the ping's bare "it stopped".
async fn failure_reason(
    scheduler: &Scheduler,
    role: &str,
    worker: &fleet_actors::WorkerId,
    ping_error: FleetError,
) -> FleetError {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(ws) = scheduler.workers(role).await {
            if let Some(WorkerState::Failed(e)) =
                ws.iter().find(|w| &w.id == worker).map(|w| &w.state)
            {
                return e.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    ping_error
}

/// How accepted episodes become trainer steps.
struct Batching {
    /// Accepted episodes per step (whole groups: a step may take a few more).
    batch_size: u64,
    /// Episodes per task.
    group_size: u32,
    /// The simulated trainer's step time.
    step_time: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    ctl: &RolloutController,
    plan: Option<Arc<super::updates::Plan>>,
    batching: Batching,
    pending: Vec<(EpisodeKey, Value)>,
    grace: Duration,
    output: &mut Output,
    report: &mut JobReport,
    opts: &mut RunOptions,
    mut curve: Option<&mut LearningCurve>,
) -> Result<(), FleetError> {
    let Batching {
        batch_size,
        group_size,
        step_time,
    } = batching;
    use std::sync::atomic::{AtomicU64, Ordering};
    let total = pending.len() as u64;
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (admit_stop_tx, admit_stop) = watch::channel(false);
    let admitted = Arc::new(AtomicU64::new(0));
    // The submitter: admission as fast as the controller allows, in task order.
    let mut submitter = Some({
        let ctl = ctl.clone();
        let tx = events_tx.clone();
        let mut stop = admit_stop.clone();
        let admitted = admitted.clone();
        tokio::spawn(async move {
            for (key, task) in pending {
                let ticket = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    t = ctl.submit(task) => t?,
                };
                admitted.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let ev = match ticket.result().await {
                        Ok(ep) => Event::Done(key, ep),
                        Err(e) => Event::Lost(key, e.to_string()),
                    };
                    let _ = tx.send(ev);
                });
            }
            Ok::<(), FleetError>(())
        })
    });
    let started = Instant::now();
    let mut state = ProgressState {
        total,
        version: ctl.version(),
        ..Default::default()
    };
    let mut tally = Tally {
        output,
        report,
        first: Vec::new(),
    };
    let mut ended = 0u64;
    // Accepted episodes the trainer has not consumed yet, in whole groups, oldest first.
    let mut untrained = super::grpo::GroupBatcher::new(group_size);
    let mut training = false;
    // The trainer step in flight: a step still running when the job ends is abandoned (its
    // episodes are all in the output; nothing waits for its version).
    let mut trainer: Option<tokio::task::JoinHandle<()>> = None;
    let mut grace_until: Option<tokio::time::Instant> = None;
    let mut cancelled = false;
    let mut aborted: Option<String> = None;
    let mut stop_watch = opts.stop.clone();
    let mut interrupted: Option<StopSignal> = None;
    loop {
        if submitter.is_none() && ended >= admitted.load(Ordering::SeqCst) {
            break;
        }
        let grace_sleep = async {
            match grace_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let submitter_done = async {
            match submitter.as_mut() {
                Some(h) => h.await,
                None => std::future::pending().await,
            }
        };
        let mut cancel_now = false;
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    Event::TrainFailed(v, why) => {
                        training = false;
                        if aborted.is_none() {
                            aborted = Some(format!("the trainer's step to version {v} failed: {why}"));
                            cancel_now = true;
                        }
                    }
                    Event::Trained(v, step, batch) => {
                        training = false;
                        state.version = v;
                        let line = version_line(v, step.as_ref(), &batch);
                        if let Some(c) = curve.as_deref_mut() {
                            let record = version_record(v, step.as_ref(), &batch, started.elapsed());
                            if let Err(e) = c.record(&record) {
                                opts.progress.message(&e);
                            }
                        }
                        tally.report.versions.push((v, batch));
                        if let Some(r) = &step {
                            tally.report.updates.push(r.clone());
                        }
                        if let Some(line) = line {
                            opts.progress.message(&line);
                        }
                        tally.output.sync().map_err(|e| FleetError::bad_request("the rollout job's output", e))?;
                        // Pushing the version to the proxies must not hold up the loop: a hung
                        // worker's push waits for its deadline (the controller holds that worker
                        // back meanwhile).
                        let ctl = ctl.clone();
                        let progress = opts.progress.clone();
                        tokio::spawn(async move {
                            if let Err(e) = ctl.set_version(v).await {
                                progress.message(&format!("the policy version could not move to {v}: {e}"));
                            }
                        });
                    }
                    Event::Lost(key, why) => {
                        ended += 1;
                        untrained.ended(key, None);
                        tally.report.rejected.entry("internal".into()).or_insert_with(|| Rejections { count: 0, first: why.clone() }).count += 1;
                        opts.progress.message(&format!("episode of task {} lost: {why}", key.0));
                    }
                    Event::Done(key, ep) => {
                        ended += 1;
                        tally.done(key, &ep, opts.progress.as_ref())?;
                        if let Some(f) = &opts.observe {
                            f(key, &ep);
                        }
                        untrained.ended(key, ep.trajectory.map(|t| super::updates::TrainItem {
                            key,
                            admitted_version: ep.admitted_version,
                            trajectory: t,
                        }));
                        if aborted.is_none() {
                            aborted = tally.fail_fast(total).or_else(|| ctl.fatal().map(|e| e.to_string()));
                            cancel_now = aborted.is_some();
                        }
                    }
                }
            }
            r = submitter_done => {
                submitter = None;
                let err = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(e) => Some(FleetError::internal(e)),
                };
                if let Some(e) = err {
                    if aborted.is_none() && interrupted.is_none() {
                        aborted = Some(ctl.fatal().unwrap_or(e).to_string());
                        cancel_now = true;
                    }
                }
            }
            r = stop_watch.changed() => {
                if r.is_err() {
                    // The driver dropped its stop sender: nothing will ask again.
                    stop_watch = watch::channel(Stop::Run).1;
                    continue;
                }
                let stop = *stop_watch.borrow();
                match stop {
                    Stop::Run => {}
                    Stop::Graceful(sig) => {
                        interrupted = Some(sig);
                        let _ = admit_stop_tx.send(true);
                        state.stopping = true;
                        grace_until = Some(tokio::time::Instant::now() + grace);
                        opts.progress.message(&format!(
                            "stopping: no new episodes; waiting up to {grace:?} for the {} in flight (Ctrl-C again cancels them now)",
                            ctl.running()
                        ));
                    }
                    Stop::Now(sig) => {
                        interrupted = Some(sig);
                        state.stopping = true;
                        cancel_now = true;
                    }
                }
            }
            _ = grace_sleep => {
                grace_until = None;
                if !cancelled {
                    opts.progress.message("the grace period is over: cancelling the episodes in flight");
                }
                cancel_now = true;
            }
        }
        // The simulated trainer: one step per batch of accepted episodes, the next as soon as
        // the last one ended and a batch is waiting.
        let more = !*admit_stop.borrow() && ended < total && aborted.is_none();
        let batch = if !training && more {
            untrained.take(batch_size)
        } else {
            None
        };
        if let Some(batch) = batch {
            training = true;
            let v = state.version + 1;
            let stats = super::grpo::BatchStats::of(&batch, state.version);
            let tx = events_tx.clone();
            let plan = plan.clone();
            trainer = Some(tokio::spawn(async move {
                let ev = match plan {
                    Some(p) => match p.step(v, batch, step_time).await {
                        Ok(r) => Event::Trained(v, Some(r), stats),
                        Err(e) => Event::TrainFailed(v, e.to_string()),
                    },
                    None => {
                        drop(batch);
                        tokio::time::sleep(step_time).await;
                        Event::Trained(v, None, stats)
                    }
                };
                let _ = tx.send(ev);
            }));
        }
        if cancel_now && !cancelled {
            cancelled = true;
            let _ = admit_stop_tx.send(true);
            ctl.cancel_all().await;
        }
        state.accepted = tally.report.accepted;
        state.rejected = tally.report.rejected_total();
        state.in_flight = ctl.running();
        state.elapsed_s = started.elapsed().as_secs_f64();
        opts.progress.update(&state);
    }
    if let Some(mut t) = trainer.take() {
        // A step still running when the last episode ended finishes (bounded), so its version
        // reaches the servers; after an interrupt or an abort it is abandoned at once.
        let wait = if interrupted.is_some() || aborted.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(10)
        };
        if tokio::time::timeout(wait, &mut t).await.is_err() {
            t.abort();
        }
    }
    state.in_flight = ctl.running();
    opts.progress.finish(&state);
    if let Some(sig) = interrupted {
        tally.report.ending = Ending::Interrupted(sig);
    } else if let Some(why) = aborted {
        tally.report.ending = Ending::Aborted(why);
    }
    Ok(())
}

/// The line printed when version `v` is made (with weights that move, or a real trainer).
fn version_line(
    v: u64,
    step: Option<&super::updates::StepReport>,
    b: &super::grpo::BatchStats,
) -> Option<String> {
    let r = step?;
    // Only versions whose weights moved get a line (the simulated trainer alone stays quiet).
    let update = r.update?;
    let mut line = format!(
        "version {v}: mean reward {:.3} over {} episodes (staleness max {}, mean {:.2})",
        b.mean_reward, b.episodes, b.staleness_max, b.staleness_mean
    );
    if let Some(g) = &r.grpo {
        line.push_str(&format!(", train step {:.0?} (loss {:.4}", r.train, g.loss));
        if g.stale_dropped > 0 || g.skipped_turns > 0 {
            line.push_str(&format!(
                ", {} stale and {} incomplete dropped",
                g.stale_dropped, g.skipped_turns
            ));
        }
        line.push(')');
        match g.max_logprob_diff {
            Some(d) => line.push_str(&format!(
                ", logprob check max |Δ| {d:.1e} over {} samples",
                g.checked_samples
            )),
            None => line.push_str(", logprob check: no sample of the trained weights"),
        }
    } else {
        line.push_str(&format!(", trained in {:.2?}", r.train));
    }
    line.push_str(&format!(", weights on the servers in {update:.2?}"));
    if !r.failed.is_empty() {
        line.push_str(&format!(
            " ({} server(s) failed and are being brought back: {})",
            r.failed.len(),
            r.failed.join("; ")
        ));
    }
    Some(line)
}

/// Version `v`'s line in `metrics.jsonl`.
fn version_record(
    v: u64,
    step: Option<&super::updates::StepReport>,
    b: &super::grpo::BatchStats,
    elapsed: Duration,
) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut o = serde_json::json!({
        "version": v,
        "mean_reward": b.mean_reward,
        "episodes": b.episodes,
        "staleness_max": b.staleness_max,
        "staleness_mean": b.staleness_mean,
        "elapsed_s": elapsed.as_secs_f64(),
    });
    if let (Some(r), Value::Object(m)) = (step, &mut o) {
        m.insert("train_ms".into(), ms(r.train).into());
        if let Some(u) = r.update {
            m.insert("update_ms".into(), ms(u).into());
        }
        m.insert("weights_bytes".into(), r.weights_bytes.into());
        m.insert("servers_failed".into(), r.failed.len().into());
        if let Some(g) = &r.grpo {
            m.insert("loss".into(), g.loss.into());
            m.insert("samples".into(), g.samples.into());
            m.insert("stale_dropped".into(), g.stale_dropped.into());
            m.insert("max_logprob_diff".into(), g.max_logprob_diff.into());
            m.insert("checked_samples".into(), g.checked_samples.into());
        }
    }
    o
}

/// `8.0 MiB`, `1.0 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut x = n as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < UNITS.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[i])
    }
}
