//! `create_workers`: validate, place (all replicas or none), start on the chosen nodes' agents,
//! and roll back the ones started if any fails.

use super::placement;
use super::state::{RoleEntry, RoleLink, State};
use super::{Route, Scheduler, WorkerInfo, WorkerState};
use crate::node::messages::{AgentMsg, SpawnRequest, SpawnedWorker, StopRequest};
use fleet_actors::rpc_server::{ControlOk, ControlReply};
use fleet_actors::wire::Wire;
use fleet_actors::{FleetError, Job, NodeId, SchedulingSpec, Strategy, WorkerId};
use std::collections::BTreeMap;

/// One replica's placement before it is started.
struct Planned {
    id: WorkerId,
    node: NodeId,
    spec: SchedulingSpec,
    gpus: Vec<u32>,
    env: BTreeMap<String, String>,
    incarnation: u64,
}

fn validate(job: &Job) -> Result<(), FleetError> {
    let what = format!("create_workers for role {:?}", job.role);
    if job.role.is_empty() || job.role.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(FleetError::bad_request(
            what,
            "the role name must be non-empty, without spaces or '/'",
        ));
    }
    if job.replicas == 0 {
        return Err(FleetError::bad_request(
            what,
            "replicas is 0; ask for at least one worker",
        ));
    }
    if job.specs.len() != 1 && job.specs.len() != job.replicas as usize {
        return Err(FleetError::bad_request(
            what,
            format!(
                "{} specs for {} replicas: give one spec for all, or one per replica",
                job.specs.len(),
                job.replicas
            ),
        ));
    }
    if let fleet_actors::WorkerKind::HttpService(h) = &job.kind {
        if h.argv.is_empty() || h.argv[0].trim().is_empty() {
            return Err(FleetError::bad_request(
                what,
                "the HttpService command (argv) is empty",
            ));
        }
    }
    for s in &job.specs {
        if !s.cpu.is_finite() || s.cpu < 0.0 {
            return Err(FleetError::bad_request(
                what,
                format!("cpu {} is not a non-negative number", s.cpu),
            ));
        }
    }
    Ok(())
}

impl Scheduler {
    /// Starts `job.replicas` workers of `job.role`, all or none.
    ///
    /// * `Strategy::Separate`: each replica is placed by the scheduler's policy; GPU workers get
    ///   exclusive physical ids and their `CUDA_VISIBLE_DEVICES`.
    /// * `Strategy::Colocate { fork: false }`: the role becomes another name for the target's
    ///   workers (same actors, no new resources).
    /// * `Strategy::Colocate { fork: true }`: replica `i` starts on the node of target worker `i`,
    ///   with gpu 0 and the target's `CUDA_VISIBLE_DEVICES`.
    ///
    /// Placement that does not fit fails with [`FleetError::InsufficientResources`] naming the
    /// resource that is short, and nothing is started.
    ///
    /// Cancellation-safe: the creation runs in a task the scheduler owns, and the caller only
    /// awaits its outcome. A caller that gives up (a `timeout`, a `select!`) cancels nothing: the
    /// create still either completes (the role is usable) or rolls back fully. A
    /// `delete_workers` of the role while its workers are starting makes the create fail with
    /// [`FleetError::RoleNotFound`] and stops every worker it started.
    ///
    /// On a scheduler connected to a head ([`crate::Cluster::connect`]) the head creates the
    /// role, records it as this program's, and deletes it when this program's session closes.
    /// The wait is bounded by the connection's timeout; the head finishes (or rolls back) the
    /// create whatever the caller does.
    pub async fn create_workers(&self, job: Job) -> Result<Vec<WorkerInfo>, FleetError> {
        if let Some(r) = &self.remote {
            return r
                .workers(crate::attach::protocol::Op::CreateWorkers(job), r.timeout())
                .await;
        }
        let me = self.clone();
        let role = job.role.clone();
        tokio::spawn(async move { me.create_owned(job).await })
            .await
            .map_err(|e| {
                FleetError::internal(format!(
                    "create_workers for role {role:?}: its task ended without an answer ({e}); \
                     call workers({role:?}) to see what is left, and delete_workers to clear it"
                ))
            })?
    }

    async fn create_owned(&self, job: Job) -> Result<Vec<WorkerInfo>, FleetError> {
        validate(&job)?;
        let mut st = self.inner.state.lock().await;
        if st.roles.contains_key(&job.role) {
            return Err(FleetError::RoleExists { role: job.role });
        }
        let (link, plan) = match &job.strategy {
            Strategy::Colocate {
                target,
                fork: false,
            } => {
                return self.create_alias(&mut st, job.clone(), target.clone());
            }
            Strategy::Colocate { target, fork: true } => (
                RoleLink::Fork(target.clone()),
                plan_fork(&mut st, &job, target)?,
            ),
            Strategy::Separate => (
                RoleLink::Own,
                plan_separate(&mut st, &job, self.inner.config.policy)?,
            ),
        };
        let mut plan = plan;
        for p in plan.iter_mut() {
            p.incarnation = self
                .inner
                .incarnations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let order = st.next_order;
        st.next_order += 1;
        let workers: Vec<WorkerInfo> = plan
            .iter()
            .map(|p| WorkerInfo {
                id: p.id.clone(),
                alias_of: None,
                node: p.node.clone(),
                kind: job.kind.name().to_string(),
                gpus: p.gpus.clone(),
                ports: vec![],
                env: p.env.clone(),
                log_path: None,
                incarnation: p.incarnation,
                state: WorkerState::Starting,
            })
            .collect();
        st.roles.insert(
            job.role.clone(),
            RoleEntry {
                job: job.clone(),
                order,
                link,
                workers,
            },
        );
        let agents: Vec<_> = plan
            .iter()
            .map(|p| st.nodes.get(&p.node).map(|n| n.agent.clone()))
            .collect();
        drop(st);

        // Start every replica concurrently; the lock is not held meanwhile.
        let timeout = self.inner.config.spawn_timeout;
        let starts = plan.iter().zip(agents.iter()).map(|(p, agent)| {
            let req = SpawnRequest {
                worker: p.id.clone(),
                kind: job.kind.clone(),
                spec: p.spec.clone(),
                gpus: p.gpus.clone(),
                env: p.env.clone(),
                incarnation: p.incarnation,
            };
            let agent = agent.clone();
            let node = p.node.clone();
            let liveness = self.inner.liveness.clone();
            async move {
                let Some(agent) = agent else {
                    return Err(FleetError::NodeLost {
                        node: node.to_string(),
                        reason: "it left before the worker could start".into(),
                    });
                };
                let id = req.worker.clone();
                // Ends early, with NodeLost, if the node is marked lost meanwhile.
                crate::remote::call_on_node(
                    &liveness,
                    &node,
                    &id,
                    "starting the worker",
                    timeout,
                    agent.call(|port| AgentMsg::Spawn(Wire::new(req), port), Some(timeout)),
                )
                .await
                .and_then(|reply| reply.flatten())
            }
        });
        let results: Vec<Result<SpawnedWorker, FleetError>> =
            futures::future::join_all(starts).await;

        let failures: Vec<String> = results
            .iter()
            .zip(&plan)
            .filter_map(|(r, p)| r.as_ref().err().map(|e| format!("{}: {e}", p.id)))
            .collect();
        // Still ours? A delete_workers of this role while its workers were starting removed it
        // (and released its mirror allocations); a create of the same name may even have
        // followed. Either way the workers started here belong to nobody: stop them all.
        let ours = self
            .inner
            .state
            .lock()
            .await
            .roles
            .get(&job.role)
            .map(|e| e.order)
            == Some(order);
        if !ours {
            self.stop_planned(&plan, &agents).await;
            tracing::warn!(role = %job.role, "create_workers: the role was deleted while its workers were starting; they were stopped");
            return Err(FleetError::RoleNotFound {
                role: job.role.clone(),
                known: format!(
                    "none by that name: it was deleted while its workers were starting, and the {} workers started for it were stopped",
                    plan.len()
                ),
            });
        }
        if !failures.is_empty() {
            // Roll back: stop every planned worker (Stop is idempotent; a spawn that timed out
            // may still complete on its node, and the agent handles the Stop after it), then
            // free the mirror and forget the role.
            let first = results.iter().find_map(|r| r.as_ref().err().cloned());
            let deferred = self.stop_planned(&plan, &agents).await;
            let mut st = self.inner.state.lock().await;
            if st.roles.get(&job.role).map(|e| e.order) == Some(order) {
                for (p, deferred) in plan.iter().zip(deferred) {
                    super::delete::book_stop(&mut st, &p.node, &p.id, p.incarnation, deferred);
                }
                st.roles.remove(&job.role);
            }
            drop(st);
            tracing::warn!(role = %job.role, failed = failures.len(), "create_workers rolled back: {}", failures.join("; "));
            return Err(match (first, failures.len()) {
                (Some(e), 1) => e,
                (Some(e), n) => match e {
                    FleetError::WorkerFailed {
                        worker,
                        node,
                        reason,
                        tail,
                    } => FleetError::WorkerFailed {
                        worker,
                        node,
                        reason: format!(
                            "{reason} (and {} more failed: {})",
                            n - 1,
                            failures[1..].join("; ")
                        ),
                        tail,
                    },
                    other => other,
                },
                (None, _) => FleetError::internal("create_workers failed without an error"),
            });
        }

        let direct_eligible = matches!(
            job.kind,
            fleet_actors::WorkerKind::RpcServer(fleet_actors::RpcServerSpec {
                isolation: fleet_actors::Isolation::InProcess
            })
        );
        let mut st = self.inner.state.lock().await;
        let spawned: Vec<SpawnedWorker> = results.into_iter().filter_map(Result::ok).collect();
        let routes: Vec<(WorkerId, Route)>;
        let entry = match st.roles.get_mut(&job.role) {
            Some(e) if e.order == order => Some(e),
            _ => None,
        };
        let Some(entry) = entry else {
            // Deleted between the check above and now.
            drop(st);
            self.stop_planned(&plan, &agents).await;
            return Err(FleetError::RoleNotFound {
                role: job.role.clone(),
                known: "none by that name: it was deleted while its workers were starting, and they were stopped".into(),
            });
        };
        {
            for (w, sw) in entry.workers.iter_mut().zip(&spawned) {
                w.ports = sw.ports.clone();
                w.env = sw.env.clone();
                w.gpus = sw.gpus.clone();
                w.log_path = sw.log_path.clone();
                // A worker may already have failed (and been reported) while the others started.
                if !matches!(w.state, WorkerState::Failed(_)) {
                    w.state = WorkerState::Running;
                }
            }
            routes = entry
                .workers
                .iter()
                .zip(agents.iter())
                .filter_map(|(w, a)| {
                    a.clone().map(|agent| {
                        (
                            w.id.clone(),
                            Route {
                                node: w.node.clone(),
                                target: w.id.clone(),
                                agent,
                                incarnation: w.incarnation,
                                kind: job.kind.name(),
                                failed: match &w.state {
                                    WorkerState::Failed(e) => Some(e.clone()),
                                    _ => None,
                                },
                                direct: direct_eligible
                                    .then(|| std::sync::Arc::new(std::sync::OnceLock::new())),
                            },
                        )
                    })
                })
                .collect();
        }
        let infos = entry.workers.clone();
        // Routes go in while the state lock is held: a delete_workers that follows removes
        // them, and one that came first was caught above.
        self.inner
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(routes);
        drop(st);
        tracing::info!(role = %job.role, replicas = job.replicas, kind = job.kind.name(), "workers created");
        Ok(infos)
    }

    /// Starts one worker of kind `kind` next to each worker of `target_role` (same node, index
    /// `i` beside target `i`), with gpu 0 and the target's `CUDA_VISIBLE_DEVICES`: AReaL's
    /// `fork_workers`. All or nothing: a partial failure stops the forks already started and
    /// names the ones that failed. Forked roles are deleted before their targets.
    pub async fn fork_workers(
        &self,
        role: &str,
        target_role: &str,
        kind: fleet_actors::WorkerKind,
        spec: SchedulingSpec,
    ) -> Result<Vec<WorkerInfo>, FleetError> {
        let replicas = self.workers(target_role).await?.len() as u32;
        self.create_workers(
            Job::new(role, replicas)
                .colocate(target_role, true)
                .kind(kind)
                .spec(spec),
        )
        .await
    }

    /// Sends Stop to every planned worker whose node is known, and waits for the answers
    /// (bounded). Stop is idempotent, so a worker that never started costs one round trip.
    /// Returns, per planned worker, whether its node deferred the stop (resources still held).
    async fn stop_planned(
        &self,
        plan: &[Planned],
        agents: &[Option<ractor::ActorRef<AgentMsg>>],
    ) -> Vec<bool> {
        let bound = self.inner.config.destroy_timeout + self.inner.config.spawn_timeout;
        let destroy_ms = self.inner.config.destroy_timeout.as_millis() as u64;
        let stops = plan.iter().zip(agents.iter()).map(|(p, agent)| {
            let agent = agent.clone();
            let req = StopRequest {
                worker: p.id.clone(),
                destroy_timeout_ms: destroy_ms,
            };
            let id = p.id.clone();
            async move {
                let Some(agent) = agent else {
                    return false;
                };
                let r = agent
                    .call(|port| AgentMsg::Stop(Wire::new(req), port), Some(bound))
                    .await;
                match r {
                    Ok(ractor::rpc::CallResult::Success(ControlReply(Ok(
                        ControlOk::Deferred(_),
                    )))) => true,
                    Ok(ractor::rpc::CallResult::Success(_)) => false,
                    _ => {
                        tracing::warn!(worker = %id, "rollback: stopping a planned worker got no answer; it may still run on its node");
                        false
                    }
                }
            }
        });
        futures::future::join_all(stops).await
    }

    fn create_alias(
        &self,
        st: &mut State,
        job: Job,
        target: String,
    ) -> Result<Vec<WorkerInfo>, FleetError> {
        let entry = st.role(&target)?;
        if entry.workers.len() != job.replicas as usize {
            return Err(FleetError::bad_request(
                format!("colocating role {:?} with {target:?}", job.role),
                format!(
                    "it asks for {} replicas but {target:?} has {}; they must match",
                    job.replicas,
                    entry.workers.len()
                ),
            ));
        }
        let workers: Vec<WorkerInfo> = entry
            .workers
            .iter()
            .enumerate()
            .map(|(i, t)| WorkerInfo {
                id: WorkerId::new(job.role.clone(), i as u32),
                alias_of: Some(t.alias_of.clone().unwrap_or_else(|| t.id.clone())),
                ..t.clone()
            })
            .collect();
        let order = st.next_order;
        st.next_order += 1;
        {
            let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
            for w in &workers {
                let target_id = w.alias_of.clone().unwrap_or_else(|| w.id.clone());
                if let Some(r) = routes.get(&target_id).cloned() {
                    routes.insert(w.id.clone(), r);
                }
            }
        }
        st.roles.insert(
            job.role.clone(),
            RoleEntry {
                job,
                order,
                link: RoleLink::Alias(target),
                workers: workers.clone(),
            },
        );
        Ok(workers)
    }
}

/// Places every replica of a separate role against the mirror ledgers, recording as it goes;
/// undoes everything if one does not fit.
fn plan_separate(
    st: &mut State,
    job: &Job,
    policy: placement::Policy,
) -> Result<Vec<Planned>, FleetError> {
    let ids: Vec<NodeId> = st.nodes.keys().cloned().collect();
    let mut plan: Vec<Planned> = Vec::new();
    for i in 0..job.replicas {
        let id = WorkerId::new(job.role.clone(), i);
        let spec = job.spec_for(i).cloned().unwrap_or_default();
        let choice = {
            let nodes: Vec<&super::state::NodeEntry> =
                ids.iter().filter_map(|n| st.nodes.get(n)).collect();
            placement::choose(&nodes, &spec, policy)
        };
        let k = match choice {
            Ok(k) => k,
            Err(s) => {
                undo(st, &plan);
                return Err(FleetError::InsufficientResources {
                    what: format!("{id} ({} of {} replicas placed)", i, job.replicas),
                    resource: s.resource.to_string(),
                    detail: s.detail,
                });
            }
        };
        let node = ids[k].clone();
        let entry = st
            .nodes
            .get_mut(&node)
            .ok_or_else(|| FleetError::internal("node vanished"))?;
        let gpus = entry.ledger.pick_gpus(spec.gpu);
        if let Err(e) = entry.ledger.allocate(&id, &spec, &gpus) {
            undo(st, &plan);
            return Err(e);
        }
        plan.push(Planned {
            id,
            node,
            spec,
            gpus,
            env: BTreeMap::new(),
            incarnation: 0,
        });
    }
    Ok(plan)
}

/// Places replica `i` next to target worker `i`: same node, gpu 0, the target's visible devices.
fn plan_fork(st: &mut State, job: &Job, target: &str) -> Result<Vec<Planned>, FleetError> {
    let targets = st.role(target)?.workers.clone();
    if targets.len() != job.replicas as usize {
        return Err(FleetError::bad_request(
            format!("forking role {:?} next to {target:?}", job.role),
            format!(
                "it asks for {} replicas but {target:?} has {}; they must match",
                job.replicas,
                targets.len()
            ),
        ));
    }
    let mut plan: Vec<Planned> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let id = WorkerId::new(job.role.clone(), i as u32);
        let spec = job.spec_for(i as u32).cloned().unwrap_or_default();
        if spec.gpu > 0 {
            undo(st, &plan);
            return Err(FleetError::bad_request(
                format!("forking {id} next to {}", t.id),
                format!(
                    "it asks for {} GPUs; a forked worker shares its target's GPUs: set gpu = 0",
                    spec.gpu
                ),
            ));
        }
        let mut env = BTreeMap::new();
        if let Some(v) = t.env.get("CUDA_VISIBLE_DEVICES") {
            env.insert("CUDA_VISIBLE_DEVICES".to_string(), v.clone());
        }
        let Some(entry) = st.nodes.get_mut(&t.node) else {
            undo(st, &plan);
            return Err(FleetError::NodeLost {
                node: t.node.to_string(),
                reason: format!("the node of target worker {} is not in the cluster", t.id),
            });
        };
        if let Err(e) = entry.ledger.allocate(&id, &spec, &[]) {
            undo(st, &plan);
            return Err(e);
        }
        plan.push(Planned {
            id,
            node: t.node.clone(),
            spec,
            gpus: vec![],
            env,
            incarnation: 0,
        });
    }
    Ok(plan)
}

fn undo(st: &mut State, plan: &[Planned]) {
    for p in plan {
        if let Some(n) = st.nodes.get_mut(&p.node) {
            n.ledger.release(&p.id);
        }
    }
}
