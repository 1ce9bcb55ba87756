//! The scheduler: membership view, placement, role bookkeeping, teardown order, and the call
//! path to workers.
//!
//! The scheduler is on the control path only. Creating a role takes its lock; a call does not:
//! it resolves the worker's route from a read-mostly table and talks to the worker (in this
//! process: its actor directly; on another node: that node's agent, which hands the call on
//! without awaiting it). So a thousand concurrent calls never queue behind one another here.
//!
//! A scheduler is either this process's own (the head's, or an embedded cluster's) or a
//! *remote* one, from [`crate::Cluster::connect`]: the same type and methods, each primitive
//! (`create_workers`, `delete_workers`, `workers`, `job`, `roles`, `get_workers`, `call_raw`,
//! `control`, `http`, `set_worker_env`) checking at its top whether it is to be sent to a
//! head's scheduler service instead (see [`crate::attach`]). Everything else builds on those
//! primitives and works unchanged on either. On a remote scheduler a call takes one hop more
//! (program -> head -> node).

mod calls;
mod create;
pub(crate) mod delete;
mod engines;
mod give_up;
pub mod placement;
mod readiness;
mod reconcile;
mod state;
#[cfg(test)]
mod tests;

pub use engines::EngineHandle;
pub use placement::Policy;
pub use state::{WorkerInfo, WorkerState};

use crate::node::directory::LocalDirectory;
use crate::node::messages::{AgentMsg, WorkerEvent, WorkerEventKind};
use crate::node::resources::{Ledger, NodeResources};
use fleet_actors::{FleetError, NodeId, WorkerId};
use ractor::ActorRef;
use state::State;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How separate workers are spread over nodes.
    pub policy: Policy,
    /// Bound on engine destroy hooks when deleting workers.
    pub destroy_timeout: Duration,
    /// Bound on starting one worker.
    pub spawn_timeout: Duration,
    /// Largest call argument accepted (bytes); bulk data goes over HTTP.
    pub max_payload: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Pack,
            destroy_timeout: Duration::from_secs(10),
            spawn_timeout: Duration::from_secs(30),
            max_payload: 8 * 1024 * 1024,
        }
    }
}

/// How a call reaches a worker.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) node: NodeId,
    /// The worker that really runs (the target, for an alias).
    pub(crate) target: WorkerId,
    pub(crate) agent: ActorRef<AgentMsg>,
    /// The incarnation of the target this route leads to.
    pub(crate) incarnation: u64,
    /// The worker's kind (`WorkerKind::name`), for metrics labels.
    pub(crate) kind: &'static str,
    pub(crate) failed: Option<FleetError>,
    /// For an in-process RpcServer: its actor, once the process group naming it has reached
    /// this node; engine calls then go to it directly instead of through the node's agent.
    pub(crate) direct:
        Option<Arc<std::sync::OnceLock<ActorRef<fleet_actors::rpc_server::WorkerMsg>>>>,
}

pub(crate) struct Inner {
    pub(crate) state: tokio::sync::Mutex<State>,
    pub(crate) routes: RwLock<HashMap<WorkerId, Route>>,
    pub(crate) directory: LocalDirectory,
    pub(crate) local_node: Option<NodeId>,
    pub(crate) config: SchedulerConfig,
    /// Per-node "lost" signals that in-flight remote calls race against.
    pub(crate) liveness: crate::membership::scheduler_hooks::Liveness,
    /// Bumped whenever a worker is marked failed, so remote calls in flight re-check theirs.
    pub(crate) failures: tokio::sync::watch::Sender<u64>,
    /// The next spawn's incarnation id (seeded from the clock, so ids do not repeat across
    /// scheduler restarts either).
    pub(crate) incarnations: std::sync::atomic::AtomicU64,
    /// Per node: disagreements between the scheduler's view and the node's roster.
    pub(crate) misses: std::sync::Mutex<HashMap<NodeId, reconcile::Misses>>,
}

/// The user-facing handle to the scheduler. Cheap to clone; every clone is the same scheduler.
#[derive(Clone)]
pub struct Scheduler {
    pub(crate) inner: Arc<Inner>,
    /// Set on a scheduler from [`crate::Cluster::connect`]: the primitives go to the head
    /// (and `inner` stays empty).
    pub(crate) remote: Option<Arc<crate::attach::RemoteLink>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.remote {
            Some(r) => f
                .debug_struct("Scheduler")
                .field("head", &r.addr())
                .finish(),
            None => f
                .debug_struct("Scheduler")
                .field("local_node", &self.inner.local_node)
                .finish(),
        }
    }
}

/// The error of a method only a process's own scheduler has.
fn local_only(what: &str) -> FleetError {
    FleetError::bad_request(
        format!("Scheduler::{what}"),
        "this scheduler is connected to a head (Cluster::connect); only the head's own scheduler has it",
    )
}

impl Scheduler {
    /// A scheduler with no nodes. `directory` and `local_node` describe workers running in this
    /// process, reached without the agent hop.
    pub fn new(
        config: SchedulerConfig,
        directory: LocalDirectory,
        local_node: Option<NodeId>,
    ) -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                state: tokio::sync::Mutex::new(State::default()),
                routes: RwLock::new(HashMap::new()),
                directory,
                local_node,
                config,
                liveness: Default::default(),
                failures: tokio::sync::watch::channel(0).0,
                misses: Default::default(),
                incarnations: std::sync::atomic::AtomicU64::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(1),
                ),
            }),
            remote: None,
        }
    }

    /// A scheduler whose primitives run on the head behind `link` (see [`crate::attach`]).
    pub(crate) fn remote(link: Arc<crate::attach::RemoteLink>) -> Self {
        let mut s = Scheduler::new(SchedulerConfig::default(), LocalDirectory::default(), None);
        s.remote = Some(link);
        s
    }

    /// Whether this scheduler is connected to a head ([`crate::Cluster::connect`]) rather
    /// than this process's own.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The largest message this scheduler sends or answers (bytes).
    pub(crate) fn max_payload(&self) -> usize {
        self.inner.config.max_payload
    }

    /// The object store of the node this scheduler runs on (the driver's store): put objects
    /// here and pass their [`crate::store::ObjectRef`] as engine-call arguments, so a call's
    /// arguments stay small whatever the data. `None` when that node runs no store, and on a
    /// scheduler connected to a head (its process runs no node).
    pub fn store(&self) -> Option<crate::store::Store> {
        let node = self.inner.local_node.as_ref()?;
        crate::store::Store::for_node(&node.to_string())
    }

    /// Adds a node that placement may use. Only a process's own scheduler takes nodes: on a
    /// connected one it is an error (nodes join the head with `fleet node --join`).
    pub async fn add_node(
        &self,
        node: NodeId,
        agent: ActorRef<AgentMsg>,
        resources: NodeResources,
    ) -> Result<(), FleetError> {
        if self.remote.is_some() {
            return Err(local_only("add_node"));
        }
        self.inner.liveness.track(&node);
        let mut st = self.inner.state.lock().await;
        st.nodes.insert(
            node,
            state::NodeEntry {
                agent,
                ledger: Ledger::new(resources),
                alive: true,
            },
        );
        Ok(())
    }

    /// Applies worker events (deaths pushed by nodes) until the sender side closes. On a
    /// scheduler connected to a head it is an error (the head follows its nodes' events).
    pub fn follow_events(
        &self,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
    ) -> Result<(), FleetError> {
        if self.remote.is_some() {
            return Err(local_only("follow_events"));
        }
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                me.apply_event(ev).await;
            }
        });
        Ok(())
    }

    /// Compares what the scheduler records on `node` with the node's `roster` (from a
    /// heartbeat): marks failed what the node no longer runs, stops on the node what the
    /// scheduler does not know (see [`reconcile`]).
    pub(crate) async fn reconcile_node(
        &self,
        node: &NodeId,
        roster: &[crate::node::messages::RosterEntry],
    ) {
        let st = self.inner.state.lock().await;
        let Some(agent) = st.nodes.get(node).map(|n| n.agent.clone()) else {
            return;
        };
        let known: Vec<reconcile::Known> = st
            .roles
            .values()
            .flat_map(|e| e.workers.iter())
            .filter(|w| &w.node == node && w.alias_of.is_none())
            .filter(|w| !matches!(w.state, WorkerState::Failed(_)))
            .map(|w| reconcile::Known {
                worker: w.id.clone(),
                incarnation: w.incarnation,
                running: w.state == WorkerState::Running,
            })
            .collect();
        drop(st);
        let actions = {
            let mut m = self.inner.misses.lock().unwrap_or_else(|p| p.into_inner());
            reconcile::reconcile(&known, roster, m.entry(node.clone()).or_default())
        };
        for (worker, incarnation) in actions.fail {
            let reason = format!("node {node} no longer runs it");
            tracing::error!(worker = %worker, node = %node, incarnation, "the node's roster lacks a running worker; marking it failed");
            self.apply_event(WorkerEvent {
                worker,
                node: node.clone(),
                incarnation,
                kind: WorkerEventKind::Failed {
                    reason,
                    tail: vec![],
                },
            })
            .await;
        }
        for (worker, incarnation) in actions.stop {
            tracing::warn!(worker = %worker, node = %node, incarnation, "the node runs a worker the scheduler does not know (a leaked create); stopping it");
            let agent = agent.clone();
            let bound = self.inner.config.destroy_timeout;
            tokio::spawn(async move {
                let req = crate::node::messages::StopRequest {
                    worker,
                    destroy_timeout_ms: bound.as_millis() as u64,
                };
                let _ = agent
                    .call(
                        |p| AgentMsg::Stop(fleet_actors::wire::Wire::new(req), p),
                        Some(bound + std::time::Duration::from_secs(5)),
                    )
                    .await;
            });
        }
    }

    pub(crate) async fn apply_event(&self, ev: WorkerEvent) {
        let (reason, tail) = match ev.kind {
            WorkerEventKind::Failed { reason, tail } => (reason, tail),
            WorkerEventKind::Released => {
                let mut st = self.inner.state.lock().await;
                let key = (ev.node.clone(), ev.incarnation);
                match st.draining.remove(&key) {
                    Some(held) => {
                        if let Some(n) = st.nodes.get_mut(&ev.node) {
                            n.ledger.release(&held);
                        }
                    }
                    None => {
                        st.released_early.insert(key);
                    }
                }
                return;
            }
        };
        let err = FleetError::WorkerFailed {
            worker: ev.worker.to_string(),
            node: ev.node.to_string(),
            reason,
            tail,
        };
        let mut st = self.inner.state.lock().await;
        // Only the instance the event is about: same id (or an alias of it), same node, same
        // incarnation. A late event about a deleted and recreated worker changes nothing.
        let mut affected = Vec::new();
        let mut owned = false;
        for entry in st.roles.values_mut() {
            for w in entry.workers.iter_mut() {
                let named = w.id == ev.worker || w.alias_of.as_ref() == Some(&ev.worker);
                if named && w.node == ev.node && w.incarnation == ev.incarnation {
                    w.state = WorkerState::Failed(err.clone());
                    affected.push(w.id.clone());
                    owned |= w.alias_of.is_none();
                }
            }
        }
        if !owned {
            tracing::debug!(worker = %ev.worker, node = %ev.node, incarnation = ev.incarnation, "event about an instance the scheduler no longer has ignored");
            return;
        }
        if let Some(n) = st.nodes.get_mut(&ev.node) {
            n.ledger.release(&ev.worker);
        }
        drop(st);
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        for id in affected {
            if let Some(r) = routes
                .get_mut(&id)
                .filter(|r| r.incarnation == ev.incarnation)
            {
                r.failed = Some(err.clone());
            }
        }
        drop(routes);
        self.inner.failures.send_modify(|n| *n += 1);
    }

    /// The workers of `role` as recorded now (no waiting, no health check).
    pub async fn workers(&self, role: &str) -> Result<Vec<WorkerInfo>, FleetError> {
        if let Some(r) = &self.remote {
            return r
                .workers(
                    crate::attach::protocol::Op::Workers(role.into()),
                    r.timeout(),
                )
                .await;
        }
        let st = self.inner.state.lock().await;
        Ok(st.role(role)?.workers.clone())
    }

    /// The job `role` was created from.
    pub async fn job(&self, role: &str) -> Result<fleet_actors::Job, FleetError> {
        if let Some(r) = &self.remote {
            return r.job(role, r.timeout()).await;
        }
        let st = self.inner.state.lock().await;
        Ok(st.role(role)?.job.clone())
    }

    /// Role names, sorted. On a scheduler connected to a head, a head that does not answer
    /// gives an empty list (and an error in the log); [`Scheduler::try_roles`] says why.
    pub async fn roles(&self) -> Vec<String> {
        match self.try_roles().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "roles: no answer from the head");
                Vec::new()
            }
        }
    }

    /// Role names, sorted, or why the head did not give them (a process's own scheduler
    /// always answers).
    pub async fn try_roles(&self) -> Result<Vec<String>, FleetError> {
        if let Some(r) = &self.remote {
            return r.roles(r.timeout()).await;
        }
        Ok(self
            .inner
            .state
            .lock()
            .await
            .roles
            .keys()
            .cloned()
            .collect())
    }

    pub(crate) fn route(&self, worker: &WorkerId) -> Result<Route, FleetError> {
        let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        match routes.get(worker) {
            Some(r) => match &r.failed {
                Some(e) => Err(e.clone()),
                None => Ok(r.clone()),
            },
            None => {
                let same_role = routes.keys().filter(|k| k.role == worker.role).count();
                let detail = if same_role > 0 {
                    format!(
                        "role {:?} has {same_role} workers (indices 0..{same_role})",
                        worker.role
                    )
                } else {
                    format!("there is no role {:?}", worker.role)
                };
                Err(FleetError::WorkerNotFound {
                    worker: worker.to_string(),
                    detail,
                })
            }
        }
    }
}
