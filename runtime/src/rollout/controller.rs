//! The rollout controller: admission under the staleness bound, dispatch to healthy workers
//! only, re-queueing of episodes that failed for infrastructure reasons, episode deadlines with
//! cancellation, pause/resume, policy versions, statistics.
//!
//! Admission follows AReaL: with `v` the current policy version and `v0` the version the
//! controller started at,
//!
//! ```text
//! capacity = min(max_concurrent - running,
//!                (max_staleness + (v - v0) + 1) * batch_size - (accepted + running))
//! ```
//!
//! so no episode runs on a policy more than `max_staleness` versions older than the trainer's.
//! Waiting for capacity is a notification (no polling) with a deadline.
//!
//! Every admitted episode ends exactly once, accepted or rejected. An *infrastructure* failure
//! (the worker failed, its node was lost, its backend or proxy failed, the call timed out) is not
//! the episode's fault: the episode goes back to dispatch and runs on another worker (at most
//! `max_attempts` times in all), and it is counted once, by its final outcome. An *agent*
//! failure (the agent exited non-zero, timed out, printed garbage) rejects it. Which workers may
//! get an episode is the [`Pool`]'s business: it follows the role's membership and keeps a
//! circuit breaker per worker. When every worker has failed for good, episodes waiting for one
//! are rejected with `no_workers` and `submit` fails with the reasons: the job cannot go on.

use super::pool::{Pool, Unavailable};
use super::protocol::{
    EpisodeOutcome, EpisodeRequest, EpisodeResult, RejectReason, CANCEL_EPISODE, ENGINE,
    RUN_EPISODE, SET_VERSION,
};
use crate::scheduler::{Scheduler, WorkerState};
use fleet_actors::{CallOptions, FleetError, WorkerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// How often the controller re-reads its role's membership and re-pushes the policy version to
/// workers that missed it.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Controller settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutConfig {
    /// Episodes per training batch.
    pub batch_size: u64,
    /// How many versions older than the trainer's a running policy may be.
    pub max_staleness: u64,
    /// Episodes running at once, over all workers.
    pub max_concurrent: u64,
    /// Deadline of one episode's agent; past it the agent is killed and the episode rejected.
    pub episode_timeout: Duration,
    /// Turn discount applied at export.
    pub discount: f64,
    /// Longest wait for admission before `submit` gives up, and longest wait of an admitted
    /// episode for a healthy worker.
    pub admission_timeout: Duration,
    /// Dispatches of one episode at most (the first plus re-queues after infrastructure
    /// failures); then it is rejected with the last failure.
    pub max_attempts: u32,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            batch_size: 8,
            max_staleness: 1,
            max_concurrent: 16,
            episode_timeout: Duration::from_secs(300),
            discount: 1.0,
            admission_timeout: Duration::from_secs(600),
            max_attempts: 4,
        }
    }
}

/// One finished episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Its id.
    pub episode_id: u64,
    /// The task it ran.
    pub task: Value,
    /// The worker that ran it (the last one, if it was re-queued).
    pub worker: String,
    /// The policy version when it was admitted.
    pub admitted_version: u64,
    /// Wall time seen by the controller, in milliseconds.
    pub latency_ms: u64,
    /// The same in microseconds.
    pub latency_us: u64,
    /// Of which the controller's own share (dispatch, admission bookkeeping, the call hops), in
    /// microseconds: controller-seen time minus the worker's time.
    pub overhead_us: u64,
    /// Dispatches it took (1 unless infrastructure failures re-queued it).
    pub attempts: u32,
    /// The exported trajectory (the proxy's export), if accepted.
    pub trajectory: Option<Value>,
    /// Why it was rejected, if it was.
    pub rejected: Option<String>,
    /// The short key of the rejection (`agent_failed`, `no_workers`, ...), if it was.
    pub rejected_kind: Option<String>,
}

/// Counters and latency percentiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutStats {
    /// The current policy version.
    pub version: u64,
    /// Accepted episodes.
    pub accepted: u64,
    /// Rejected episodes by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Running now (admitted and not ended, including those waiting for a worker).
    pub running: u64,
    /// Admitted per policy version.
    pub admitted_by_version: BTreeMap<u64, u64>,
    /// Re-dispatches after infrastructure failures, by the failure's key.
    pub requeued: BTreeMap<String, u64>,
    /// Output tokens of accepted episodes.
    pub output_tokens: u64,
    /// Output tokens per second since the controller started.
    pub tokens_per_s: f64,
    /// Episode latency percentiles (p50, p90, p99) in milliseconds, within 3%, over the most
    /// recent 10,000 to 20,000 accepted episodes (fixed memory, see [`super::latency`]).
    pub latency_ms: (u64, u64, u64),
    /// Whether admission is paused.
    pub paused: bool,
    /// Workers that may get an episode now, of all the controller knows.
    pub workers_available: (usize, usize),
}

struct Ctl {
    version: u64,
    accepted: u64,
    running: u64,
    paused: bool,
    admitted_by_version: BTreeMap<u64, u64>,
    rejected: BTreeMap<String, u64>,
    requeued: BTreeMap<String, u64>,
    pool: Pool,
    /// Episodes on a worker now: id -> worker.
    on_worker: HashMap<u64, WorkerId>,
    latencies: super::latency::Latencies,
    tokens: u64,
    /// Set when every worker failed for good.
    fatal: Option<FleetError>,
    /// Set by `cancel_all`: nothing is dispatched or re-queued any more.
    cancelled: bool,
}

/// Counts a finished episode in the process's metrics (`fleet_episodes_total`, the gauges of
/// episodes in flight and output tokens, and the accepted episode's staleness: versions the
/// policy moved while it ran).
fn observe_episode<T>(inner: &Inner, accepted: Option<&T>, admitted_version: u64) {
    let (running, version, tokens) = {
        let c = lock(&inner.state);
        (c.running, c.version, c.tokens)
    };
    let outcome = if accepted.is_some() {
        "accepted"
    } else {
        "rejected"
    };
    metrics::counter!("fleet_episodes_total", "outcome" => outcome).increment(1);
    metrics::gauge!("fleet_episodes_in_flight").set(running as f64);
    metrics::counter!("fleet_output_tokens_total").absolute(tokens);
    if accepted.is_some() {
        metrics::histogram!("fleet_staleness")
            .record(version.saturating_sub(admitted_version) as f64);
    }
}

struct Inner {
    scheduler: Scheduler,
    role: String,
    config: RolloutConfig,
    start_version: u64,
    state: Mutex<Ctl>,
    /// Held while versions are pushed, so pushes never overtake one another (a proxy never
    /// goes back to an older version).
    pushing: tokio::sync::Mutex<()>,
    changed: Notify,
    next_id: AtomicU64,
    tag: u64,
    started: Instant,
}

/// Dispatches episodes to the rollout workers of one role. Cheap to clone.
#[derive(Clone)]
pub struct RolloutController {
    inner: Arc<Inner>,
}

/// An admitted episode; await it for the result.
#[derive(Debug)]
pub struct EpisodeTicket {
    /// The episode id.
    pub episode_id: u64,
    rx: oneshot::Receiver<Episode>,
}

impl EpisodeTicket {
    /// Waits for the episode (it always ends: the worker enforces the agent deadline and the
    /// controller its own).
    pub async fn result(self) -> Result<Episode, FleetError> {
        self.rx
            .await
            .map_err(|_| FleetError::internal("the episode task ended without a result"))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn far(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// What one dispatch of an episode came to.
enum Attempt {
    Accepted {
        trajectory: Value,
        tokens: u64,
    },
    /// The episode's own failure: final.
    Rejected {
        key: String,
        why: String,
    },
    /// Not the episode's fault: run it elsewhere.
    Infra {
        key: String,
        why: String,
    },
}

/// Output tokens of a trajectory: the `output_token_ids` of its turns.
fn output_tokens(t: &Value) -> u64 {
    t.get("turns")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.get("output_token_ids").and_then(Value::as_array))
                .map(|a| a.len() as u64)
                .sum()
        })
        .unwrap_or(0)
}

/// Whether a failed call to a rollout worker says nothing about the episode itself.
fn infra_error(e: &FleetError) -> bool {
    !matches!(
        e,
        FleetError::BadRequest { .. }
            | FleetError::PayloadTooLarge { .. }
            | FleetError::MethodNotFound { .. }
            | FleetError::EngineNotFound { .. }
    )
}

impl RolloutController {
    /// A controller over the rollout workers of `role` (created with `WorkerKind::Rollout`),
    /// after waiting for them to be ready.
    pub async fn new(
        scheduler: Scheduler,
        role: &str,
        config: RolloutConfig,
        ready_within: Duration,
    ) -> Result<Self, FleetError> {
        Self::starting_at(scheduler, role, config, ready_within, 0).await
    }

    /// The same, starting at policy `version` (a resumed job): the staleness bound counts from
    /// there, and every worker's proxy is told the version before the first episode.
    pub async fn starting_at(
        scheduler: Scheduler,
        role: &str,
        config: RolloutConfig,
        ready_within: Duration,
        version: u64,
    ) -> Result<Self, FleetError> {
        if config.batch_size == 0 || config.max_concurrent == 0 {
            return Err(FleetError::bad_request(
                "rollout config",
                "batch_size and max_concurrent must be at least 1",
            ));
        }
        let workers: Vec<WorkerId> = scheduler
            .get_workers(role, ready_within)
            .await?
            .into_iter()
            .map(|w| w.id)
            .collect();
        let ctl = RolloutController {
            inner: Arc::new(Inner {
                scheduler,
                role: role.to_string(),
                start_version: version,
                state: Mutex::new(Ctl {
                    version,
                    accepted: 0,
                    running: 0,
                    paused: false,
                    admitted_by_version: BTreeMap::new(),
                    rejected: BTreeMap::new(),
                    requeued: BTreeMap::new(),
                    pool: Pool::new(workers, 0),
                    on_worker: HashMap::new(),
                    latencies: super::latency::Latencies::new(),
                    tokens: 0,
                    fatal: None,
                    cancelled: false,
                }),
                config: RolloutConfig {
                    max_attempts: config.max_attempts.max(1),
                    ..config
                },
                pushing: tokio::sync::Mutex::new(()),
                changed: Notify::new(),
                next_id: AtomicU64::new(0),
                tag: rand::random::<u64>(),
                started: Instant::now(),
            }),
        };
        // Every proxy records `version` from the first turn (version 0 is their default).
        if version > 0 {
            ctl.push_version(version).await;
        } else {
            let mut c = lock(&ctl.inner.state);
            for w in c.pool.all() {
                c.pool.set_version(&w, 0, true);
            }
        }
        follow(Arc::downgrade(&ctl.inner));
        Ok(ctl)
    }

    fn capacity(&self, c: &Ctl) -> u64 {
        let cfg = &self.inner.config;
        let by_concurrency = cfg.max_concurrent.saturating_sub(c.running);
        let versions = c.version.saturating_sub(self.inner.start_version);
        let by_staleness = (cfg.max_staleness + versions + 1)
            .saturating_mul(cfg.batch_size)
            .saturating_sub(c.accepted + c.running);
        by_concurrency.min(by_staleness)
    }

    /// Admits `task` when there is capacity (waiting, with the admission deadline) and
    /// dispatches it to the least-loaded healthy worker. Fails when the admission deadline
    /// passes, when every worker has failed for good, or after [`cancel_all`](Self::cancel_all).
    pub async fn submit(&self, task: Value) -> Result<EpisodeTicket, FleetError> {
        let deadline = far(Instant::now(), self.inner.config.admission_timeout);
        let version = loop {
            let notified = self.inner.changed.notified();
            {
                let mut c = lock(&self.inner.state);
                if let Some(e) = &c.fatal {
                    return Err(e.clone());
                }
                if c.cancelled {
                    return Err(FleetError::Unavailable {
                        what: format!("rollout role {:?}", self.inner.role),
                        detail: "the controller was cancelled; it admits no more episodes".into(),
                    });
                }
                if !c.paused && self.capacity(&c) > 0 {
                    c.running += 1;
                    let v = c.version;
                    *c.admitted_by_version.entry(v).or_insert(0) += 1;
                    break v;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let c = lock(&self.inner.state);
                return Err(FleetError::timeout(
                    format!(
                        "admission of an episode (version {}, {} accepted, {} running, paused: {}); the staleness bound admits more when the version moves: call set_version",
                        c.version, c.accepted, c.running, c.paused
                    ),
                    self.inner.config.admission_timeout,
                ));
            }
            let _ = tokio::time::timeout(left, notified).await;
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let ep = me.run_one(id, version, task).await;
            let _ = tx.send(ep);
        });
        Ok(EpisodeTicket { episode_id: id, rx })
    }

    /// Waits for a worker that may take an episode, or says why there is none.
    async fn pick(&self) -> Result<WorkerId, (String, String)> {
        let deadline = far(Instant::now(), self.inner.config.admission_timeout);
        loop {
            let notified = self.inner.changed.notified();
            let wait_until = {
                let mut c = lock(&self.inner.state);
                if c.cancelled {
                    return Err(("cancelled".into(), "cancelled by the controller".into()));
                }
                let v = c.version;
                match c.pool.pick(Instant::now(), v) {
                    Ok(w) => return Ok(w),
                    Err(Unavailable::AllFailed(why)) => {
                        let detail = why
                            .iter()
                            .map(|(w, r)| format!("{w}: {r}"))
                            .collect::<Vec<_>>()
                            .join("; ");
                        let e = FleetError::Unavailable {
                            what: format!("rollout role {:?}", self.inner.role),
                            detail: format!(
                                "every rollout worker has failed, so no episode can run ({detail}); recreate the workers or fix their backends"
                            ),
                        };
                        let msg = e.to_string();
                        c.fatal.get_or_insert(e);
                        drop(c);
                        self.inner.changed.notify_waiters();
                        return Err(("no_workers".into(), msg));
                    }
                    Err(Unavailable::Wait(t)) => t,
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err((
                    "no_workers".into(),
                    format!(
                        "no healthy rollout worker of role {:?} within {:?}",
                        self.inner.role, self.inner.config.admission_timeout
                    ),
                ));
            }
            let until = wait_until.unwrap_or(deadline).min(deadline).max(now);
            let _ = tokio::time::timeout(until - now + Duration::from_millis(1), notified).await;
        }
    }

    async fn attempt(&self, id: u64, worker: &WorkerId, task: &Value) -> (Attempt, u64) {
        let cfg = &self.inner.config;
        let req = EpisodeRequest {
            episode_id: id,
            task_json: task.to_string(),
            deadline_ms: cfg.episode_timeout.as_millis().min(u64::MAX as u128) as u64,
            discount: cfg.discount,
        };
        let opts = CallOptions::default()
            .timeout(cfg.episode_timeout.saturating_add(Duration::from_secs(15)))
            .request_id(format!("episode-{:016x}-{id}", self.inner.tag));
        let s = &self.inner.scheduler;
        let r: Result<EpisodeResult, FleetError> =
            s.call(worker, ENGINE, RUN_EPISODE, &req, &opts).await;
        let worker_us = r.as_ref().map(|e| e.latency_us).unwrap_or(0);
        let a = match r {
            Ok(EpisodeResult {
                outcome:
                    EpisodeOutcome::Accepted {
                        trajectory_json, ..
                    },
                ..
            }) => match serde_json::from_str::<Value>(&trajectory_json) {
                Ok(v) => {
                    let tokens = output_tokens(&v);
                    Attempt::Accepted {
                        trajectory: v,
                        tokens,
                    }
                }
                Err(e) => Attempt::Rejected {
                    key: "proxy".into(),
                    why: format!("trajectory is not JSON: {e}"),
                },
            },
            Ok(EpisodeResult {
                outcome: EpisodeOutcome::Rejected(reason),
                ..
            }) => match &reason {
                RejectReason::Proxy(_) | RejectReason::Infra(_) => Attempt::Infra {
                    key: reason.key().into(),
                    why: reason.to_string(),
                },
                _ => Attempt::Rejected {
                    key: reason.key().into(),
                    why: reason.to_string(),
                },
            },
            Err(e) => {
                if matches!(e, FleetError::Timeout { .. }) {
                    // Tell the worker: it kills the agent and ends the session.
                    let short = CallOptions::default()
                        .timeout(Duration::from_secs(5))
                        .idempotent(true);
                    let _ = s
                        .call::<_, bool>(worker, ENGINE, CANCEL_EPISODE, &id, &short)
                        .await;
                }
                if infra_error(&e) {
                    Attempt::Infra {
                        key: e.kind().to_string(),
                        why: e.to_string(),
                    }
                } else {
                    Attempt::Rejected {
                        key: e.kind().to_string(),
                        why: e.to_string(),
                    }
                }
            }
        };
        (a, worker_us)
    }

    async fn run_one(&self, id: u64, version: u64, task: Value) -> Episode {
        let t = Instant::now();
        let max = self.inner.config.max_attempts;
        let mut attempts = 0u32;
        let mut worker_us = 0;
        let mut last_worker = String::new();
        let outcome: Result<(Value, u64), (String, String)> = loop {
            let worker = match self.pick().await {
                Ok(w) => w,
                Err(e) => break Err(e),
            };
            attempts += 1;
            last_worker = worker.to_string();
            lock(&self.inner.state).on_worker.insert(id, worker.clone());
            let (a, us) = self.attempt(id, &worker, &task).await;
            worker_us = us;
            let requeue = {
                let mut c = lock(&self.inner.state);
                c.on_worker.remove(&id);
                let now = Instant::now();
                match a {
                    Attempt::Accepted { trajectory, tokens } => {
                        c.pool.finished(&worker, Ok(true), now);
                        break Ok((trajectory, tokens));
                    }
                    // A cancellation the controller did not ask for: the worker stopped
                    // (deleted, failed, fenced) under the episode.
                    Attempt::Rejected { key, why } if key == "cancelled" && !c.cancelled => {
                        c.pool.finished(&worker, Err(why.clone()), now);
                        if attempts >= max {
                            break Err((
                                key,
                                format!("gave up after {attempts} dispatches; the last: {why}"),
                            ));
                        }
                        *c.requeued.entry("worker_stopped".into()).or_insert(0) += 1;
                        why
                    }
                    Attempt::Rejected { key, why } => {
                        c.pool.finished(&worker, Ok(false), now);
                        break Err((key, why));
                    }
                    Attempt::Infra { key, why } => {
                        c.pool.finished(&worker, Err(why.clone()), now);
                        if c.cancelled {
                            break Err(("cancelled".into(), "cancelled by the controller".into()));
                        }
                        if attempts >= max {
                            break Err((
                                key,
                                format!("gave up after {attempts} dispatches; the last: {why}"),
                            ));
                        }
                        *c.requeued.entry(key).or_insert(0) += 1;
                        why
                    }
                }
            };
            tracing::info!(episode = id, worker = %worker, reason = %requeue, "episode re-queued after an infrastructure failure");
            self.inner.changed.notify_waiters();
            // Its membership may have changed (a failed worker): look again now.
            self.sync_membership().await;
        };
        let elapsed = t.elapsed();
        let latency_ms = elapsed.as_millis() as u64;
        let overhead_us = (elapsed.as_micros() as u64).saturating_sub(worker_us);
        let (trajectory, rejected) = {
            let mut c = lock(&self.inner.state);
            c.running = c.running.saturating_sub(1);
            match outcome {
                Ok((traj, tokens)) => {
                    c.accepted += 1;
                    c.tokens += tokens;
                    c.latencies.record(latency_ms);
                    (Some(traj), None)
                }
                Err((key, why)) => {
                    *c.rejected.entry(key.clone()).or_insert(0) += 1;
                    (None, Some((key, why)))
                }
            }
        };
        self.inner.changed.notify_waiters();
        observe_episode(&self.inner, trajectory.as_ref(), version);
        if let Some((_, why)) = &rejected {
            tracing::debug!(episode = id, worker = %last_worker, reason = %why, "episode rejected");
        }
        Episode {
            episode_id: id,
            task,
            worker: last_worker,
            admitted_version: version,
            latency_ms,
            latency_us: elapsed.as_micros() as u64,
            overhead_us,
            attempts,
            trajectory,
            rejected_kind: rejected.as_ref().map(|(k, _)| k.clone()),
            rejected: rejected.map(|(_, why)| why),
        }
    }

    /// Re-reads the role's membership from the scheduler into the pool.
    async fn sync_membership(&self) {
        sync_membership(&self.inner).await;
    }

    /// Runs every task (admission in order, under the staleness bound) and returns the episodes
    /// in task order; `progress` is called as each finishes. On an admission error the episodes
    /// already admitted still finish, and are lost: use
    /// [`rollout_batch_partial`](Self::rollout_batch_partial) to keep them.
    pub async fn rollout_batch(
        &self,
        tasks: Vec<Value>,
        progress: impl Fn(&Episode, usize, usize) + Send + Sync,
    ) -> Result<Vec<Episode>, FleetError> {
        let (eps, err) = self.rollout_batch_partial(tasks, progress).await;
        match err {
            Some(e) => Err(e),
            None => Ok(eps),
        }
    }

    /// Like [`rollout_batch`](Self::rollout_batch), but an admission error stops admission
    /// only: every episode admitted before it is waited for and returned beside the error.
    pub async fn rollout_batch_partial(
        &self,
        tasks: Vec<Value>,
        progress: impl Fn(&Episode, usize, usize) + Send + Sync,
    ) -> (Vec<Episode>, Option<FleetError>) {
        let total = tasks.len();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Episode)>();
        let submitter = {
            let me = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for (i, task) in tasks.into_iter().enumerate() {
                    let ticket = me.submit(task).await?;
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(ep) = ticket.result().await {
                            let _ = tx.send((i, ep));
                        }
                    });
                }
                Ok::<(), FleetError>(())
            })
        };
        drop(tx);
        let mut out: Vec<Option<Episode>> = (0..total).map(|_| None).collect();
        let mut done = 0;
        while let Some((i, ep)) = rx.recv().await {
            done += 1;
            progress(&ep, done, total);
            out[i] = Some(ep);
        }
        let err = match submitter.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(FleetError::internal(e)),
        };
        (out.into_iter().flatten().collect(), err)
    }

    /// Stops admitting episodes (running ones finish).
    pub fn pause(&self) {
        lock(&self.inner.state).paused = true;
    }

    /// Admits episodes again.
    pub fn resume(&self) {
        lock(&self.inner.state).paused = false;
        self.inner.changed.notify_waiters();
    }

    /// Cancels every episode: nothing more is admitted or dispatched, episodes waiting for a
    /// worker end as `cancelled`, and each running one is told to stop (its agent is killed and
    /// its session ended; it ends as `cancelled`). Returns how many were running on workers.
    pub async fn cancel_all(&self) -> usize {
        let running: Vec<(u64, WorkerId)> = {
            let mut c = lock(&self.inner.state);
            c.cancelled = true;
            c.on_worker.iter().map(|(i, w)| (*i, w.clone())).collect()
        };
        self.inner.changed.notify_waiters();
        let short = CallOptions::default()
            .timeout(Duration::from_secs(5))
            .idempotent(true);
        let s = &self.inner.scheduler;
        let calls = running
            .iter()
            .map(|(id, w)| s.call::<_, bool>(w, ENGINE, CANCEL_EPISODE, id, &short));
        futures::future::join_all(calls).await;
        running.len()
    }

    /// Moves the policy version: admission grows by a batch, and every worker's proxy records
    /// the new version on turns generated from now on. A worker whose proxy cannot be told gets
    /// no episodes until a later push reaches it (the controller keeps trying), so no turn is
    /// recorded under a wrong version; the move fails only when no worker has the new version.
    pub async fn set_version(&self, version: u64) -> Result<(), FleetError> {
        let errors = self.push_version(version).await;
        let alive = lock(&self.inner.state).pool.alive().len();
        if !errors.is_empty() && errors.len() >= alive {
            return Err(FleetError::Unavailable {
                what: format!("set_version({version}) on role {:?}", self.inner.role),
                detail: format!(
                    "no worker's proxy took the version: {}",
                    errors
                        .iter()
                        .map(|(w, e)| format!("{w}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
        }
        if !errors.is_empty() {
            tracing::warn!(version, failed = errors.len(), "some workers did not take the new policy version; they get no episodes until they do");
        }
        Ok(())
    }

    /// Pushes `version` to every live worker, records who has it, moves the controller's version
    /// and wakes admission. Returns the workers that failed.
    async fn push_version(&self, version: u64) -> Vec<(WorkerId, FleetError)> {
        {
            let mut c = lock(&self.inner.state);
            c.version = c.version.max(version);
            metrics::gauge!("fleet_policy_version").set(c.version as f64);
        }
        let _one_at_a_time = self.inner.pushing.lock().await;
        // The newest version, whichever call got here first.
        let (targets, version) = {
            let c = lock(&self.inner.state);
            (c.pool.alive(), c.version)
        };
        let errors = push(&self.inner, &targets, version).await;
        self.inner.changed.notify_waiters();
        errors
    }

    /// Sends one admin request to the router of every live worker's proxy (a weight update's
    /// drain, restore, fail, pause-all); each answer or why there is none.
    pub async fn router_admin(
        &self,
        path: &str,
        body: &Value,
        node: Option<&str>,
    ) -> Vec<Result<Value, String>> {
        let mut targets = lock(&self.inner.state).pool.alive();
        if let Some(node) = node {
            // Only the routers of that node know its servers (by 127.0.0.1 URLs).
            let on: std::collections::BTreeSet<WorkerId> =
                match self.inner.scheduler.workers(&self.inner.role).await {
                    Ok(ws) => ws
                        .into_iter()
                        .filter(|w| w.node.to_string() == node)
                        .map(|w| w.id)
                        .collect(),
                    Err(e) => return vec![Err(e.to_string())],
                };
            targets.retain(|w| on.contains(w));
        }
        let wait = body
            .get("timeout_secs")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map_or(Duration::from_secs(30), |t| {
                Duration::from_secs_f64(t.min(3600.0))
            });
        let opts = CallOptions::default()
            .timeout(wait + Duration::from_secs(15))
            .idempotent(true);
        let arg = super::protocol::RouterAdmin {
            path: path.to_string(),
            body: body.to_string(),
        };
        let s = &self.inner.scheduler;
        let calls = targets
            .iter()
            .map(|w| s.call::<_, String>(w, ENGINE, super::protocol::ROUTER_ADMIN, &arg, &opts));
        futures::future::join_all(calls)
            .await
            .into_iter()
            .zip(&targets)
            .map(|(r, w)| match r {
                Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{w}: {e}")),
                Err(e) => Err(format!("{w}: {e}")),
            })
            .collect()
    }

    /// Episodes admitted and not ended (cheap).
    pub fn running(&self) -> u64 {
        lock(&self.inner.state).running
    }

    /// The current policy version.
    pub fn version(&self) -> u64 {
        lock(&self.inner.state).version
    }

    /// Counters and latency percentiles.
    pub fn stats(&self) -> RolloutStats {
        let c = lock(&self.inner.state);
        let secs = self.inner.started.elapsed().as_secs_f64().max(1e-9);
        let now = Instant::now();
        let all = c.pool.all();
        let available = all
            .iter()
            .filter(|w| c.pool.held(w, now, c.version).is_none())
            .count();
        RolloutStats {
            version: c.version,
            accepted: c.accepted,
            rejected: c.rejected.clone(),
            running: c.running,
            admitted_by_version: c.admitted_by_version.clone(),
            requeued: c.requeued.clone(),
            output_tokens: c.tokens,
            tokens_per_s: c.tokens as f64 / secs,
            latency_ms: (
                c.latencies.percentile(50.0),
                c.latencies.percentile(90.0),
                c.latencies.percentile(99.0),
            ),
            paused: c.paused,
            workers_available: (available, all.len()),
        }
    }

    /// The workers it knows (failed ones included).
    pub fn workers(&self) -> Vec<WorkerId> {
        lock(&self.inner.state).pool.all()
    }

    /// Why each worker that gets no episodes now is held back.
    pub fn held(&self) -> Vec<(WorkerId, super::pool::Held)> {
        let c = lock(&self.inner.state);
        let now = Instant::now();
        c.pool
            .all()
            .into_iter()
            .filter_map(|w| c.pool.held(&w, now, c.version).map(|h| (w, h)))
            .collect()
    }

    /// The error that stops the controller for good (every worker failed), if any.
    pub fn fatal(&self) -> Option<FleetError> {
        lock(&self.inner.state).fatal.clone()
    }
}

async fn push(inner: &Inner, targets: &[WorkerId], version: u64) -> Vec<(WorkerId, FleetError)> {
    let opts = CallOptions::default()
        .timeout(Duration::from_secs(10))
        .idempotent(true);
    let s = &inner.scheduler;
    let pushes = targets
        .iter()
        .map(|w| s.call::<_, u64>(w, ENGINE, SET_VERSION, &version, &opts));
    let results = futures::future::join_all(pushes).await;
    let mut errors = Vec::new();
    let mut c = lock(&inner.state);
    for (w, r) in targets.iter().zip(results) {
        c.pool.set_version(w, version, r.is_ok());
        if let Err(e) = r {
            errors.push((w.clone(), e));
        }
    }
    errors
}

async fn sync_membership(inner: &Inner) -> bool {
    let Ok(workers) = inner.scheduler.workers(&inner.role).await else {
        return false;
    };
    let seen: Vec<(WorkerId, Option<String>)> = workers
        .into_iter()
        .filter(|w| !matches!(w.state, WorkerState::Starting))
        .map(|w| {
            let failed = match w.state {
                WorkerState::Failed(e) => Some(e.to_string()),
                _ => None,
            };
            (w.id, failed)
        })
        .collect();
    let changed = {
        // New and recreated workers start at version 0 (a fresh proxy's), so the follower pushes
        // the current version to them before they get an episode.
        lock(&inner.state).pool.sync(&seen, 0)
    };
    if changed {
        inner.changed.notify_waiters();
    }
    changed
}

/// Follows the role while any handle to the controller lives: membership into the pool, and the
/// current version to workers that do not have it (new, recreated, or a missed push).
fn follow(inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let Some(inner) = inner.upgrade() else { return };
            sync_membership(&inner).await;
            let (behind, v) = {
                let c = lock(&inner.state);
                (c.pool.behind(c.version), c.version)
            };
            if !behind.is_empty() {
                if let Ok(_one_at_a_time) = inner.pushing.try_lock() {
                    push(&inner, &behind, v).await;
                    inner.changed.notify_waiters();
                }
            }
        }
    });
}
