//! The node agent actor.
//!
//! Its handlers never wait on workers: calls are forwarded with the caller's reply port;
//! spawns book resources in the handler, then start the worker's actor (its `pre_start`: a
//! fork, a log file) in a task that reports back with [`AgentMsg::Started`], and messages for
//! a worker still starting wait in its pending spawn until it has started; stops (destroy
//! hooks, then actor stop) run in spawned tasks that report back with [`AgentMsg::Reclaim`];
//! child pids are published by the launchers ([`ChildPid`]), never looked up in `/proc`. Workers are linked to the agent, so a worker that dies unasked is
//! noticed at once, its resources are released and a [`WorkerEvent`] is pushed.

use super::directory::LocalDirectory;
use super::messages::{
    AgentMsg, LocalWorkerInfo, NodeInfo, SpawnRequest, SpawnedWorker, StopRequest, WorkerCall,
    WorkerControl, WorkerEvent, WorkerEventKind,
};
use super::ports::PortAllocator;
use super::resources::{Ledger, NodeResources};
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

/// Where a spawn is answered.
type SpawnPort = ractor::RpcReplyPort<fleet_actors::wire::WireReply<SpawnedWorker>>;

/// Starts a worker's actor: runs in a task, not in the agent's handler.
type StartFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(ActorRef<WorkerMsg>, JoinHandle<()>), ractor::SpawnErr>,
            > + Send,
    >,
>;

/// Outcomes of spawn tasks, by spawn key, until the agent takes them ([`AgentMsg::Started`]
/// carries only the key: an actor reference and a join handle are not remotable).
type StartOutcomes = Arc<
    std::sync::Mutex<HashMap<u64, Result<(ActorRef<WorkerMsg>, JoinHandle<()>), ractor::SpawnErr>>>,
>;

/// A worker whose actor is starting: its resources are booked, and messages for it wait here.
struct PendingSpawn {
    port: Option<SpawnPort>,
    reply: SpawnedWorker,
    kind: WorkerKind,
    lease: Option<u64>,
    engine_exit: Option<tokio::sync::oneshot::Receiver<()>>,
    child_pid: Option<ChildPid>,
    /// Messages for this worker that came while it started, in arrival order.
    deferred: Vec<AgentMsg>,
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

/// The HTTP service that hosts an isolated RpcServer.
fn isolated_rpc_server(
    worker: &WorkerId,
    node: &NodeId,
    command: &Option<Vec<String>>,
) -> Result<HttpServiceSpec, FleetError> {
    let argv = match command {
        Some(c) => c
            .iter()
            .map(|a| {
                a.replace("{worker}", &worker.to_string())
                    .replace("{node}", &node.to_string())
            })
            .collect(),
        None => {
            let bin = crate::exe::fleet_executable().ok_or_else(|| {
                FleetError::bad_request(
                    format!("starting isolated RpcServer {worker}"),
                    "this process is not the `fleet` binary, so it cannot start `fleet rpc-server`: set FLEET_BIN to the fleet executable, or give Isolation::Process { command } (your binary's rpc-server entry, with {port})",
                )
            })?;
            vec![
                bin,
                "rpc-server".into(),
                "--port".into(),
                "{port}".into(),
                "--worker".into(),
                worker.to_string(),
                "--node".into(),
                node.to_string(),
            ]
        }
    };
    Ok(HttpServiceSpec::new(argv).protocol(CallProtocol::FleetRpc))
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

    /// Checks and books a spawn (resources, ports) and returns the pending spawn (without its
    /// reply port) and the future that starts the worker's actor (its `pre_start`), to be run
    /// in a task.
    fn prepare(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        req: SpawnRequest,
    ) -> Result<(PendingSpawn, StartFuture), FleetError> {
        if self.workers.contains_key(&req.worker) || self.starting.contains_key(&req.worker) {
            return Err(FleetError::bad_request(
                format!("spawning {} on node {}", req.worker, self.node),
                "a worker with this id already runs here",
            ));
        }
        let service = match &req.kind {
            WorkerKind::RpcServer(RpcServerSpec {
                isolation: Isolation::InProcess,
            }) => None,
            WorkerKind::RpcServer(RpcServerSpec {
                isolation: Isolation::Process { command },
            }) => Some(isolated_rpc_server(&req.worker, &self.node, command)?),
            WorkerKind::HttpService(spec) => Some(spec.clone()),
            WorkerKind::Rollout(_) => None,
        };
        // A process worker serves on its first port: make sure it has one.
        // A process worker serves on its first port: make sure it has one; a rollout worker
        // needs two (backend, proxy).
        let port_count = match (&req.kind, service.is_some()) {
            (WorkerKind::Rollout(_), _) => req.spec.ports.max(2),
            (_, true) => req.spec.ports.max(1),
            _ => req.spec.ports,
        };
        self.ledger.allocate(&req.worker, &req.spec, &req.gpus)?;
        let lease = if port_count > 0 {
            match self.ports.reserve(port_count) {
                Ok(l) => Some(l),
                Err(e) => {
                    self.ledger.release(&req.worker);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let ports = lease.as_ref().map(|l| l.ports.clone()).unwrap_or_default();
        let mut env: BTreeMap<String, String> = req.spec.env.clone();
        env.insert("FLEET_NODE".into(), self.node.to_string());
        env.extend(req.env.clone());
        if !req.gpus.is_empty() {
            let ids: Vec<String> = req.gpus.iter().map(u32::to_string).collect();
            env.insert("CUDA_VISIBLE_DEVICES".into(), ids.join(","));
        }
        let log_dir = self.run_dir.join("logs");
        let mut log_path = None;
        let mut engine_exit = None;
        let mut child_pid = None;
        let hook = {
            let me = myself.clone();
            let node = self.node.clone();
            let incarnation = req.incarnation;
            Arc::new(move |f: WorkerFailure| {
                let _ = me.cast(AgentMsg::Failed(Wire::new(WorkerEvent {
                    worker: f.worker,
                    node: node.clone(),
                    incarnation,
                    kind: WorkerEventKind::Failed {
                        reason: f.reason,
                        tail: f.tail,
                    },
                })));
            })
        };
        let cell = myself.get_cell();
        let start: StartFuture = match service {
            None if matches!(req.kind, WorkerKind::Rollout(_)) => {
                let WorkerKind::Rollout(spec) = &req.kind else {
                    unreachable!()
                };
                let args = crate::rollout::worker::RolloutArgs {
                    worker: req.worker.clone(),
                    node: self.node.to_string(),
                    spec: spec.clone(),
                    ports: ports.clone(),
                    env: env.clone(),
                    log_dir: Some(log_dir),
                    on_failure: Some(hook),
                    client: self.client.clone(),
                    agents: self.agents.clone(),
                    fleet_exe: crate::exe::fleet_executable(),
                };
                Box::pin(async move {
                    Actor::spawn_linked(None, crate::rollout::worker::RolloutWorker, args, cell)
                        .await
                })
            }
            None => {
                let mut args = RpcServerArgs::new(
                    req.worker.clone(),
                    self.node.to_string(),
                    self.registry.clone(),
                );
                args.env = env.clone();
                args.max_result = self.max_message;
                let (signal, exit) = fleet_actors::rpc_server::EngineExit::new();
                args.engine_exit = Some(signal);
                engine_exit = Some(exit);
                Box::pin(async move { Actor::spawn_linked(None, RpcServer, args, cell).await })
            }
            Some(mut spec) => {
                // An isolated rpc-server (any service spoken to over fleet RPC) gets a random
                // token of its own on stdin (the launcher adds `--token-stdin` to a `fleet
                // rpc-server` command), which the launcher sends with every call: nothing else
                // on this host can drive it, and nothing it forks inherits the token (it is not
                // in its environment or argv).
                let fleet_rpc = matches!(req.kind, WorkerKind::RpcServer(_))
                    || spec.protocol == CallProtocol::FleetRpc;
                let secret = fleet_rpc.then(|| {
                    fleet_launcher::process::StdinSecret::new(crate::rpc_http::auth::random_token())
                });
                for (k, v) in &spec.env {
                    env.insert(k.clone(), v.clone());
                }
                spec.env.clear();
                log_path = Some(
                    log_dir
                        .join(format!("{}.log", req.worker.to_string().replace('/', "_")))
                        .to_string_lossy()
                        .into_owned(),
                );
                let max_in_flight = spec.max_in_flight;
                let args = HttpLauncherArgs {
                    worker: req.worker.clone(),
                    node: self.node.to_string(),
                    spec,
                    ports: ports.clone(),
                    env: env.clone(),
                    log_dir: Some(log_dir),
                    on_failure: Some(hook),
                    max_in_flight,
                    client: self.client.clone(),
                    secret,
                    child_pid: ChildPid::new(),
                };
                child_pid = Some(args.child_pid.clone());
                Box::pin(async move { Actor::spawn_linked(None, HttpLauncher, args, cell).await })
            }
        };
        let pending = PendingSpawn {
            port: None,
            reply: SpawnedWorker {
                worker: req.worker.clone(),
                node: self.node.clone(),
                gpus: req.gpus.clone(),
                ports: ports.clone(),
                env,
                log_path,
                incarnation: req.incarnation,
            },
            kind: req.kind,
            lease: lease.as_ref().map(|l| l.id),
            engine_exit,
            child_pid,
            deferred: Vec::new(),
        };
        Ok((pending, start))
    }

    /// Registers a worker whose actor started (or undoes its booking if it did not) and
    /// answers its spawn.
    fn finish_spawn(
        &mut self,
        pending: PendingSpawn,
        spawned: Result<(ActorRef<WorkerMsg>, JoinHandle<()>), ractor::SpawnErr>,
    ) -> Vec<AgentMsg> {
        let PendingSpawn {
            port,
            reply,
            kind,
            lease,
            engine_exit,
            child_pid,
            deferred,
        } = pending;
        let undo = |state: &mut AgentState| {
            state.ledger.release(&reply.worker);
            if let Some(l) = lease {
                state.ports.release(l);
            }
        };
        let answer = |r: Result<SpawnedWorker, FleetError>| {
            if let Some(port) = port {
                let _ = port.send(Wire::new(r));
            }
        };
        let (actor, join) = match spawned {
            Ok(x) => x,
            Err(e) => {
                undo(self);
                let reason = match &e {
                    ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
                    other => other.to_string(),
                };
                answer(Err(FleetError::WorkerFailed {
                    worker: reply.worker.to_string(),
                    node: self.node.to_string(),
                    reason: format!("it did not start: {reason}"),
                    tail: vec![],
                }));
                return deferred;
            }
        };
        // Died between its start and now (its supervision event came first).
        if let Some(reason) = self.early_exits.remove(&actor.get_id()) {
            undo(self);
            answer(Err(FleetError::WorkerFailed {
                worker: reply.worker.to_string(),
                node: self.node.to_string(),
                reason: format!("it stopped right after it started: {reason}"),
                tail: vec![],
            }));
            return deferred;
        }
        if matches!(
            kind,
            WorkerKind::RpcServer(RpcServerSpec {
                isolation: Isolation::InProcess
            })
        ) {
            // Callers on other nodes find it here and skip this agent's hop.
            ractor::pg::join_scoped(
                crate::membership::protocol::FLEET_SCOPE.to_string(),
                crate::membership::protocol::worker_group(&self.node, &reply.worker),
                vec![actor.get_cell()],
            );
        }
        self.by_actor.insert(actor.get_id(), reply.worker.clone());
        self.directory.insert(reply.worker.clone(), actor.clone());
        tracing::info!(worker = %reply.worker, node = %self.node, kind = kind.name(), gpus = ?reply.gpus, ports = ?reply.ports, "worker started");
        self.workers.insert(
            reply.worker.clone(),
            LocalWorker {
                actor,
                join: Some(join),
                kind,
                gpus: reply.gpus.clone(),
                ports: reply.ports.clone(),
                lease,
                stopping: false,
                incarnation: reply.incarnation,
                engine_exit,
                child_pid,
            },
        );
        answer(Ok(reply));
        deferred
    }

    /// Keeps `msg` for `worker` if that worker is starting (handled once it has started, in
    /// arrival order); gives it back otherwise.
    fn defer_if_starting(&mut self, worker: &WorkerId, msg: AgentMsg) -> Option<AgentMsg> {
        match self
            .starting
            .get(worker)
            .and_then(|k| self.pending.get_mut(k))
        {
            Some(p) => {
                p.deferred.push(msg);
                None
            }
            None => Some(msg),
        }
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

/// Starts the node's store on a port from the node's allocator (claimed host-wide, held for
/// the life of the agent), unless the config names a port.
async fn start_store(
    node: &NodeId,
    mut cfg: crate::store::StoreConfig,
    ports: &mut PortAllocator,
) -> Result<crate::store::Store, ActorProcessingErr> {
    if cfg.port.is_none() {
        let lease = ports
            .reserve(1)
            .map_err(|e| format!("node {node}: no port for the object store: {e}"))?;
        cfg.port = lease.ports.first().copied();
    }
    crate::store::Store::start(&node.to_string(), cfg)
        .await
        .map_err(|e| format!("node {node}: the object store did not start: {e}").into())
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
            Some(cfg) => Some(start_store(&args.node, cfg, &mut ports).await?),
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

/// Handles one agent message. Not `async`: nothing here may wait (see the module doc).
fn on_message(
    myself: ActorRef<AgentMsg>,
    message: AgentMsg,
    state: &mut AgentState,
) -> Result<(), ActorProcessingErr> {
    match message {
        AgentMsg::Spawn(req, port) => {
            let req = match req.into_result() {
                Ok(req) => req,
                Err(e) => {
                    let _ = port.send(Wire::new(Err(e)));
                    return Ok(());
                }
            };
            let worker = req.worker.clone();
            let (pending, start) = match state.prepare(&myself, req) {
                Ok((mut pending, start)) => {
                    pending.port = Some(port);
                    (pending, start)
                }
                Err(e) => {
                    let _ = port.send(Wire::new(Err(e)));
                    return Ok(());
                }
            };
            let key = state.next_spawn;
            state.next_spawn += 1;
            state.starting.insert(worker, key);
            state.pending.insert(key, pending);
            let (me, outcomes) = (myself.clone(), state.outcomes.clone());
            tokio::spawn(async move {
                let outcome = start.await;
                let started = outcome.as_ref().ok().map(|(a, _)| a.clone());
                outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, outcome);
                if me.cast(AgentMsg::Started(Wire::new(key))).is_err() {
                    // The agent is gone: nothing will own this worker.
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    if let Some(a) = started {
                        a.stop(Some("node agent stopped".into()));
                    }
                }
            });
        }
        AgentMsg::Started(key) => {
            let Ok(key) = key.into_result() else {
                return Ok(());
            };
            let outcome = state
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            let (Some(pending), Some(outcome)) = (state.pending.remove(&key), outcome) else {
                return Ok(());
            };
            state.starting.remove(&pending.reply.worker);
            let deferred = state.finish_spawn(pending, outcome);
            if state.pending.is_empty() {
                state.early_exits.clear();
            }
            for msg in deferred {
                on_message(myself.clone(), msg, state)?;
            }
        }
        AgentMsg::Call(call, port) => match call.into_result() {
            Ok(WorkerCall { worker, req }) => match state.workers.get(&worker) {
                Some(w) if !w.stopping => {
                    let sent = if matches!(
                        w.kind,
                        WorkerKind::RpcServer(RpcServerSpec {
                            isolation: Isolation::InProcess
                        })
                    ) {
                        // It refuses oversized results itself: hand it the caller's port,
                        // no extra hop.
                        w.actor
                            .send_message(WorkerMsg::Call(req, port))
                            .map_err(|e| e.to_string())
                    } else {
                        crate::remote::forward_call_checked(
                            &w.actor,
                            worker.clone(),
                            req,
                            port,
                            state.max_message,
                        )
                    };
                    if let Err(e) = sent {
                        tracing::warn!(worker = %worker, error = %e, "call to a stopped worker dropped");
                    }
                }
                Some(_) => {
                    let _ = port.send(CallReply(Err(FleetError::Unavailable {
                        what: format!("worker {worker}"),
                        detail: "it is stopping".into(),
                    })));
                }
                None => {
                    let msg = AgentMsg::Call(
                        Wire::new(WorkerCall {
                            worker: worker.clone(),
                            req,
                        }),
                        port,
                    );
                    if let Some(AgentMsg::Call(_, port)) = state.defer_if_starting(&worker, msg) {
                        let _ = port.send(CallReply(Err(state.not_found(&worker))));
                    }
                }
            },
            Err(e) => {
                let _ = port.send(CallReply(Err(e)));
            }
        },
        AgentMsg::Control(ctl, port) => match ctl.into_result() {
            Ok(WorkerControl { worker, control }) => match state.workers.get(&worker) {
                Some(w) => {
                    if let Err(e) = w.actor.send_message(WorkerMsg::Control(control, port)) {
                        tracing::warn!(worker = %worker, error = %e, "control message to a stopped worker dropped");
                    }
                }
                None => {
                    let msg = AgentMsg::Control(
                        Wire::new(WorkerControl {
                            worker: worker.clone(),
                            control,
                        }),
                        port,
                    );
                    if let Some(AgentMsg::Control(_, port)) = state.defer_if_starting(&worker, msg)
                    {
                        let _ = port.send(ControlReply(Err(state.not_found(&worker))));
                    }
                }
            },
            Err(e) => {
                let _ = port.send(ControlReply(Err(e)));
            }
        },
        AgentMsg::Stop(req, port) => {
            let StopRequest {
                worker,
                destroy_timeout_ms,
            } = match req.into_result() {
                Ok(r) => r,
                Err(e) => {
                    let _ = port.send(ControlReply(Err(e)));
                    return Ok(());
                }
            };
            if state.starting.contains_key(&worker) {
                // Handled once the spawn is done, so the worker it started is stopped.
                let msg = AgentMsg::Stop(
                    Wire::new(StopRequest {
                        worker: worker.clone(),
                        destroy_timeout_ms,
                    }),
                    port,
                );
                let _ = state.defer_if_starting(&worker, msg);
                return Ok(());
            }
            state.tombstones.remove(&worker);
            let Some(w) = state.workers.get_mut(&worker) else {
                // Already gone: stopping is idempotent.
                let _ = port.send(ControlReply(Ok(ControlOk::Done)));
                return Ok(());
            };
            w.stopping = true;
            let actor = w.actor.clone();
            let join = w.join.take();
            let engine_exit = w.engine_exit.take();
            let drain_key = state.next_drain;
            state.next_drain += 1;
            let me = myself.clone();
            tokio::spawn(async move {
                let bound = Duration::from_millis(destroy_timeout_ms);
                let destroyed = actor
                    .call(
                        |p| {
                            WorkerMsg::Control(
                                Control::Destroy {
                                    timeout_ms: destroy_timeout_ms,
                                },
                                p,
                            )
                        },
                        Some(bound + Duration::from_secs(1)),
                    )
                    .await;
                let outcome = match destroyed {
                    Ok(ractor::rpc::CallResult::Success(ControlReply(r))) => r,
                    _ => Ok(ControlOk::Done),
                };
                if let Some(join) = join {
                    if tokio::time::timeout(Duration::from_secs(2), join)
                        .await
                        .is_err()
                    {
                        tracing::warn!(worker = %worker, "worker did not stop after destroy; killing it");
                        actor.kill();
                    }
                } else {
                    actor.stop(None);
                }
                // An in-process engine cannot be killed: until its thread has ended it may
                // still run on its GPUs, so its resources stay held until then.
                let mut exit = match engine_exit {
                    Some(mut rx) => match tokio::time::timeout(ENGINE_EXIT_GRACE, &mut rx).await {
                        Ok(_) => None,
                        Err(_) => Some(rx),
                    },
                    None => None,
                };
                let Some(rx) = exit.as_mut() else {
                    let _ = me.cast(AgentMsg::Reclaim(Wire::new(worker)));
                    let _ = port.send(ControlReply(outcome));
                    return;
                };
                let mut reason = format!(
                    "its engine thread is still running after the destroy deadline ({destroy_timeout_ms} ms); its GPUs, ports and memory stay held until the thread ends"
                );
                if let Err(e) = &outcome {
                    reason.push_str(&format!(" ({e})"));
                }
                tracing::warn!(worker = %worker, %reason, "worker stopping, resources held");
                let _ = me.cast(AgentMsg::Draining(Wire::new((
                    worker.clone(),
                    drain_key,
                    reason.clone(),
                ))));
                let _ = port.send(ControlReply(Ok(ControlOk::Deferred(reason))));
                let since = std::time::Instant::now();
                // Ends when the thread does; it cannot be cut short, only reported.
                while tokio::time::timeout(Duration::from_secs(60), &mut *rx)
                    .await
                    .is_err()
                {
                    tracing::warn!(worker = %worker, running_for_s = since.elapsed().as_secs(), "zombie engine: the deleted worker's engine thread is still running; its resources stay held");
                }
                let _ = me.cast(AgentMsg::Drained(Wire::new(drain_key)));
            });
        }
        AgentMsg::Http(req, port) => match req.into_result() {
            Ok(super::messages::WorkerHttp { worker, call }) => match state.workers.get(&worker) {
                Some(w) => {
                    let sent = crate::remote::forward_http_checked(
                        &w.actor,
                        worker.clone(),
                        call,
                        port,
                        state.max_message,
                    );
                    if let Err(e) = sent {
                        tracing::warn!(worker = %worker, error = %e, "http request to a stopped worker dropped");
                    }
                }
                None => {
                    let msg = AgentMsg::Http(
                        Wire::new(super::messages::WorkerHttp {
                            worker: worker.clone(),
                            call,
                        }),
                        port,
                    );
                    if let Some(AgentMsg::Http(_, port)) = state.defer_if_starting(&worker, msg) {
                        let _ = port.send(fleet_actors::HttpReply(Err(state.not_found(&worker))));
                    }
                }
            },
            Err(e) => {
                let _ = port.send(fleet_actors::HttpReply(Err(e)));
            }
        },
        AgentMsg::Failed(event) => {
            if let Ok(ev) = event.into_result() {
                let starting = state
                    .starting
                    .get(&ev.worker)
                    .and_then(|k| state.pending.get(k))
                    .is_some_and(|p| p.reply.incarnation == ev.incarnation);
                if starting {
                    // Its launcher reported before its spawn was registered.
                    let worker = ev.worker.clone();
                    let _ = state.defer_if_starting(&worker, AgentMsg::Failed(Wire::new(ev)));
                    return Ok(());
                }
                // About an earlier instance of this id (already stopped and replaced)?
                let current = state.workers.get(&ev.worker).map(|w| w.incarnation);
                if current != Some(ev.incarnation) {
                    tracing::debug!(worker = %ev.worker, incarnation = ev.incarnation, ?current, "failure of an earlier incarnation ignored");
                    return Ok(());
                }
                // Failed for good (no restart left): its process is gone, so stop its actor
                // and give its GPUs, CPU, memory and ports back now. The scheduler keeps the
                // worker as failed, with the reason, until it is deleted.
                if let Some(w) = state.workers.get_mut(&ev.worker) {
                    w.stopping = true;
                    w.actor.stop(Some("failed".into()));
                }
                if let WorkerEventKind::Failed { reason, tail } = &ev.kind {
                    state.tombstones.insert(
                        ev.worker.clone(),
                        FleetError::WorkerFailed {
                            worker: ev.worker.to_string(),
                            node: state.node.to_string(),
                            reason: reason.clone(),
                            tail: tail.clone(),
                        },
                        std::time::Instant::now(),
                    );
                }
                if state.reclaim(&ev.worker) {
                    tracing::info!(worker = %ev.worker, node = %state.node, "failed worker stopped, resources released");
                }
                if let Some(events) = &state.events {
                    let _ = events.send(ev);
                }
            }
        }
        AgentMsg::ReservePorts(count, port) => {
            let r = count.into_result().and_then(|n| state.ports.reserve(n));
            let _ = port.send(Wire::new(r));
        }
        AgentMsg::ReleasePorts(lease) => {
            if let Ok(id) = lease.into_result() {
                state.ports.release(id);
            }
        }
        AgentMsg::Info(port) => {
            let _ = port.send(Wire::new(Ok(state.info())));
        }
        AgentMsg::Roster(port) => {
            use super::messages::{RosterEntry, RosterState};
            // Workers still starting are not listed: the scheduler holds them as starting
            // and reconciles only the ones it thinks are running.
            let roster = state
                .workers
                .iter()
                .map(|(id, w)| RosterEntry {
                    worker: id.clone(),
                    incarnation: w.incarnation,
                    state: if w.stopping {
                        RosterState::Stopping
                    } else {
                        RosterState::Running
                    },
                })
                .chain(state.draining.values().map(|d| RosterEntry {
                    worker: d.worker.clone(),
                    incarnation: d.incarnation,
                    state: RosterState::Stopping,
                }))
                .collect();
            let _ = port.send(Wire::new(roster));
        }
        AgentMsg::Draining(notice) => {
            if let Ok((worker, key, reason)) = notice.into_result() {
                if let Some(w) = state.workers.remove(&worker) {
                    state.by_actor.remove(&w.actor.get_id());
                    state.directory.remove(&worker);
                    let ledger_key =
                        WorkerId::new(format!("{}~draining{key}", worker.role), worker.index);
                    state.ledger.rekey(&worker, ledger_key.clone());
                    state.draining.insert(
                        key,
                        DrainingWorker {
                            worker,
                            incarnation: w.incarnation,
                            ledger_key,
                            kind: w.kind,
                            gpus: w.gpus,
                            ports: w.ports,
                            lease: w.lease,
                            reason,
                        },
                    );
                }
            }
        }
        AgentMsg::Drained(key) => {
            if let Some(d) = key
                .into_result()
                .ok()
                .and_then(|k| state.draining.remove(&k))
            {
                state.ledger.release(&d.ledger_key);
                if let Some(lease) = d.lease {
                    state.ports.release(lease);
                }
                tracing::info!(worker = %d.worker, node = %state.node, "engine thread ended; the stopped worker's resources are released");
                if let Some(events) = &state.events {
                    let _ = events.send(WorkerEvent {
                        worker: d.worker,
                        node: state.node.clone(),
                        incarnation: d.incarnation,
                        kind: WorkerEventKind::Released,
                    });
                }
            }
        }
        AgentMsg::Reclaim(worker) => {
            if let Ok(worker) = worker.into_result() {
                if state.reclaim(&worker) {
                    tracing::info!(worker = %worker, node = %state.node, "worker stopped, resources released");
                }
            }
        }
    }
    Ok(())
}
