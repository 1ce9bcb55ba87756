//! The rollout controller: admission under the staleness bound, least-loaded dispatch, episode
//! deadlines with cancellation, pause/resume, policy versions, statistics.
//!
//! Admission follows AReaL: with `v` the current policy version,
//!
//! ```text
//! capacity = min(max_concurrent - running,
//!                (max_staleness + v + 1) * batch_size - (accepted + running))
//! ```
//!
//! so no episode runs on a policy more than `max_staleness` versions older than the trainer's.
//! Waiting for capacity is a notification (no polling) with a deadline.

use super::protocol::{
    EpisodeOutcome, EpisodeRequest, EpisodeResult, CANCEL_EPISODE, ENGINE, RUN_EPISODE, SET_VERSION,
};
use crate::scheduler::Scheduler;
use fleet_actors::{CallOptions, FleetError, WorkerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

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
    /// Longest wait for admission before `submit` gives up.
    pub admission_timeout: Duration,
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
    /// The worker that ran it.
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
    /// The exported trajectory (the proxy's export), if accepted.
    pub trajectory: Option<Value>,
    /// Why it was rejected, if it was.
    pub rejected: Option<String>,
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
    /// Running now.
    pub running: u64,
    /// Admitted per policy version.
    pub admitted_by_version: BTreeMap<u64, u64>,
    /// Output tokens of accepted episodes.
    pub output_tokens: u64,
    /// Output tokens per second since the controller started.
    pub tokens_per_s: f64,
    /// Episode latency percentiles (p50, p90, p99) in milliseconds.
    pub latency_ms: (u64, u64, u64),
    /// Whether admission is paused.
    pub paused: bool,
}

struct Ctl {
    version: u64,
    accepted: u64,
    running: u64,
    paused: bool,
    admitted_by_version: BTreeMap<u64, u64>,
    rejected: BTreeMap<String, u64>,
    load: HashMap<WorkerId, u64>,
    latencies: Vec<u64>,
    tokens: u64,
    rr: usize,
}

struct Inner {
    scheduler: Scheduler,
    workers: Vec<WorkerId>,
    config: RolloutConfig,
    state: Mutex<Ctl>,
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

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
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
        let workers: Vec<WorkerId> = scheduler
            .get_workers(role, ready_within)
            .await?
            .into_iter()
            .map(|w| w.id)
            .collect();
        if config.batch_size == 0 || config.max_concurrent == 0 {
            return Err(FleetError::bad_request(
                "rollout config",
                "batch_size and max_concurrent must be at least 1",
            ));
        }
        Ok(RolloutController {
            inner: Arc::new(Inner {
                scheduler,
                state: Mutex::new(Ctl {
                    version: 0,
                    accepted: 0,
                    running: 0,
                    paused: false,
                    admitted_by_version: BTreeMap::new(),
                    rejected: BTreeMap::new(),
                    load: workers.iter().map(|w| (w.clone(), 0)).collect(),
                    latencies: Vec::new(),
                    tokens: 0,
                    rr: 0,
                }),
                workers,
                config,
                changed: Notify::new(),
                next_id: AtomicU64::new(0),
                tag: rand::random::<u64>(),
                started: Instant::now(),
            }),
        })
    }

    fn capacity(&self, c: &Ctl) -> u64 {
        let cfg = &self.inner.config;
        let by_concurrency = cfg.max_concurrent.saturating_sub(c.running);
        let by_staleness = (cfg.max_staleness + c.version + 1)
            .saturating_mul(cfg.batch_size)
            .saturating_sub(c.accepted + c.running);
        by_concurrency.min(by_staleness)
    }

    /// Admits `task` when there is capacity (waiting, with the admission deadline) and dispatches
    /// it to the least-loaded worker.
    pub async fn submit(&self, task: Value) -> Result<EpisodeTicket, FleetError> {
        let deadline = Instant::now() + self.inner.config.admission_timeout;
        let (worker, version) = loop {
            let notified = self.inner.changed.notified();
            {
                let mut c = lock(&self.inner.state);
                if !c.paused && self.capacity(&c) > 0 {
                    let n = self.inner.workers.len();
                    let start = c.rr;
                    let pick = (0..n)
                        .map(|k| (start + k) % n)
                        .min_by_key(|i| c.load.get(&self.inner.workers[*i]).copied().unwrap_or(0))
                        .ok_or_else(|| {
                            FleetError::bad_request("submit", "the controller has no workers")
                        })?;
                    c.rr = (pick + 1) % n;
                    let w = self.inner.workers[pick].clone();
                    *c.load.entry(w.clone()).or_insert(0) += 1;
                    c.running += 1;
                    let v = c.version;
                    *c.admitted_by_version.entry(v).or_insert(0) += 1;
                    break (w, v);
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
            let ep = me.run_one(id, worker, version, task).await;
            let _ = tx.send(ep);
        });
        Ok(EpisodeTicket { episode_id: id, rx })
    }

    async fn run_one(&self, id: u64, worker: WorkerId, version: u64, task: Value) -> Episode {
        let cfg = &self.inner.config;
        let req = EpisodeRequest {
            episode_id: id,
            task_json: task.to_string(),
            deadline_ms: cfg.episode_timeout.as_millis() as u64,
            discount: cfg.discount,
        };
        let t = Instant::now();
        let opts = CallOptions::default()
            .timeout(cfg.episode_timeout + Duration::from_secs(15))
            .request_id(format!("episode-{:016x}-{id}", self.inner.tag));
        let s = &self.inner.scheduler;
        let r: Result<EpisodeResult, FleetError> =
            s.call(&worker, ENGINE, RUN_EPISODE, &req, &opts).await;
        let worker_us = r.as_ref().map(|e| e.latency_us).unwrap_or(0);
        let (trajectory, rejected, tokens) = match r {
            Ok(EpisodeResult {
                outcome:
                    EpisodeOutcome::Accepted {
                        trajectory_json,
                        output_tokens,
                        ..
                    },
                ..
            }) => match serde_json::from_str::<Value>(&trajectory_json) {
                Ok(v) => (Some(v), None, output_tokens),
                Err(e) => (
                    None,
                    Some(("proxy".to_string(), format!("trajectory is not JSON: {e}"))),
                    0,
                ),
            },
            Ok(EpisodeResult {
                outcome: EpisodeOutcome::Rejected(reason),
                ..
            }) => (
                None,
                Some((reason.key().to_string(), reason.to_string())),
                0,
            ),
            Err(e) => {
                if matches!(e, FleetError::Timeout { .. }) {
                    // Tell the worker: it kills the agent and ends the session.
                    let short = CallOptions::default()
                        .timeout(Duration::from_secs(5))
                        .idempotent(true);
                    let _ = s
                        .call::<_, bool>(&worker, ENGINE, CANCEL_EPISODE, &id, &short)
                        .await;
                }
                (None, Some((e.kind().to_string(), e.to_string())), 0)
            }
        };
        let elapsed = t.elapsed();
        let latency_ms = elapsed.as_millis() as u64;
        let overhead_us = (elapsed.as_micros() as u64).saturating_sub(worker_us);
        {
            let mut c = lock(&self.inner.state);
            c.running = c.running.saturating_sub(1);
            if let Some(l) = c.load.get_mut(&worker) {
                *l = l.saturating_sub(1);
            }
            match &rejected {
                None => {
                    c.accepted += 1;
                    c.tokens += tokens;
                    c.latencies.push(latency_ms);
                }
                Some((key, _)) => *c.rejected.entry(key.clone()).or_insert(0) += 1,
            }
        }
        self.inner.changed.notify_waiters();
        if let Some((_, why)) = &rejected {
            tracing::warn!(episode = id, worker = %worker, reason = %why, "episode rejected");
        }
        Episode {
            episode_id: id,
            task,
            worker: worker.to_string(),
            admitted_version: version,
            latency_ms,
            latency_us: elapsed.as_micros() as u64,
            overhead_us,
            trajectory,
            rejected: rejected.map(|(_, why)| why),
        }
    }

    /// Runs every task (admission in order, under the staleness bound) and returns the episodes
    /// in task order; `progress` is called as each finishes.
    pub async fn rollout_batch(
        &self,
        tasks: Vec<Value>,
        progress: impl Fn(&Episode, usize, usize) + Send + Sync,
    ) -> Result<Vec<Episode>, FleetError> {
        let total = tasks.len();
        let done = Arc::new(AtomicU64::new(0));
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
        while let Some((i, ep)) = rx.recv().await {
            let n = done.fetch_add(1, Ordering::Relaxed) as usize + 1;
            progress(&ep, n, total);
            out[i] = Some(ep);
        }
        match submitter.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(FleetError::internal(e)),
        }
        Ok(out.into_iter().flatten().collect())
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

    /// Moves the policy version: admission grows by a batch, and every worker's proxy records
    /// the new version on turns generated from now on.
    pub async fn set_version(&self, version: u64) -> Result<(), FleetError> {
        let opts = CallOptions::default()
            .timeout(Duration::from_secs(10))
            .idempotent(true);
        let s = &self.inner.scheduler;
        let pushes = self
            .inner
            .workers
            .iter()
            .map(|w| s.call::<_, u64>(w, ENGINE, SET_VERSION, &version, &opts));
        let results = futures::future::join_all(pushes).await;
        lock(&self.inner.state).version = version;
        self.inner.changed.notify_waiters();
        let errors: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FleetError::Unavailable {
                what: "set_version".into(),
                detail: errors.join("; "),
            })
        }
    }

    /// Counters and latency percentiles.
    pub fn stats(&self) -> RolloutStats {
        let c = lock(&self.inner.state);
        let mut lat = c.latencies.clone();
        lat.sort_unstable();
        let secs = self.inner.started.elapsed().as_secs_f64().max(1e-9);
        RolloutStats {
            version: c.version,
            accepted: c.accepted,
            rejected: c.rejected.clone(),
            running: c.running,
            admitted_by_version: c.admitted_by_version.clone(),
            output_tokens: c.tokens,
            tokens_per_s: c.tokens as f64 / secs,
            latency_ms: (pct(&lat, 50.0), pct(&lat, 90.0), pct(&lat, 99.0)),
            paused: c.paused,
        }
    }

    /// The workers it dispatches to.
    pub fn workers(&self) -> &[WorkerId] {
        &self.inner.workers
    }
}
