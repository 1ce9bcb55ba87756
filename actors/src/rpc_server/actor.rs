//! The RpcServer actor: admission, control messages and bookkeeping; engine work goes to the
//! engine thread.

use super::dedupe::Admit;
use super::executor::{self, lock, Job, Shared, Slot};
use super::messages::{
    CallReply, Control, ControlOk, ControlReply, EngineSummary, WorkerMsg, WorkerStatus,
};
use super::{DEFAULT_DEDUPE_BYTES, DEFAULT_DEDUPE_CAPACITY};
use crate::engine::EngineRegistry;
use crate::error::FleetError;
use crate::ids::WorkerId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The RpcServer worker actor. Spawn it with [`RpcServerArgs`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RpcServer;

/// What an RpcServer starts with.
#[derive(Debug, Clone)]
pub struct RpcServerArgs {
    /// Its id.
    pub worker: WorkerId,
    /// Its node, for error messages.
    pub node: String,
    /// Initial environment (spec env plus `CUDA_VISIBLE_DEVICES`).
    pub env: BTreeMap<String, String>,
    /// The engine types it can create.
    pub registry: EngineRegistry,
    /// Completed request ids remembered (default [`DEFAULT_DEDUPE_CAPACITY`]).
    pub dedupe_capacity: usize,
    /// Bytes of recorded replies kept at most (default [`DEFAULT_DEDUPE_BYTES`]).
    pub dedupe_bytes: usize,
    /// Largest engine result returned (bytes); a larger one is answered with
    /// `PayloadTooLarge` (default: no limit; a node sets its message limit).
    pub max_result: usize,
    /// Signalled when the engine thread has ended (see [`EngineExit`]).
    pub engine_exit: Option<EngineExit>,
}

/// The "engine thread joined" signal of one RpcServer: the receiver [`EngineExit::new`] returns
/// resolves (with `Ok` or a closed-channel error alike) once the worker's engine thread has
/// ended, its engines dropped. Until then the engine may still run on its GPUs, so its node
/// keeps the worker's resources.
#[derive(Clone, Default)]
pub struct EngineExit(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

impl std::fmt::Debug for EngineExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineExit")
    }
}

impl EngineExit {
    /// A signal, and the receiver that resolves when the engine thread it is given to ends.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (EngineExit(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    fn take(&self) -> Option<oneshot::Sender<()>> {
        lock(&self.0).take()
    }
}

impl RpcServerArgs {
    /// Arguments with the default dedupe capacity.
    pub fn new(worker: WorkerId, node: impl Into<String>, registry: EngineRegistry) -> Self {
        RpcServerArgs {
            worker,
            node: node.into(),
            env: BTreeMap::new(),
            registry,
            dedupe_capacity: DEFAULT_DEDUPE_CAPACITY,
            dedupe_bytes: DEFAULT_DEDUPE_BYTES,
            max_result: usize::MAX,
            engine_exit: None,
        }
    }
}

/// The actor's state.
pub struct State {
    worker: WorkerId,
    node: String,
    registry: EngineRegistry,
    env: BTreeMap<String, String>,
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    started: Instant,
    destroying: bool,
}

impl State {
    fn unavailable(&self) -> FleetError {
        FleetError::Unavailable {
            what: format!("worker {}", self.worker),
            detail: "it is being destroyed".into(),
        }
    }

    fn destroyed_error(&self, how: &str) -> FleetError {
        FleetError::WorkerFailed {
            worker: self.worker.to_string(),
            node: self.node.clone(),
            reason: format!(
                "{how} while this call was queued or running; any result it still produces is dropped"
            ),
            tail: vec![],
        }
    }

    fn send_job(&self, job: Job) -> Result<(), FleetError> {
        match &self.jobs {
            Some(tx) if !self.destroying => tx.send(job).map_err(|_| FleetError::WorkerFailed {
                worker: self.worker.to_string(),
                node: self.node.clone(),
                reason: "its engine thread has exited".into(),
                tail: vec![],
            }),
            _ => Err(self.unavailable()),
        }
    }

    fn status(&self) -> WorkerStatus {
        let engines = lock(&self.shared.engines)
            .iter()
            .map(|(name, slot)| EngineSummary {
                name: name.clone(),
                type_name: slot.type_name().to_string(),
            })
            .collect();
        let in_flight = lock(&self.shared.in_flight)
            .as_ref()
            .map(|(what, since)| (what.clone(), since.elapsed().as_millis() as u64));
        WorkerStatus {
            worker: self.worker.clone(),
            engines,
            in_flight,
            queued: self.shared.queued.load(Ordering::Relaxed),
            calls_done: self.shared.calls_done.load(Ordering::Relaxed),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            pid: None,
        }
    }
}

/// Answers `port` with the outcome of a oneshot from the engine thread, in a task of its own so
/// the actor does not wait.
fn reply_when_done(
    rx: oneshot::Receiver<Result<(), FleetError>>,
    port: RpcReplyPort<ControlReply>,
    worker: WorkerId,
) {
    tokio::spawn(async move {
        let r = match rx.await {
            Ok(r) => r.map(|()| ControlOk::Done),
            Err(_) => Err(FleetError::Unavailable {
                what: format!("worker {worker}"),
                detail: "it stopped before answering".into(),
            }),
        };
        let _ = port.send(ControlReply(r));
    });
}

impl Actor for RpcServer {
    type Msg = WorkerMsg;
    type State = State;
    type Arguments = RpcServerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let shared = Arc::new(Shared::new(args.dedupe_capacity, args.dedupe_bytes));
        let jobs = executor::start(
            args.worker.clone(),
            args.env.clone(),
            shared.clone(),
            args.max_result,
            args.engine_exit.as_ref().and_then(EngineExit::take),
        )?;
        tracing::debug!(worker = %args.worker, node = %args.node, "rpc server started");
        Ok(State {
            worker: args.worker,
            node: args.node,
            registry: args.registry,
            env: args.env,
            shared,
            jobs: Some(jobs),
            started: Instant::now(),
            destroying: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Call(req, port) => {
                if let Some(e) = req.decode_failure() {
                    let _ = port.send(CallReply(Err(e)));
                    return Ok(());
                }
                if state.destroying {
                    let _ = port.send(CallReply(Err(state.unavailable())));
                    return Ok(());
                }
                if !lock(&state.shared.engines).contains_key(&req.engine) {
                    let known = lock(&state.shared.engines)
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    let _ = port.send(CallReply(Err(FleetError::EngineNotFound {
                        worker: state.worker.to_string(),
                        engine: req.engine,
                        known,
                    })));
                    return Ok(());
                }
                let port = match &req.request_id {
                    Some(id) => {
                        match lock(&state.shared.dedupe).admit(id, &req.engine, &req.method, port) {
                            Admit::Run(port) => port,
                            Admit::Done(reply, port) => {
                                tracing::debug!(worker = %state.worker, request_id = %id, "repeat of a completed request answered from the record");
                                metrics::counter!("fleet_dedupe_hits_total").increment(1);
                                let _ = port.send(reply);
                                return Ok(());
                            }
                            Admit::Joined => return Ok(()),
                            Admit::Conflict(e, port) => {
                                let _ = port.send(CallReply(Err(e)));
                                return Ok(());
                            }
                        }
                    }
                    None => port,
                };
                // The caller's budget becomes a local deadline now; ractor_cluster also closes a
                // remote caller's port at its timeout, so the earlier of the two counts.
                let now = Instant::now();
                let deadline = [req.budget(), port.get_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .and_then(|budget| Some((now.checked_add(budget)?, budget)));
                state.shared.queued.fetch_add(1, Ordering::Relaxed);
                metrics::gauge!("fleet_engine_queue_depth").increment(1.0);
                let seq = state.shared.register(req.request_id.clone(), port);
                if let Err(e) = state.send_job(Job::Call { req, seq, deadline }) {
                    // The engine thread is gone: answer the caller (and any joiner) now.
                    tracing::error!(worker = %state.worker, error = %e, "engine call not dispatched");
                    state.shared.queued.fetch_sub(1, Ordering::Relaxed);
                    metrics::gauge!("fleet_engine_queue_depth").decrement(1.0);
                    state.shared.fail_all(&e);
                }
            }
            WorkerMsg::Control(control, port) => self.control(myself, control, port, state),
            WorkerMsg::Lifecycle(_) => {}
            WorkerMsg::Http(call, port) => {
                let _ = port.send(crate::http_call::HttpReply(Err(FleetError::bad_request(
                    format!("{} {} to worker {}", call.method, call.path, state.worker),
                    "it is an in-process RpcServer with no HTTP endpoint; call its engines instead",
                ))));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the sender ends the engine thread after its current job; its callers are
        // answered now, and a late result is dropped.
        state.jobs = None;
        state
            .shared
            .fail_all(&state.destroyed_error("it was stopped"));
        tracing::debug!(worker = %state.worker, "rpc server stopped");
        Ok(())
    }
}

fn answer(port: RpcReplyPort<ControlReply>, r: Result<ControlOk, FleetError>) {
    let _ = port.send(ControlReply(r));
}

impl RpcServer {
    fn control(
        &self,
        myself: ActorRef<WorkerMsg>,
        control: Control,
        port: RpcReplyPort<ControlReply>,
        state: &mut State,
    ) {
        match control {
            Control::Health => {
                if state.destroying {
                    answer(port, Err(state.unavailable()))
                } else {
                    answer(port, Ok(ControlOk::Done))
                }
            }
            Control::Status => answer(port, Ok(ControlOk::Status(state.status()))),
            Control::Cancel { request_id } => {
                let n = state
                    .shared
                    .cancel(&request_id, &format!("a call on worker {}", state.worker));
                if n > 0 {
                    tracing::debug!(worker = %state.worker, request_id = %request_id, dropped = n, "queued call cancelled by its caller");
                }
                answer(port, Ok(ControlOk::Done))
            }
            Control::Undecodable(detail) => answer(port, Err(FleetError::Protocol { detail })),
            Control::CreateEngine {
                name,
                type_name,
                args,
            } => {
                if state.destroying {
                    return answer(port, Err(state.unavailable()));
                }
                let Some(factory) = state.registry.get(&type_name) else {
                    return answer(
                        port,
                        Err(FleetError::EngineTypeUnknown {
                            type_name,
                            node: state.node.clone(),
                            known: state.registry.type_names().join(", "),
                        }),
                    );
                };
                {
                    let mut slots = lock(&state.shared.engines);
                    if slots.contains_key(&name) {
                        return answer(
                            port,
                            Err(FleetError::EngineExists {
                                worker: state.worker.to_string(),
                                engine: name,
                            }),
                        );
                    }
                    slots.insert(name.clone(), Slot::Pending(type_name.clone()));
                }
                let (tx, rx) = oneshot::channel();
                let job = Job::Create {
                    name: name.clone(),
                    type_name,
                    factory,
                    args,
                    reply: tx,
                };
                if let Err(e) = state.send_job(job) {
                    lock(&state.shared.engines).remove(&name);
                    return answer(port, Err(e));
                }
                reply_when_done(rx, port, state.worker.clone());
            }
            Control::Configure(cfg) => {
                let (tx, rx) = oneshot::channel();
                if let Err(e) = state.send_job(Job::Configure { cfg, reply: tx }) {
                    return answer(port, Err(e));
                }
                reply_when_done(rx, port, state.worker.clone());
            }
            Control::SetEnv(vars) => {
                state.env.extend(vars.clone());
                match state.send_job(Job::SetEnv(vars)) {
                    Ok(()) => answer(port, Ok(ControlOk::Done)),
                    Err(e) => answer(port, Err(e)),
                }
            }
            Control::Destroy { timeout_ms } => {
                if state.destroying {
                    return answer(port, Ok(ControlOk::Done));
                }
                // Every queued and running call is answered now: a deleted worker's late
                // result must never reach its caller as a success.
                let failed = state
                    .shared
                    .fail_all(&state.destroyed_error("it was destroyed (deleted)"));
                if failed > 0 {
                    tracing::info!(worker = %state.worker, calls = failed, "queued and running calls answered with WorkerFailed at destroy");
                }
                let (tx, rx) = oneshot::channel();
                let sent = state.send_job(Job::Destroy { reply: tx });
                state.destroying = true;
                let worker = state.worker.clone();
                tokio::spawn(async move {
                    let outcome = match sent {
                        Err(_) => Ok(ControlOk::Done),
                        Ok(()) => match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
                            Ok(Ok(errors)) if errors.is_empty() => Ok(ControlOk::Done),
                            Ok(Ok(errors)) => Err(FleetError::EngineFailed {
                                worker: worker.to_string(),
                                engine: "*".into(),
                                method: "<destroy>".into(),
                                message: errors.join("; "),
                            }
                            .bounded()),
                            Ok(Err(_)) => Ok(ControlOk::Done),
                            Err(_) => Err(FleetError::timeout(
                                format!("destroy hooks of worker {worker} (an engine call may still be running; the worker is stopped anyway)"),
                                Duration::from_millis(timeout_ms),
                            )),
                        },
                    };
                    myself.stop(Some("destroyed".into()));
                    let _ = port.send(ControlReply(outcome));
                });
            }
        }
    }
}
