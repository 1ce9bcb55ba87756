//! Booking and starting a worker: resources and ports are booked in the handler, the worker's
//! actor starts in a task (its `pre_start` forks and opens files), and messages for a worker
//! still starting wait in its pending spawn until it has started.

use super::*;

/// Where a spawn is answered.
pub(super) type SpawnPort = ractor::RpcReplyPort<fleet_actors::wire::WireReply<SpawnedWorker>>;

/// Starts a worker's actor: runs in a task, not in the agent's handler.
pub(super) type StartFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(ActorRef<WorkerMsg>, JoinHandle<()>), ractor::SpawnErr>,
            > + Send,
    >,
>;

/// Outcomes of spawn tasks, by spawn key, until the agent takes them ([`AgentMsg::Started`]
/// carries only the key: an actor reference and a join handle are not remotable).
pub(super) type StartOutcomes = Arc<
    std::sync::Mutex<HashMap<u64, Result<(ActorRef<WorkerMsg>, JoinHandle<()>), ractor::SpawnErr>>>,
>;

/// A worker whose actor is starting: its resources are booked, and messages for it wait here.
pub(super) struct PendingSpawn {
    pub(super) port: Option<SpawnPort>,
    pub(super) reply: SpawnedWorker,
    pub(super) kind: WorkerKind,
    pub(super) lease: Option<u64>,
    pub(super) engine_exit: Option<tokio::sync::oneshot::Receiver<()>>,
    pub(super) child_pid: Option<ChildPid>,
    /// Messages for this worker that came while it started, in arrival order.
    pub(super) deferred: Vec<(std::time::Instant, AgentMsg)>,
}

/// The HTTP service that hosts an isolated RpcServer.
pub(super) fn isolated_rpc_server(
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
    /// Where a worker's log files go: a submitted job's own directory on this node
    /// (`<runs_root>/<FLEET_JOB>/logs/`), else the node's run directory's `logs/`.
    pub(super) fn log_dir(&self, env: &BTreeMap<String, String>) -> PathBuf {
        let job = env
            .get("FLEET_JOB")
            .filter(|j| crate::jobs::protocol::valid_run_name(j));
        if let (Some(root), Some(job)) = (&self.runs_root, job) {
            let dir = root.join(job).join("logs");
            match std::fs::create_dir_all(&dir) {
                Ok(()) => return dir,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot create the job's log directory on this node; its workers log under the node's run directory instead (give a writable --runs-dir)")
                }
            }
        }
        self.run_dir.join("logs")
    }

    /// Checks and books a spawn (resources, ports) and returns the pending spawn (without its
    /// reply port) and the future that starts the worker's actor (its `pre_start`), to be run
    /// in a task.
    pub(super) fn prepare(
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
        let log_dir = self.log_dir(&req.spec.env);
        crate::node::worker_logs::register(&self.node.to_string(), &req.worker, &log_dir);
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
    pub(super) fn finish_spawn(
        &mut self,
        pending: PendingSpawn,
        spawned: Result<(ActorRef<WorkerMsg>, JoinHandle<()>), ractor::SpawnErr>,
    ) -> Vec<(std::time::Instant, AgentMsg)> {
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
    pub(super) fn defer_if_starting(
        &mut self,
        worker: &WorkerId,
        msg: AgentMsg,
    ) -> Option<AgentMsg> {
        match self
            .starting
            .get(worker)
            .and_then(|k| self.pending.get_mut(k))
        {
            Some(p) => {
                p.deferred.push((std::time::Instant::now(), msg));
                None
            }
            None => Some(msg),
        }
    }
}

/// A message that waited for its worker to start, as it is handed on: a call or HTTP request
/// whose deadline passed while it waited is answered `Timeout` and dropped unrun (and one
/// whose caller is gone is dropped), and the time it waited is taken off the budget it passes
/// on, like every other queue of fleet's.
pub(super) fn aged(arrived: std::time::Instant, msg: AgentMsg) -> Option<AgentMsg> {
    use crate::node::messages::WorkerHttp;
    let waited = arrived.elapsed();
    let expired = |what: String, budget: Duration| {
        FleetError::timeout(
            format!("{what} (dropped unrun: its deadline passed while its worker was starting)"),
            budget,
        )
    };
    match msg {
        AgentMsg::Call(call, port) => {
            let Ok(WorkerCall { worker, mut req }) = call.into_result() else {
                return None;
            };
            if port.is_closed() {
                return None;
            }
            if let Some(budget) = req.budget() {
                if waited >= budget {
                    let what = format!("{}.{} on {worker}", req.engine, req.method);
                    let _ = port.send(CallReply(Err(expired(what, budget))));
                    return None;
                }
                req.set_budget(budget - waited);
            }
            Some(AgentMsg::Call(Wire::new(WorkerCall { worker, req }), port))
        }
        AgentMsg::Http(http, port) => {
            let Ok(WorkerHttp { worker, mut call }) = http.into_result() else {
                return None;
            };
            if port.is_closed() {
                return None;
            }
            let budget = Duration::from_millis(call.timeout_ms);
            if waited >= budget {
                let what = format!("{} {} on {worker}", call.method, call.path);
                let _ = port.send(fleet_actors::HttpReply(Err(expired(what, budget))));
                return None;
            }
            call.timeout_ms = u64::try_from((budget - waited).as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            Some(AgentMsg::Http(Wire::new(WorkerHttp { worker, call }), port))
        }
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_actors::rpc_server::CallRequest;
    use fleet_actors::Payload;
    use std::time::Instant;

    fn call(budget: Duration) -> (AgentMsg, ractor::concurrency::OneshotReceiver<CallReply>) {
        let (tx, rx) = ractor::concurrency::oneshot();
        let mut req = CallRequest {
            deadline_ms: 0,
            idempotent: false,
            engine: "e".into(),
            method: "m".into(),
            args: Payload::json_bytes(b"null".to_vec()),
            rpc_meta: BTreeMap::new(),
            request_id: None,
            retry: None,
        };
        req.set_budget(budget);
        let msg = AgentMsg::Call(
            Wire::new(WorkerCall {
                worker: WorkerId::new("w", 0),
                req,
            }),
            tx.into(),
        );
        (msg, rx)
    }

    #[tokio::test]
    async fn a_call_whose_deadline_passed_while_its_worker_started_is_answered_timeout_unrun() {
        let (msg, rx) = call(Duration::from_millis(50));
        let arrived = Instant::now() - Duration::from_millis(200);
        assert!(
            aged(arrived, msg).is_none(),
            "an expired call is not handed on"
        );
        let CallReply(r) = rx.await.unwrap();
        let e = r.unwrap_err();
        assert!(matches!(e, FleetError::Timeout { .. }), "{e}");
        assert!(
            e.to_string().contains("while its worker was starting"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_time_a_call_waited_for_its_worker_is_taken_off_its_budget() {
        let (msg, _rx) = call(Duration::from_secs(10));
        let arrived = Instant::now() - Duration::from_millis(500);
        let Some(AgentMsg::Call(call, _)) = aged(arrived, msg) else {
            panic!("a live call is handed on");
        };
        let left = call.into_result().unwrap().req.budget().unwrap();
        assert!(left <= Duration::from_millis(9_500), "{left:?}");
    }
}
