//! The HttpLauncher actor: phases, lifecycle messages, restart policy, and dispatch of forwards
//! to tasks.

use super::child_pid::ChildPid;
use super::forward::Target;
use super::slots::Slots;
use crate::process::{
    wait_ready, watch_liveness, ChildHandle, ChildSpec, LivenessProbe, ProcessError,
    ReadinessProbe, StdinSecret,
};
use fleet_actors::rpc_server::{
    CallReply, Control, ControlOk, ControlReply, Lifecycle, WorkerMsg, WorkerStatus,
};
use fleet_actors::{
    CallProtocol, FleetError, HttpReply, HttpServiceSpec, RequestId, RestartPolicy, WorkerId,
};
use fleet_http::Client;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker that failed for good (no restart left), as reported to its node.
#[derive(Clone, Debug)]
pub struct WorkerFailure {
    /// The worker.
    pub worker: WorkerId,
    /// Why, in words (exit status, readiness timeout).
    pub reason: String,
    /// Its last output lines.
    pub tail: Vec<String>,
}

/// Called once when the worker fails for good (the node agent passes one that reports to the
/// scheduler).
pub type FailureHook = Arc<dyn Fn(WorkerFailure) + Send + Sync>;

/// The HTTP launcher actor. Spawn it with [`HttpLauncherArgs`].
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpLauncher;

/// What the launcher starts with.
#[derive(Clone)]
pub struct HttpLauncherArgs {
    /// The worker.
    pub worker: WorkerId,
    /// Its node, for messages.
    pub node: String,
    /// The command and how to run it.
    pub spec: HttpServiceSpec,
    /// Ports reserved for it; the first is the one it serves and is probed on.
    pub ports: Vec<u16>,
    /// Its environment (the spec's env, `CUDA_VISIBLE_DEVICES`, ...), before placeholders.
    pub env: BTreeMap<String, String>,
    /// Where its log file goes (`<dir>/<role>_<index>.log`).
    pub log_dir: Option<PathBuf>,
    /// Reports a failure for good.
    pub on_failure: Option<FailureHook>,
    /// Forwards allowed in flight at once; more wait for a slot (in their task).
    pub max_in_flight: usize,
    /// The pooled client (share one per node).
    pub client: Client,
    /// A secret handed to the child on its stdin at every start (never through its
    /// environment), and sent as `Authorization: Bearer` on fleet RPC forwards: the token of
    /// a `fleet rpc-server --token-stdin`, the admin key of a `fleet proxy --admin-key-stdin`.
    pub secret: Option<StdinSecret>,
    /// Where the launcher publishes its live child's pid (see [`ChildPid`]).
    pub child_pid: ChildPid,
}

impl std::fmt::Debug for HttpLauncherArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLauncherArgs")
            .field("worker", &self.worker)
            .field("argv", &self.spec.argv)
            .field("ports", &self.ports)
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Phase {
    Starting { since: Instant },
    Ready,
    Restarting,
    Failed(FleetError),
    Stopping,
}

/// The launcher's state.
pub struct State {
    args: HttpLauncherArgs,
    env: BTreeMap<String, String>,
    child: Option<Arc<ChildHandle>>,
    generation: u64,
    restarts: u32,
    phase: Phase,
    started: Instant,
    /// Forwards in flight, their bounded slots, and cancellation by request id.
    forwards: Slots,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    target: Option<Arc<Target>>,
    /// Liveness of the ready process: consecutive failed probes and what the last one saw.
    unanswered: (u32, String),
    /// Set when the process was killed for not answering: the reason its exit reports.
    killed_unresponsive: Option<String>,
}

impl State {
    /// The forwarding target of the current process generation (built once per start, shared
    /// by every forward).
    fn target(&self) -> Option<Arc<Target>> {
        self.target.clone()
    }

    fn make_target(&self, child: &ChildHandle) -> Arc<Target> {
        Arc::new(Target {
            worker: self.args.worker.to_string(),
            node: self.args.node.clone(),
            client: self.args.client.clone(),
            base_url: format!(
                "http://127.0.0.1:{}",
                self.args.ports.first().copied().unwrap_or(0)
            ),
            child: child.watch(),
            stopping: self.stopping.clone(),
            token: self.args.secret.as_ref().map(|s| s.expose().to_string()),
        })
    }

    /// Why a call cannot be forwarded now, if it cannot.
    fn refusal(&self) -> Option<FleetError> {
        let worker = self.args.worker.to_string();
        match &self.phase {
            Phase::Ready if self.unanswered.0 > 0 => Some(FleetError::Unavailable {
                what: format!("worker {}", self.args.worker),
                detail: format!(
                    "its process is not answering its liveness probe ({} of {} failed in a row: {})",
                    self.unanswered.0,
                    self.args.spec.liveness.failure_threshold.max(1),
                    self.unanswered.1
                ),
            }),
            Phase::Ready => None,
            Phase::Starting { since } => Some(FleetError::Unavailable {
                what: format!("worker {worker}"),
                detail: format!(
                    "its process is starting (waiting {} ms so far for {} to answer {}); wait with get_workers",
                    since.elapsed().as_millis(),
                    self.args.spec.readiness.path,
                    self.args.spec.readiness.expected_status
                ),
            }),
            Phase::Restarting => Some(FleetError::Unavailable {
                what: format!("worker {worker}"),
                detail: format!("its process exited and is being restarted (restart {})", self.restarts),
            }),
            Phase::Failed(e) => Some(e.clone()),
            Phase::Stopping => Some(FleetError::Unavailable {
                what: format!("worker {worker}"),
                detail: "it is stopping".into(),
            }),
        }
    }

    fn child_spec(&self) -> Result<ChildSpec, FleetError> {
        let bad = |detail: String| {
            FleetError::bad_request(format!("starting worker {}", self.args.worker), detail)
        };
        // `{worker}` and `{index}` name this worker; ports are filled below.
        let fill = |a: &str| {
            a.replace("{worker}", &self.args.worker.to_string())
                .replace("{index}", &self.args.worker.index.to_string())
        };
        let mut argv: Vec<String> = self.args.spec.argv.iter().map(|a| fill(a)).collect();
        if self.args.secret.is_some() {
            secret_flag(&mut argv);
        }
        let Some((program, rest)) = argv.split_first() else {
            return Err(bad("the command (argv) is empty".into()));
        };
        // The bare word `fleet` is this node's fleet executable.
        let program = match program.as_str() {
            "fleet" => crate::process::fleet_executable().unwrap_or_else(|| program.clone()),
            _ => program.clone(),
        };
        let mut spec = ChildSpec::new(self.args.worker.to_string(), program)
            .args(rest.iter().cloned())
            .tail_lines(self.args.spec.tail_lines.max(1));
        for (k, v) in &self.env {
            spec = spec.env(k.clone(), fill(v));
        }
        spec = spec
            .env("FLEET_WORKER", self.args.worker.to_string())
            .env("FLEET_PORT", "{port}");
        if let Some(cwd) = &self.args.spec.cwd {
            spec = spec.cwd(cwd.clone());
        }
        if let Some(secret) = &self.args.secret {
            spec = spec.stdin_secret(secret.clone());
        }
        if let Some(dir) = &self.args.log_dir {
            spec = spec.log_dir(dir.clone());
        }
        spec.with_ports(&self.args.ports)
            .map_err(|e| bad(e.to_string()))
    }

    fn failed(&self, reason: String, tail: Vec<String>) -> FleetError {
        FleetError::WorkerFailed {
            worker: self.args.worker.to_string(),
            node: self.args.node.clone(),
            reason,
            tail,
        }
    }

    fn report(&self, reason: &str, tail: &[String]) {
        tracing::error!(worker = %self.args.worker, node = %self.args.node, %reason, "http service failed");
        if let Some(hook) = &self.args.on_failure {
            hook(WorkerFailure {
                worker: self.args.worker.clone(),
                reason: reason.to_string(),
                tail: tail.to_vec(),
            });
        }
    }
}

/// Tells a fleet server that its secret is on stdin: `fleet rpc-server` gets `--token-stdin`,
/// `fleet proxy` `--admin-key-stdin`, unless the command already says so. Other commands are
/// left alone (they read the line themselves, or ignore it).
fn secret_flag(argv: &mut Vec<String>) {
    let flag = match argv.get(1).map(String::as_str) {
        Some("rpc-server") => "--token-stdin",
        Some("proxy") => "--admin-key-stdin",
        _ => return,
    };
    if !argv.iter().any(|a| a == flag) {
        argv.push(flag.to_string());
    }
}

fn process_error(worker: &WorkerId, node: &str, e: ProcessError) -> FleetError {
    let retry_hint = match &e {
        ProcessError::Spawn { .. } => "check the command: the program must exist and be executable",
        _ => "see the worker's log",
    };
    FleetError::WorkerFailed {
        worker: worker.to_string(),
        node: node.to_string(),
        reason: format!("{e} ({retry_hint})"),
        tail: vec![],
    }
}

/// Starts the readiness probe and the exit watcher of generation `generation`, reporting both
/// to the actor.
fn supervise(
    myself: ActorRef<WorkerMsg>,
    child: &ChildHandle,
    generation: u64,
    probe: Option<ReadinessProbe>,
    liveness: Option<LivenessProbe>,
) {
    let watch = child.watch();
    tokio::spawn(async move {
        if let Some(probe) = probe {
            match wait_ready(&probe, &watch).await {
                Ok(()) => {
                    let _ =
                        myself.send_message(WorkerMsg::Lifecycle(Lifecycle::Ready { generation }));
                    if let Some(l) = liveness {
                        // Reports only changes: a failure, or the first success after one.
                        let me = myself.clone();
                        let mut last = 0u32;
                        watch_liveness(&l, &watch, move |failures, detail| {
                            let changed = failures > 0 || last > 0;
                            last = failures;
                            !changed
                                || me
                                    .send_message(WorkerMsg::Lifecycle(Lifecycle::Probe {
                                        generation,
                                        failures,
                                        detail,
                                    }))
                                    .is_ok()
                        })
                        .await;
                    }
                }
                Err(ProcessError::ExitedBeforeReady { .. }) => {
                    // The exit is reported below.
                }
                Err(e) => {
                    let _ = myself.send_message(WorkerMsg::Lifecycle(Lifecycle::NotReady {
                        generation,
                        reason: e.to_string(),
                    }));
                }
            }
        } else {
            let _ = myself.send_message(WorkerMsg::Lifecycle(Lifecycle::Ready { generation }));
        }
        let info = watch.exited().await;
        let _ = myself.send_message(WorkerMsg::Lifecycle(Lifecycle::Exited {
            generation,
            code: info.code,
            signal: info.signal,
            tail: info.tail,
        }));
    });
}

impl HttpLauncher {
    async fn start_child(
        &self,
        myself: &ActorRef<WorkerMsg>,
        state: &mut State,
    ) -> Result<(), FleetError> {
        let spec = state.child_spec()?;
        let child = ChildHandle::spawn(spec)
            .await
            .map_err(|e| process_error(&state.args.worker, &state.args.node, e))?;
        state.generation += 1;
        let r = &state.args.spec.readiness;
        let probe = state.args.ports.first().map(|port| {
            let mut p = ReadinessProbe::http(*port, r.path.clone())
                .deadline(Duration::from_millis(r.deadline_ms));
            p.expected_status = r.expected_status;
            p.interval = Duration::from_millis(r.interval_ms.max(1));
            p
        });
        let l = &state.args.spec.liveness;
        let liveness = match (state.args.ports.first(), l.interval_ms) {
            (Some(port), 1..) => Some(LivenessProbe {
                port: *port,
                path: r.path.clone(),
                expected_status: r.expected_status,
                interval: Duration::from_millis(l.interval_ms),
                timeout: Duration::from_millis(l.timeout_ms.max(1)),
            }),
            _ => None,
        };
        tracing::info!(worker = %state.args.worker, pid = child.pid(), argv = ?state.args.spec.argv, ports = ?state.args.ports, generation = state.generation, "http service process started");
        state.unanswered = (0, String::new());
        state.killed_unresponsive = None;
        state.args.child_pid.set(child.pid());
        supervise(myself.clone(), &child, state.generation, probe, liveness);
        state.target = Some(state.make_target(&child));
        state.child = Some(Arc::new(child));
        state.phase = Phase::Starting {
            since: Instant::now(),
        };
        Ok(())
    }

    /// Forwards one request in a task (the actor goes on answering), within `deadline`
    /// including the wait for a free slot; a forward with a request id can be cancelled.
    fn forward<F, Fut, T>(
        state: &State,
        port: RpcReplyPort<T>,
        wrap: fn(Result<F, FleetError>) -> T,
        deadline: Duration,
        request_id: Option<RequestId>,
        f: impl FnOnce(Arc<Target>, Duration) -> Fut + Send + 'static,
    ) where
        Fut: std::future::Future<Output = Result<F, FleetError>> + Send + 'static,
        T: Send + 'static,
        F: Send + 'static,
    {
        if let Some(e) = state.refusal() {
            let _ = port.send(wrap(Err(e)));
            return;
        }
        let Some(target) = state.target() else {
            let _ = port.send(wrap(Err(FleetError::internal("ready without a process"))));
            return;
        };
        state.forwards.spawn(
            state.args.worker.to_string(),
            deadline,
            request_id,
            move |r| {
                let _ = port.send(wrap(r));
            },
            move |left| f(target, left),
        );
    }

    fn control(
        &self,
        myself: ActorRef<WorkerMsg>,
        control: Control,
        port: RpcReplyPort<ControlReply>,
        state: &mut State,
    ) {
        let fleet_rpc = state.args.spec.protocol == CallProtocol::FleetRpc;
        let worker = state.args.worker.to_string();
        match control {
            Control::Health => {
                let r = match state.refusal() {
                    None => Ok(ControlOk::Done),
                    Some(e) => Err(e),
                };
                let _ = port.send(ControlReply(r));
            }
            Control::Undecodable(detail) => {
                let _ = port.send(ControlReply(Err(FleetError::Protocol { detail })));
            }
            Control::Cancel { request_id } => {
                if state.forwards.cancel(&request_id) {
                    tracing::debug!(worker = %worker, request_id = %request_id, "forward cancelled by its caller");
                }
                let _ = port.send(ControlReply(Ok(ControlOk::Done)));
            }
            Control::Status => {
                let status = WorkerStatus {
                    worker: state.args.worker.clone(),
                    engines: vec![],
                    in_flight: None,
                    queued: state.forwards.in_flight.load(Ordering::Relaxed)
                        + state.forwards.waiting.load(Ordering::Relaxed),
                    calls_done: state.forwards.done.load(Ordering::Relaxed),
                    uptime_ms: state.started.elapsed().as_millis() as u64,
                    pid: state.child.as_ref().map(|c| c.pid()),
                };
                let _ = port.send(ControlReply(Ok(ControlOk::Status(status))));
            }
            Control::SetEnv(vars) => {
                state.env.extend(vars.clone());
                if fleet_rpc {
                    let deadline = Duration::from_secs(10);
                    Self::forward(
                        state,
                        port,
                        ControlReply,
                        deadline,
                        None,
                        move |t, left| async move { t.fleet_control(Control::SetEnv(vars), left).await },
                    );
                } else {
                    let _ = port.send(ControlReply(Ok(ControlOk::Deferred(format!(
                        "worker {worker} is an external process: the new environment applies when it next starts (after a restart, or recreate the worker); the running process keeps its environment"
                    )))));
                }
            }
            c @ (Control::CreateEngine { .. } | Control::Configure(_)) => {
                if fleet_rpc {
                    // The caller's deadline (the reply port carries it): constructors that load
                    // weights take minutes.
                    let deadline = port.get_timeout().unwrap_or(Duration::from_secs(60));
                    Self::forward(
                        state,
                        port,
                        ControlReply,
                        deadline,
                        None,
                        move |t, left| async move { t.fleet_control(c, left).await },
                    );
                } else {
                    let _ = port.send(ControlReply(Err(FleetError::bad_request(
                        format!("engine control for worker {worker}"),
                        "it is a plain HTTP service without engines (CallProtocol::None or Json); talk to it with Scheduler::http",
                    ))));
                }
            }
            Control::Destroy { timeout_ms } => {
                if matches!(state.phase, Phase::Stopping) {
                    let _ = port.send(ControlReply(Ok(ControlOk::Done)));
                    return;
                }
                let was_ready = matches!(state.phase, Phase::Ready);
                state.phase = Phase::Stopping;
                state.stopping.store(true, Ordering::SeqCst);
                let target = state.target();
                let child = state.child.clone();
                let grace = Duration::from_millis(state.args.spec.stop_grace_ms);
                tokio::spawn(async move {
                    let mut outcome = Ok(ControlOk::Done);
                    if let (true, true, Some(t)) = (fleet_rpc, was_ready, target) {
                        let bound = Duration::from_millis(timeout_ms.max(1));
                        if let Err(e) = t
                            .fleet_control(Control::Destroy { timeout_ms }, bound)
                            .await
                        {
                            outcome = Err(e);
                        }
                    }
                    if let Some(child) = child {
                        match child.stop(grace).await {
                            Ok(info) => {
                                tracing::info!(worker = %worker, exit = %info.describe(), "http service process stopped")
                            }
                            Err(e) => {
                                tracing::warn!(worker = %worker, error = %e, "stopping the http service process")
                            }
                        }
                    }
                    myself.stop(Some("destroyed".into()));
                    let _ = port.send(ControlReply(outcome));
                });
            }
        }
    }

    async fn lifecycle(&self, myself: ActorRef<WorkerMsg>, event: Lifecycle, state: &mut State) {
        match event {
            Lifecycle::Ready { generation } if generation == state.generation => {
                if let Phase::Starting { since } = state.phase {
                    tracing::info!(worker = %state.args.worker, ready_ms = since.elapsed().as_millis() as u64, "http service ready");
                    state.phase = Phase::Ready;
                }
            }
            Lifecycle::NotReady { generation, reason } if generation == state.generation => {
                if matches!(state.phase, Phase::Stopping) {
                    return;
                }
                let tail = state.child.as_ref().map(|c| c.tail()).unwrap_or_default();
                if let Some(c) = &state.child {
                    c.kill();
                }
                let err = state.failed(format!("it did not become ready: {reason}"), tail.clone());
                state.report(&format!("not ready: {reason}"), &tail);
                state.phase = Phase::Failed(err);
            }
            Lifecycle::Exited {
                generation,
                code,
                signal,
                tail,
            } if generation == state.generation => {
                if let Some(c) = &state.child {
                    state.args.child_pid.clear(c.pid());
                }
                if matches!(state.phase, Phase::Stopping | Phase::Failed(_)) {
                    return;
                }
                let how = match (code, signal, state.killed_unresponsive.take()) {
                    (_, _, Some(why)) => why,
                    (Some(c), _, _) => format!("its process exited with code {c}"),
                    (None, Some(s), _) => format!("its process was killed by signal {s}"),
                    _ => "its process exited".to_string(),
                };
                let was_ready = matches!(state.phase, Phase::Ready);
                let when = if was_ready {
                    ""
                } else {
                    " before it was ready"
                };
                let may_restart = match state.args.spec.restart {
                    RestartPolicy::OnFailure {
                        max_restarts,
                        backoff_ms,
                    } if code != Some(0) && state.restarts < max_restarts => Some(backoff_ms),
                    _ => None,
                };
                if let Some(backoff_ms) = may_restart {
                    state.restarts += 1;
                    metrics::counter!("fleet_worker_restarts_total").increment(1);
                    let wait = Duration::from_millis(
                        backoff_ms.saturating_mul(1u64 << (state.restarts - 1).min(10)),
                    );
                    tracing::warn!(worker = %state.args.worker, %how, restart = state.restarts, wait_ms = wait.as_millis() as u64, "http service exited{when}; restarting");
                    state.phase = Phase::Restarting;
                    let me = myself.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = me.send_message(WorkerMsg::Lifecycle(Lifecycle::RestartDue {
                            generation,
                        }));
                    });
                } else {
                    let reason = format!("{how}{when}");
                    state.report(&reason, &tail);
                    state.phase = Phase::Failed(state.failed(reason, tail));
                }
            }
            Lifecycle::Probe {
                generation,
                failures,
                detail,
            } if generation == state.generation => {
                if !matches!(state.phase, Phase::Ready) {
                    return;
                }
                state.unanswered = (failures, detail.clone());
                let threshold = state.args.spec.liveness.failure_threshold.max(1);
                if failures == 0 {
                    tracing::info!(worker = %state.args.worker, "http service answers its liveness probe again");
                } else if failures >= threshold {
                    let reason = format!(
                        "it stopped answering: {failures} liveness probes in a row failed ({detail}); it was killed"
                    );
                    tracing::warn!(worker = %state.args.worker, %reason, "http service unresponsive");
                    state.killed_unresponsive = Some(reason);
                    // The exit that follows applies the restart policy, with this reason.
                    if let Some(c) = &state.child {
                        c.kill();
                    }
                } else {
                    tracing::warn!(worker = %state.args.worker, failures, threshold, %detail, "http service missed a liveness probe");
                }
            }
            Lifecycle::RestartDue { generation } if generation == state.generation => {
                if !matches!(state.phase, Phase::Restarting) {
                    return;
                }
                if let Err(e) = self.start_child(&myself, state).await {
                    let reason = format!("restart failed: {e}");
                    state.report(&reason, &[]);
                    state.phase = Phase::Failed(e);
                }
            }
            _ => {
                // News about a process generation that was already replaced.
            }
        }
    }
}

impl Actor for HttpLauncher {
    type Msg = WorkerMsg;
    type State = State;
    type Arguments = HttpLauncherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        if args.ports.is_empty() {
            return Err(format!(
                "worker {}: an HTTP service needs at least one port to serve and be probed on (SchedulingSpec::ports(1))",
                args.worker
            )
            .into());
        }
        // The spec's own environment goes over the worker's.
        let mut env = args.env.clone();
        env.extend(args.spec.env.clone());
        let mut state = State {
            env,
            forwards: Slots::new(args.max_in_flight),
            args,
            child: None,
            generation: 0,
            restarts: 0,
            phase: Phase::Starting {
                since: Instant::now(),
            },
            started: Instant::now(),
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            target: None,
            unanswered: (0, String::new()),
            killed_unresponsive: None,
        };
        self.start_child(&myself, &mut state)
            .await
            .map_err(|e| e.to_string())?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Call(req, port) => {
                let deadline = req.budget().unwrap_or(Duration::from_secs(60));
                let id = req.request_id.clone();
                match state.args.spec.protocol {
                    CallProtocol::FleetRpc => Self::forward(
                        state,
                        port,
                        CallReply,
                        deadline,
                        id,
                        move |t, left| async move { t.fleet_call(req, left).await },
                    ),
                    CallProtocol::Json => Self::forward(
                        state,
                        port,
                        CallReply,
                        deadline,
                        id,
                        move |t, left| async move { t.json_call(req, left).await },
                    ),
                    CallProtocol::None => {
                        let _ = port.send(CallReply(Err(FleetError::bad_request(
                            format!("{}.{} on worker {}", req.engine, req.method, state.args.worker),
                            "it is a plain HTTP service (CallProtocol::None): send HTTP requests with Scheduler::http",
                        ))));
                    }
                }
            }
            WorkerMsg::Http(call, port) => {
                let deadline = Duration::from_millis(call.timeout_ms.max(1));
                let id = call.request_id.clone();
                Self::forward(
                    state,
                    port,
                    HttpReply,
                    deadline,
                    id,
                    move |t, left| async move { t.http(call, left).await },
                )
            }
            WorkerMsg::Control(control, port) => self.control(myself, control, port, state),
            WorkerMsg::Lifecycle(event) => self.lifecycle(myself, event, state).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the last handle SIGKILLs the group if destroy did not already stop it.
        if let Some(child) = state.child.take() {
            state.args.child_pid.clear(child.pid());
            if child.is_running() {
                child.kill();
            }
        }
        Ok(())
    }
}
