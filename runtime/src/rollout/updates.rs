//! A rollout job's inference pool and weight updates: the `[inference]` and `[weights]` tables
//! turned into workers (a role of inference servers, a trainer worker hosting `sim-trainer`) and
//! a [`Coordinator`] that moves the servers at every trainer step.
//!
//! With `[inference]`, the rollout workers get no backend of their own: each worker's proxy
//! routes over the pool's servers on its node (`Backend::Pool`). With `[weights]` too, every
//! trainer step writes a weights file (on the trainer's node; the same path is loaded by the
//! servers, so for now the trainer and the servers share a node or a file system) and the
//! coordinator moves every server to the new version, rolling or stop-the-world, before the
//! trainer's version moves; a server that fails or restarts is taken out of the routers and
//! loaded at the current version before it serves again ([`Plan::supervise`]).

use super::controller::RolloutController;
use crate::scheduler::{EngineHandle, Scheduler};
use crate::weights::api::ViaScheduler;
use crate::weights::coordinator::{PathPattern, Timeouts, WeightsSource};
use crate::weights::trainer::{self, TrainStep, Trained};
use crate::weights::{Coordinator, Routers, Server, UpdateMode, WeightApi};
use fleet_actors::{
    CallOptions, FleetError, HttpServiceSpec, Job, PoolServer, RestartPolicy, SchedulingSpec,
    WorkerKind,
};
use futures::future::BoxFuture;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The routers of a rollout role: every live worker's proxy.
pub struct ControllerRouters(pub RolloutController);

impl Routers for ControllerRouters {
    fn admin(
        &self,
        path: &str,
        body: Value,
        node: Option<&str>,
    ) -> BoxFuture<'_, Vec<Result<Value, String>>> {
        let path = path.to_string();
        let node = node.map(str::to_string);
        Box::pin(async move { self.0.router_admin(&path, &body, node.as_deref()).await })
    }
}

/// Where the servers load version N from: the trainer's store object, as a path on the
/// server's node (the object's own file on its node, no copy; a streamed, checksummed copy
/// into that node's store elsewhere), or the trainer's weights directory when its node has no
/// store.
pub struct StoreSource {
    objects: std::sync::Mutex<std::collections::BTreeMap<u64, crate::store::ObjectRef>>,
    fallback: PathPattern,
}

impl StoreSource {
    fn keep(&self, version: u64, obj: crate::store::ObjectRef) {
        let mut m = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(version, obj);
        // The current version and the one before are what a load or a recovery asks for.
        while m.len() > 2 {
            if let Some((_, old)) = m.pop_first() {
                if let Some(s) = crate::store::Store::for_node(&old.node) {
                    s.delete(&old.id);
                }
            }
        }
    }
}

impl WeightsSource for StoreSource {
    fn path_on(&self, node: &str, version: u64) -> BoxFuture<'_, Result<PathBuf, String>> {
        let obj = self
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&version)
            .cloned();
        let node = node.to_string();
        Box::pin(async move {
            let Some(obj) = obj else {
                return self.fallback.path_on(&node, version).await;
            };
            let store = crate::store::Store::for_node(&node).ok_or_else(|| {
                format!(
                    "version {version}'s weights are object {} in node {}'s store; node {node}'s store does not run in this process, and fetching to another process's node from the job is not built yet: put the inference servers on the trainer's node",
                    obj.id, obj.node
                )
            })?;
            store
                .fetch_to_local(&obj, Some(Duration::from_secs(3600)))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// What the job needs to start its pool and trainer.
#[derive(Clone, Debug)]
pub struct PoolPlan {
    /// The inference servers' role.
    pub role: String,
    /// How many.
    pub servers: u32,
    /// Their command (with `{port}`).
    pub spec: HttpServiceSpec,
    /// CPU and GPU per server.
    pub cpu: f64,
    /// GPUs per server.
    pub gpu: u32,
    /// Their weight API.
    pub api: WeightApi,
}

/// The `[weights]` plan.
#[derive(Clone, Debug)]
pub struct WeightsPlan {
    /// The trainer's role.
    pub role: String,
    /// Rolling or stop-the-world.
    pub mode: UpdateMode,
    /// Bytes of weights per version.
    pub size: u64,
    /// Where the trainer writes them.
    pub dir: PathBuf,
    /// Drain and load deadlines.
    pub timeouts: Timeouts,
    /// The GRPO trainer instead of the simulated one (`[trainer] kind = "grpo"`).
    pub grpo: Option<super::grpo::GrpoPlan>,
}

/// The inference pool and trainer, once started.
pub struct Plan {
    /// The pool's servers (for the rollout workers' `Backend::Pool`).
    pub servers: Vec<PoolServer>,
    /// The roles the plan created (deleted at the end of the job).
    pub roles: Vec<String>,
    pool: PoolPlan,
    weights: Option<(WeightsPlan, EngineHandle)>,
    coordinator: Option<Arc<Coordinator>>,
    source: Option<Arc<StoreSource>>,
    /// Makes the trainer's request ids unique to this run (a re-sent step keeps its id).
    nonce: String,
}

/// One accepted episode, as the trainer gets it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainItem {
    /// `(task_index, sample)`: the task is the GRPO group.
    pub key: super::output::EpisodeKey,
    /// The version it was admitted at.
    pub admitted_version: u64,
    /// The proxy's export (turns with token ids, logprobs, versions, rewards).
    pub trajectory: Value,
}

/// One trainer step's timings.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// The version produced.
    pub version: u64,
    /// The optimizer step (the trainer engine's call).
    pub train: Duration,
    /// The weight update over the servers (`None` without `[weights]`).
    pub update: Option<Duration>,
    /// Servers that failed during the update.
    pub failed: Vec<String>,
    /// The weights' size.
    pub weights_bytes: u64,
    /// Whether they went through the object store (the data plane).
    pub in_store: bool,
    /// What the GRPO trainer reported (`None` for the simulated trainer).
    pub grpo: Option<GrpoStep>,
}

/// What one GRPO step reported.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoStep {
    /// The loss before the update.
    pub loss: f64,
    /// Samples trained on.
    pub samples: u64,
    /// Samples dropped for staleness by the trainer.
    pub stale_dropped: u64,
    /// Turns that were not complete training records (skipped).
    pub skipped_turns: u64,
    /// The largest |recomputed − recorded| logprob over the samples of the trainer's current
    /// weights (`None` when the batch had none).
    pub max_logprob_diff: Option<f64>,
    /// Samples compared for it.
    pub checked_samples: u64,
    /// Whether the trainer answered from its record (a re-sent step, not applied twice).
    pub replayed: bool,
}

impl Plan {
    /// Creates the pool's servers (restarted on failure) and, with `[weights]`, the trainer
    /// worker and its engine; waits for them to be ready within `ready_within`. Every worker's
    /// spec starts from `base` (the job's own environment).
    pub async fn start(
        scheduler: &Scheduler,
        base: SchedulingSpec,
        pool: PoolPlan,
        weights: Option<WeightsPlan>,
        ready_within: Duration,
    ) -> Result<Plan, FleetError> {
        let mut spec = pool.spec.clone();
        if spec.restart == RestartPolicy::Never {
            spec.restart = RestartPolicy::OnFailure {
                max_restarts: 5,
                backoff_ms: 200,
            };
        }
        let mut roles = Vec::new();
        // The trainer first: the GRPO trainer creates the model directory the servers load.
        let weights = match weights {
            None => None,
            Some(w) => {
                scheduler
                    .create_workers(Job::new(w.role.clone(), 1).spec(base.clone()))
                    .await?;
                roles.push(w.role.clone());
                let t = scheduler.get_workers(&w.role, ready_within).await?;
                let worker = t.first().map(|i| i.id.clone()).ok_or_else(|| {
                    FleetError::bad_request("the trainer", "its worker did not start")
                })?;
                let h = match &w.grpo {
                    None => {
                        scheduler
                            .create_engine(&worker, "trainer", trainer::ENGINE_TYPE, &())
                            .await?
                    }
                    Some(g) => {
                        // Creating the model and its warm-up take seconds to minutes.
                        let opts = CallOptions::default().timeout(ready_within);
                        scheduler
                            .create_engine_with(
                                &worker,
                                "trainer",
                                fleet_policy::engine::ENGINE_TYPE,
                                &g.config,
                                &opts,
                            )
                            .await?
                    }
                };
                Some((w, h))
            }
        };
        let job = Job::new(pool.role.clone(), pool.servers)
            .kind(WorkerKind::HttpService(spec))
            .spec(base.clone().cpu(pool.cpu).gpu(pool.gpu).ports(1));
        scheduler.create_workers(job).await?;
        roles.push(pool.role.clone());
        let workers = scheduler.get_workers(&pool.role, ready_within).await?;
        let servers = workers
            .iter()
            .map(|w| PoolServer {
                node: w.node.to_string(),
                port: w.ports.first().copied().unwrap_or(0),
            })
            .collect();
        Ok(Plan {
            servers,
            roles,
            pool,
            weights,
            coordinator: None,
            source: None,
            nonce: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// Builds the coordinator once the rollout workers (the routers) are up; with a start
    /// version above 0 (a resumed job) the servers are first moved to it.
    pub async fn attach(
        &mut self,
        scheduler: &Scheduler,
        ctl: &RolloutController,
        version: u64,
    ) -> Result<(), FleetError> {
        let Some((w, _)) = &self.weights else {
            return Ok(());
        };
        let workers = scheduler.workers(&self.pool.role).await?;
        let servers = workers
            .iter()
            .map(|i| Server {
                name: i.id.to_string(),
                url: format!("http://127.0.0.1:{}", i.ports.first().copied().unwrap_or(0)),
                node: i.node.to_string(),
                link: Arc::new(ViaScheduler {
                    scheduler: scheduler.clone(),
                    worker: i.id.clone(),
                }),
                api: self.pool.api,
            })
            .collect();
        let pattern = match &w.grpo {
            None => trainer::weights_path(&w.dir, 0)
                .to_string_lossy()
                .replace("weights-v0.bin", "weights-v{version}.bin"),
            Some(_) => fleet_policy::engine::weights_path(&w.dir, 0)
                .to_string_lossy()
                .replace("weights-v0.", "weights-v{version}."),
        };
        let source = Arc::new(StoreSource {
            objects: Default::default(),
            fallback: PathPattern(pattern),
        });
        self.source = Some(source.clone());
        let c = Arc::new(Coordinator::new(
            servers,
            Arc::new(ControllerRouters(ctl.clone())),
            source,
            w.mode,
            w.timeouts.clone(),
            0,
        ));
        c.strict().await;
        self.coordinator = Some(c);
        if version > 0 {
            self.step(version, Vec::new(), Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Whether weights move at each version.
    pub fn moves_weights(&self) -> bool {
        self.coordinator.is_some()
    }

    /// One trainer step: the trainer writes version `version`'s weights (taking `step_time`),
    /// then the coordinator moves the servers to it.
    pub async fn step(
        &self,
        version: u64,
        batch: Vec<TrainItem>,
        step_time: Duration,
    ) -> Result<StepReport, FleetError> {
        let episodes = batch.len() as u64;
        let (Some((w, trainer)), Some(c)) = (&self.weights, &self.coordinator) else {
            tokio::time::sleep(step_time).await;
            return Ok(StepReport {
                version,
                train: step_time,
                update: None,
                failed: Vec::new(),
                weights_bytes: 0,
                in_store: false,
                grpo: None,
            });
        };
        let t0 = Instant::now();
        let (object, weights_bytes, grpo) = match &w.grpo {
            None => {
                let step = TrainStep {
                    version,
                    episodes,
                    step_ms: step_time.as_millis().min(u64::MAX as u128) as u64,
                    size: w.size,
                    dir: w.dir.clone(),
                };
                let opts = CallOptions::default()
                    .timeout(step_time + Duration::from_secs(600))
                    .request_id(format!("train-step-v{version}-{}", self.nonce));
                let trained: Trained = trainer.call("train_step", &step, &opts).await?;
                (trained.object, trained.size, None)
            }
            Some(_) => {
                let (samples, skipped) = super::grpo::samples(&batch);
                let id = format!("grpo-step-v{version}-{}", self.nonce);
                let tb = fleet_policy::engine::TrainBatch {
                    request_id: id.clone(),
                    version,
                    samples,
                    out_dir: w.dir.clone(),
                };
                let opts = CallOptions::default()
                    .timeout(Duration::from_secs(600))
                    .request_id(id);
                let stored: crate::weights::grpo_trainer::StoredStep =
                    trainer.call("train_batch_to_store", &tb, &opts).await?;
                let r = stored.report;
                let size = match &stored.object {
                    Some(o) => o.size,
                    None => std::fs::metadata(&r.path).map_or(0, |m| m.len()),
                };
                let g = GrpoStep {
                    loss: r.stats.loss,
                    samples: r.samples,
                    stale_dropped: r.stale_dropped,
                    skipped_turns: skipped as u64,
                    max_logprob_diff: r.stats.max_logprob_diff,
                    checked_samples: r.stats.checked_samples,
                    replayed: r.replayed,
                };
                (stored.object, size, Some(g))
            }
        };
        let train = t0.elapsed();
        let in_store = object.is_some();
        if let (Some(src), Some(obj)) = (&self.source, object) {
            src.keep(version, obj);
        }
        let t1 = Instant::now();
        let r = c
            .update(version)
            .await
            .map_err(|e| FleetError::Unavailable {
                what: format!("the weight update to version {version}"),
                detail: e,
            })?;
        Ok(StepReport {
            version,
            train,
            update: Some(t1.elapsed()),
            failed: r.failed,
            weights_bytes,
            in_store,
            grpo,
        })
    }

    /// Supervises the servers every second (restarted or failed ones are loaded at the current
    /// version before they serve again) until the returned task is aborted.
    pub fn supervise(&self) -> Option<tokio::task::JoinHandle<()>> {
        let c = self.coordinator.clone()?;
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for s in c.recover().await {
                    tracing::info!(server = %s, "inference server back in the pool");
                }
            }
        }))
    }

    /// Servers brought back after a failure.
    pub fn recovered(&self) -> u64 {
        self.coordinator.as_ref().map_or(0, |c| c.recovered())
    }
}
