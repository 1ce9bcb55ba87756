//! The node agent actor: its state, its start and stop, and supervision of its workers. What
//! each message does is in `dispatch`; booking and starting a worker in `spawn`.
//!
//! Its handlers never wait on workers: calls are forwarded with the caller's reply port;
//! spawns book resources in the handler, then start the worker's actor (its `pre_start`: a
//! fork, a log file) in a task that reports back with [`AgentMsg::Started`], and messages for
//! a worker still starting wait in its pending spawn until it has started; stops (destroy
//! hooks, then actor stop) run in spawned tasks that report back with [`AgentMsg::Reclaim`];
//! child pids are published by the launchers ([`ChildPid`]), never looked up in `/proc`. Workers are linked to the agent, so a worker that dies unasked is
//! noticed at once, its resources are released and a [`WorkerEvent`] is pushed.

mod dispatch;
mod spawn;
mod store_port;

use super::directory::LocalDirectory;
use super::messages::{
    AgentMsg, LocalWorkerInfo, NodeInfo, SpawnRequest, SpawnedWorker, StopRequest, WorkerCall,
    WorkerControl, WorkerEvent, WorkerEventKind,
};
use super::ports::PortAllocator;
use super::resources::{Ledger, NodeResources};
use dispatch::on_message;
use fleet_actors::rpc_server::{
    CallReply, Control, ControlOk, ControlReply, RpcServer, RpcServerArgs, WorkerMsg,
};
use fleet_actors::wire::Wire;
use fleet_actors::{CallProtocol, HttpServiceSpec, Isolation, RpcServerSpec};
use fleet_actors::{EngineRegistry, FleetError, NodeId, WorkerId, WorkerKind};
use fleet_http::Client;
use fleet_launcher::http_launcher::{ChildPid, HttpLauncher, HttpLauncherArgs, WorkerFailure};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use spawn::{PendingSpawn, StartOutcomes};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The node agent.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeAgent;

/// What the agent starts with.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The node's id.
    pub node: NodeId,
    /// Its resources.
    pub resources: NodeResources,
    /// Engine types its RpcServer workers can create.
    pub registry: EngineRegistry,
    /// Filled with local workers for in-process callers.
    pub directory: LocalDirectory,
    /// Where unasked worker deaths are pushed.
    pub events: Option<mpsc::UnboundedSender<WorkerEvent>>,
    /// Where worker log files go (`<run_dir>/logs/<role>_<index>.log`).
    pub run_dir: PathBuf,
    /// Where the logs of a submitted job's workers go instead: `<runs_root>/<job>/logs/`, the
    /// job (`<name>-<id>`) named by the worker's `FLEET_JOB` variable. None: `run_dir`.
    pub runs_root: Option<PathBuf>,
    /// Rust agents rollout workers on this node can run.
    pub agents: crate::rollout::AgentRegistry,
    /// Largest call result or HTTP response body sent back to a caller (bytes); a larger one is
    /// answered with `PayloadTooLarge` so it never becomes a frame that would drop the session.
    pub max_message: usize,
    /// The node's object store (see [`crate::store`]), started with the agent and stopped
    /// with it; `None`: no store on this node.
    pub store: Option<crate::store::StoreConfig>,
    /// Where the agent leaves the engine threads still running when it stops (see
    /// [`super::leftovers`]).
    pub leftovers: super::leftovers::Leftovers,
}

struct LocalWorker {
    actor: ActorRef<WorkerMsg>,
    join: Option<JoinHandle<()>>,
    kind: WorkerKind,
    gpus: Vec<u32>,
    ports: Vec<u16>,
    lease: Option<u64>,
    stopping: bool,
    incarnation: u64,
    /// For an in-process RpcServer: resolves when its engine thread has ended.
    engine_exit: Option<tokio::sync::oneshot::Receiver<()>>,
    /// For a worker that is one child process: its pid, published by its launcher.
    child_pid: Option<ChildPid>,
}

/// A worker that is stopped but whose engine thread still runs: it keeps its resources (under
/// a drain key in the ledger, so its id can be reused) until the thread ends.
struct DrainingWorker {
    worker: WorkerId,
    incarnation: u64,
    ledger_key: WorkerId,
    kind: WorkerKind,
    gpus: Vec<u32>,
    ports: Vec<u16>,
    lease: Option<u64>,
    reason: String,
}

/// How long a stop waits for an engine thread to end after its actor stopped, before it answers
/// "deferred" and leaves the resources held until the thread ends.
const ENGINE_EXIT_GRACE: Duration = Duration::from_millis(500);

/// The agent's state.
pub struct AgentState {
    node: NodeId,
    ledger: Ledger,
    ports: PortAllocator,
    registry: EngineRegistry,
    directory: LocalDirectory,
    events: Option<mpsc::UnboundedSender<WorkerEvent>>,
    workers: HashMap<WorkerId, LocalWorker>,
    by_actor: HashMap<ActorId, WorkerId>,
    run_dir: PathBuf,
    runs_root: Option<PathBuf>,
    client: Client,
    agents: crate::rollout::AgentRegistry,
    /// Workers that failed for good and were stopped, with their failure, until deleted (or an
    /// hour, or 4,096 newer failures): calls that still reach this node for them get the
    /// failure, not "not found".
    tombstones: super::tombstones::Tombstones,
    max_message: usize,
    draining: HashMap<u64, DrainingWorker>,
    next_drain: u64,
    store: Option<crate::store::Store>,
    /// Ports the store holds from the allocator (not counted as the workers' `ports_held`).
    store_ports: u64,
    /// Spawns whose actor is starting, by spawn key.
    pending: HashMap<u64, PendingSpawn>,
    /// Worker id → key of its pending spawn.
    starting: HashMap<WorkerId, u64>,
    next_spawn: u64,
    outcomes: StartOutcomes,
    /// Actors that ended before their spawn was registered (only while spawns are pending).
    early_exits: HashMap<ActorId, String>,
    leftovers: super::leftovers::Leftovers,
}

impl AgentState {
    fn not_found(&self, worker: &WorkerId) -> FleetError {
        if let Some(e) = self.tombstones.get(worker, std::time::Instant::now()) {
            return e.clone();
        }
        FleetError::WorkerNotFound {
            worker: worker.to_string(),
            detail: format!("no such worker on node {}", self.node),
        }
    }

    fn reclaim(&mut self, worker: &WorkerId) -> bool {
        let Some(w) = self.workers.remove(worker) else {
            return false;
        };
        self.by_actor.remove(&w.actor.get_id());
        self.directory.remove(worker);
        self.ledger.release(worker);
        if let Some(lease) = w.lease {
            self.ports.release(lease);
        }
        true
    }

    fn info(&self) -> NodeInfo {
        let mut workers: Vec<LocalWorkerInfo> = self
            .workers
            .iter()
            .map(|(id, w)| LocalWorkerInfo {
                worker: id.clone(),
                kind: w.kind.name().to_string(),
                gpus: w.gpus.clone(),
                ports: w.ports.clone(),
                child_pid: w.child_pid.as_ref().and_then(ChildPid::get),
                stopping: None,
            })
            .chain(self.draining.values().map(|d| LocalWorkerInfo {
                worker: d.worker.clone(),
                kind: d.kind.name().to_string(),
                gpus: d.gpus.clone(),
                ports: d.ports.clone(),
                child_pid: None,
                stopping: Some(d.reason.clone()),
            }))
            .collect();
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        NodeInfo {
            node: self.node.clone(),
            resources: self.ledger.total().clone(),
            free_cpu_millis: self.ledger.free_cpu(),
            free_mem_mib: self.ledger.free_mem(),
            free_gpus: self.ledger.free_gpus().collect(),
            ports_held: (self.ports.held() as u64).saturating_sub(self.store_ports),
            workers,
            store: self.store.as_ref().map(|s| s.stats()),
        }
    }
}

impl Actor for NodeAgent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (lo, hi) = args.resources.port_range;
        tracing::info!(node = %args.node, cpus = args.resources.cpu_millis as f64 / 1000.0, mem_mib = args.resources.mem_mib, gpus = ?args.resources.gpus, ports = %format!("{lo}..={hi}"), "node agent started");
        let mut ports = PortAllocator::new(lo, hi);
        let store = match args.store {
            Some(cfg) => Some(store_port::start_store(&args.node, cfg, &mut ports).await?),
            None => None,
        };
        let store_ports = ports.held() as u64;
        Ok(AgentState {
            ledger: Ledger::new(args.resources.clone()),
            ports,
            store,
            store_ports,
            node: args.node,
            registry: args.registry,
            directory: args.directory,
            events: args.events,
            workers: HashMap::new(),
            by_actor: HashMap::new(),
            run_dir: args.run_dir,
            runs_root: args.runs_root,
            client: Client::new(),
            agents: args.agents,
            tombstones: super::tombstones::Tombstones::new(),
            max_message: args.max_message,
            draining: HashMap::new(),
            next_drain: 0,
            pending: HashMap::new(),
            starting: HashMap::new(),
            next_spawn: 0,
            outcomes: Arc::default(),
            early_exits: HashMap::new(),
            leftovers: args.leftovers,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Nothing in here awaits: the agent never waits on a worker.
        on_message(myself, message, state)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("panicked: {err}")),
            _ => return Ok(()),
        };
        let Some(worker) = state.by_actor.get(&cell.get_id()).cloned() else {
            if !state.pending.is_empty() {
                // Perhaps a worker whose spawn is not registered yet: it checks here.
                state.early_exits.insert(cell.get_id(), reason);
            }
            return Ok(());
        };
        let Some((stopping, incarnation)) = state
            .workers
            .get(&worker)
            .map(|w| (w.stopping, w.incarnation))
        else {
            return Ok(());
        };
        if stopping {
            return Ok(());
        }
        tracing::error!(worker = %worker, node = %state.node, %reason, "worker died unasked; its resources are released");
        state.reclaim(&worker);
        if let Some(events) = &state.events {
            let _ = events.send(WorkerEvent {
                worker,
                node: state.node.clone(),
                incarnation,
                kind: WorkerEventKind::Failed {
                    reason,
                    tail: vec![],
                },
            });
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ids: Vec<WorkerId> = state.workers.keys().cloned().collect();
        for id in ids {
            if let Some(w) = state.workers.get_mut(&id) {
                w.actor.stop(Some("node agent stopped".into()));
                // Its engine thread ends after its current call; until then it holds what the
                // worker held, and the node's next agent must not offer it.
                if let Some(exit) = w.engine_exit.take() {
                    let alloc = state.ledger.allocation(&id).cloned().unwrap_or_default();
                    state.leftovers.push(id.clone(), alloc, exit);
                }
            }
            state.reclaim(&id);
        }
        if let Some(store) = &state.store {
            store.shutdown();
        }
        tracing::info!(node = %state.node, "node agent stopped");
        Ok(())
    }
}
