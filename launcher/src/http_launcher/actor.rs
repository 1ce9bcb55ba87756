//! The HttpLauncher actor: its arguments and state, its phases, and the dispatch of each message
//! (forwards to tasks through [`super::slots`], control requests to [`super::control`], the
//! child's lifecycle to [`super::lifecycle`]).

use super::child_pid::ChildPid;
use super::forward::Target;
use super::slots::Slots;
use crate::process::{ChildHandle, ChildSpec, ProcessError, StdinSecret};
use fleet_actors::rpc_server::{CallReply, WorkerMsg};
use fleet_actors::{CallProtocol, FleetError, HttpReply, HttpServiceSpec, RequestId, WorkerId};
use fleet_http::Client;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::path::PathBuf;
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
pub(super) enum Phase {
    Starting { since: Instant },
    Ready,
    Restarting,
    Failed(FleetError),
    Stopping,
}

/// The launcher's state.
pub struct State {
    pub(super) args: HttpLauncherArgs,
    pub(super) env: BTreeMap<String, String>,
    pub(super) child: Option<Arc<ChildHandle>>,
    pub(super) generation: u64,
    pub(super) restarts: u32,
    pub(super) phase: Phase,
    pub(super) started: Instant,
    /// Forwards in flight, their bounded slots, and cancellation by request id.
    pub(super) forwards: Slots,
    pub(super) stopping: Arc<std::sync::atomic::AtomicBool>,
    pub(super) target: Option<Arc<Target>>,
    /// Liveness of the ready process: consecutive failed probes and what the last one saw.
    pub(super) unanswered: (u32, String),
    /// Set when the process was killed for not answering: the reason its exit reports.
    pub(super) killed_unresponsive: Option<String>,
}

impl State {
    /// The forwarding target of the current process generation (built once per start, shared
    /// by every forward).
    pub(super) fn target(&self) -> Option<Arc<Target>> {
        self.target.clone()
    }

    pub(super) fn make_target(&self, child: &ChildHandle) -> Arc<Target> {
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
    pub(super) fn refusal(&self) -> Option<FleetError> {
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

    pub(super) fn child_spec(&self) -> Result<ChildSpec, FleetError> {
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

    pub(super) fn failed(&self, reason: String, tail: Vec<String>) -> FleetError {
        FleetError::WorkerFailed {
            worker: self.args.worker.to_string(),
            node: self.args.node.clone(),
            reason,
            tail,
        }
    }

    pub(super) fn report(&self, reason: &str, tail: &[String]) {
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

pub(super) fn process_error(worker: &WorkerId, node: &str, e: ProcessError) -> FleetError {
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

impl HttpLauncher {
    /// Forwards one request in a task (the actor goes on answering), within `deadline`
    /// including the wait for a free slot; a forward with a request id can be cancelled.
    pub(super) fn forward<F, Fut, T>(
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
