//! The rollout worker actor: its backend and proxy (two HTTP launcher children), and episodes
//! running in tasks of their own.

use super::agent::{Agent, AgentRegistry};
use super::episode::{self, ProxyClient, SessionSlot};
use super::protocol::{
    EpisodeOutcome, EpisodeRequest, EpisodeResult, RejectReason, RouterAdmin, CANCEL_EPISODE,
    ENGINE, ROUTER_ADMIN, RUN_EPISODE, SET_VERSION,
};
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlOk, ControlReply, EngineSummary, WorkerMsg,
    WorkerStatus,
};
use fleet_actors::{
    AgentSpec, Backend, FleetError, HttpServiceSpec, Payload, RolloutSpec, WorkerId,
};
use fleet_http::Client;
use fleet_launcher::http_launcher::{FailureHook, HttpLauncher, HttpLauncherArgs, WorkerFailure};
use fleet_launcher::process::StdinSecret;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// The rollout worker actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct RolloutWorker;

/// What a rollout worker starts with.
#[derive(Clone)]
pub struct RolloutArgs {
    /// The worker.
    pub worker: WorkerId,
    /// Its node.
    pub node: String,
    /// Backend, proxy, agent.
    pub spec: RolloutSpec,
    /// Its ports: the first for the backend, the second for the proxy.
    pub ports: Vec<u16>,
    /// Environment for the backend, the proxy and agent commands.
    pub env: BTreeMap<String, String>,
    /// Where the backend's and proxy's logs go.
    pub log_dir: Option<PathBuf>,
    /// Reports a failure for good.
    pub on_failure: Option<FailureHook>,
    /// The pooled client.
    pub client: Client,
    /// Rust agents by name.
    pub agents: AgentRegistry,
    /// The `fleet` executable for the default proxy command.
    pub fleet_exe: Option<String>,
}

type Episodes = Arc<Mutex<HashMap<u64, (watch::Sender<bool>, SessionSlot)>>>;

/// Where the worker checks that its backend answers: `GET base+path`.
#[derive(Clone, Debug)]
pub struct BackendProbe {
    /// `http://127.0.0.1:PORT` or the attached URL.
    pub base: String,
    /// The readiness path (`/health` unless the backend command says otherwise).
    pub path: String,
    /// Only 200 counts (a command's readiness path); otherwise any answer below 500 does (an
    /// attached URL may be a hosted API without `/health`: a 404 still proves it serves).
    pub strict: bool,
    /// The other servers of a pool: the check fails if any of them fails it (an episode that
    /// failed while one of its servers died is the infrastructure's fault).
    pub others: Vec<String>,
}

impl BackendProbe {
    /// `Ok(())` if the backend (every server of a pool) answers 200 within a second, else what
    /// it did.
    pub async fn check(&self, http: &Client) -> Result<(), String> {
        for base in &self.others {
            let one = BackendProbe {
                base: base.clone(),
                path: self.path.clone(),
                strict: self.strict,
                others: Vec::new(),
            };
            Box::pin(one.check(http)).await?;
        }
        let req = fleet_http::HttpRequest::get(self.path.clone());
        let policy = fleet_http::RetryPolicy::idempotent()
            .max_attempts(1)
            .per_attempt_timeout(Duration::from_secs(1))
            .deadline(Duration::from_secs(1));
        match fleet_http::send_with_retry_raw(
            http,
            &self.base,
            &req,
            &policy,
            std::future::pending(),
        )
        .await
        {
            Ok(r) if r.status == 200 || (!self.strict && r.status < 500) => Ok(()),
            Ok(r) => Err(format!("{}{} answered {}", self.base, self.path, r.status)),
            Err(e) => Err(format!(
                "{}{} is unreachable: {}",
                self.base,
                self.path,
                e.last_error.clone().unwrap_or_else(|| e.to_string())
            )),
        }
    }
}

/// An episode the agent failed may have failed because the backend died under it (a killed
/// inference server makes every request fail, and the agent with them). Those are not the
/// episode's fault: when the worker has failed, or its backend does not answer its readiness
/// probe right after, the rejection becomes [`RejectReason::Infra`], which the controller
/// re-queues on another worker.
async fn blame(
    outcome: EpisodeOutcome,
    backend: &BackendProbe,
    failed: &Arc<Mutex<Option<FleetError>>>,
    http: &Client,
) -> EpisodeOutcome {
    let reason = match &outcome {
        EpisodeOutcome::Rejected(
            r @ (RejectReason::AgentFailed(_)
            | RejectReason::AgentTimeout(_)
            | RejectReason::AgentGarbage(_)
            | RejectReason::Proxy(_)),
        ) => r.clone(),
        _ => return outcome,
    };
    if let Some(e) = lock(failed).clone() {
        return EpisodeOutcome::Rejected(RejectReason::Infra(format!(
            "{e} (the episode: {reason})"
        )));
    }
    match backend.check(http).await {
        Ok(()) => outcome,
        Err(why) => EpisodeOutcome::Rejected(RejectReason::Infra(format!(
            "{why} (the episode: {reason})"
        ))),
    }
}

/// The worker's state.
pub struct State {
    args: RolloutArgs,
    backend: Option<ActorRef<WorkerMsg>>,
    proxy_actor: ActorRef<WorkerMsg>,
    proxy: ProxyClient,
    backend_probe: BackendProbe,
    /// When the attached URL backend first failed its probe (for the warning), if it did.
    url_unreachable_since: Option<Instant>,
    agent: AgentSpec,
    rust_agent: Option<Arc<dyn Agent>>,
    ready: bool,
    failed: Arc<Mutex<Option<FleetError>>>,
    episodes: Episodes,
    slots: Arc<Semaphore>,
    done: Arc<AtomicU64>,
    started: Instant,
    stopping: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A hook for a child launcher that reports the rollout worker failed.
fn child_hook(
    parent: Option<FailureHook>,
    worker: WorkerId,
    what: &'static str,
    failed: Arc<Mutex<Option<FleetError>>>,
    node: String,
) -> FailureHook {
    Arc::new(move |f: WorkerFailure| {
        let reason = format!("its {what} failed: {}", f.reason);
        *lock(&failed) = Some(FleetError::WorkerFailed {
            worker: worker.to_string(),
            node: node.clone(),
            reason: reason.clone(),
            tail: f.tail.clone(),
        });
        if let Some(p) = &parent {
            p(WorkerFailure {
                worker: worker.clone(),
                reason,
                tail: f.tail,
            });
        }
    })
}

async fn ask(
    actor: &ActorRef<WorkerMsg>,
    control: Control,
    t: Duration,
) -> Result<ControlOk, FleetError> {
    match actor
        .call(|p| WorkerMsg::Control(control, p), Some(t))
        .await
    {
        Ok(CallResult::Success(ControlReply(r))) => r,
        Ok(CallResult::Timeout) => Err(FleetError::timeout("a rollout worker's child", t)),
        _ => Err(FleetError::Unavailable {
            what: "a rollout worker's child".into(),
            detail: "it stopped".into(),
        }),
    }
}

impl State {
    fn check_failed(&self) -> Result<(), FleetError> {
        match lock(&self.failed).clone() {
            Some(e) => Err(e),
            None if self.stopping => Err(FleetError::Unavailable {
                what: format!("worker {}", self.args.worker),
                detail: "it is stopping".into(),
            }),
            None => Ok(()),
        }
    }

    async fn health(&mut self) -> Result<(), FleetError> {
        self.check_failed()?;
        if self.ready {
            return Ok(());
        }
        let t = Duration::from_secs(1);
        if let Some(b) = &self.backend {
            ask(b, Control::Health, t)
                .await
                .map_err(|e| FleetError::Unavailable {
                    what: format!("worker {}", self.args.worker),
                    detail: format!("its backend is not ready: {e}"),
                })?;
        }
        ask(&self.proxy_actor, Control::Health, t)
            .await
            .map_err(|e| FleetError::Unavailable {
                what: format!("worker {}", self.args.worker),
                detail: format!("its proxy is not ready: {e}"),
            })?;
        if self.backend.is_none() {
            // An attached URL: it must answer before the worker is ready.
            if let Err(why) = self.backend_probe.check(&self.args.client).await {
                let since = *self.url_unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(3) {
                    tracing::warn!(worker = %self.args.worker, backend = %self.backend_probe.base, error = %why, "the backend URL does not answer; waiting for it");
                    self.url_unreachable_since = Some(Instant::now() + Duration::from_secs(27));
                }
                return Err(FleetError::Unavailable {
                    what: format!("worker {}", self.args.worker),
                    detail: format!("its backend {why}"),
                });
            }
        }
        self.ready = true;
        tracing::info!(worker = %self.args.worker, proxy = %self.proxy.base, "rollout worker ready");
        Ok(())
    }

    fn call(&mut self, req: CallRequest, port: ractor::RpcReplyPort<CallReply>) {
        let worker = self.args.worker.clone();
        if req.engine != ENGINE {
            let _ = port.send(CallReply(Err(FleetError::EngineNotFound {
                worker: worker.to_string(),
                engine: req.engine,
                known: ENGINE.into(),
            })));
            return;
        }
        if let Err(e) = self.check_failed() {
            let _ = port.send(CallReply(Err(e)));
            return;
        }
        let codec = req.args.codec;
        let reply = move |port: ractor::RpcReplyPort<CallReply>, r: Result<Payload, FleetError>| {
            let _ = port.send(CallReply(r));
        };
        match req.method.as_str() {
            RUN_EPISODE => {
                let ep: EpisodeRequest = match req.args.decode() {
                    Ok(e) => e,
                    Err(e) => return reply(port, Err(e)),
                };
                if !self.ready {
                    return reply(
                        port,
                        Err(FleetError::Unavailable {
                            what: format!("worker {worker}"),
                            detail:
                                "its backend and proxy are not ready yet; wait with get_workers"
                                    .into(),
                        }),
                    );
                }
                let (tx, rx) = watch::channel(false);
                let slot = SessionSlot::default();
                lock(&self.episodes).insert(ep.episode_id, (tx, slot.clone()));
                let episodes = self.episodes.clone();
                let slots = self.slots.clone();
                let done = self.done.clone();
                let proxy = self.proxy.clone();
                let agent = self.agent.clone();
                let rust_agent = self.rust_agent.clone();
                let backend = self.backend_probe.clone();
                let failed = self.failed.clone();
                tokio::spawn(async move {
                    let _permit = slots.acquire_owned().await;
                    let t = Instant::now();
                    let outcome = episode::run(&proxy, &agent, rust_agent, &ep, slot, rx).await;
                    let outcome = blame(outcome, &backend, &failed, &proxy.http).await;
                    lock(&episodes).remove(&ep.episode_id);
                    done.fetch_add(1, Ordering::Relaxed);
                    let result = EpisodeResult {
                        episode_id: ep.episode_id,
                        worker,
                        outcome,
                        latency_us: t.elapsed().as_micros() as u64,
                    };
                    reply(port, Payload::encode(codec, &result));
                });
            }
            CANCEL_EPISODE => {
                let id: u64 = match req.args.decode() {
                    Ok(i) => i,
                    Err(e) => return reply(port, Err(e)),
                };
                let found = lock(&self.episodes)
                    .get(&id)
                    .map(|(tx, _)| tx.send(true))
                    .is_some();
                if found {
                    tracing::info!(worker = %worker, episode = id, "episode cancelled");
                }
                reply(port, Payload::encode(codec, &found));
            }
            SET_VERSION => {
                let v: u64 = match req.args.decode() {
                    Ok(v) => v,
                    Err(e) => return reply(port, Err(e)),
                };
                let proxy = self.proxy.clone();
                tokio::spawn(async move {
                    let r = proxy
                        .set_version(v)
                        .await
                        .map_err(|e| FleetError::Unavailable {
                            what: format!("the proxy of {worker}"),
                            detail: e.to_string(),
                        });
                    reply(port, r.and_then(|prev| Payload::encode(codec, &prev)));
                });
            }
            ROUTER_ADMIN => {
                let a: RouterAdmin = match req.args.decode() {
                    Ok(a) => a,
                    Err(e) => return reply(port, Err(e)),
                };
                let body: Value = match serde_json::from_str(&a.body) {
                    Ok(b) => b,
                    Err(e) => {
                        return reply(port, Err(FleetError::bad_request("router_admin's body", e)))
                    }
                };
                if !a.path.starts_with("/router/") {
                    return reply(
                        port,
                        Err(FleetError::bad_request(
                            "router_admin",
                            format!("{:?} is not a /router/ route", a.path),
                        )),
                    );
                }
                let proxy = self.proxy.clone();
                tokio::spawn(async move {
                    let r = proxy.router_admin(&a.path, body).await.map_err(|e| {
                        FleetError::Unavailable {
                            what: format!("{} on the proxy of {worker}", a.path),
                            detail: e.to_string(),
                        }
                    });
                    reply(port, r.and_then(|v| Payload::encode(codec, &v.to_string())));
                });
            }
            other => reply(
                port,
                Err(FleetError::MethodNotFound {
                    worker: worker.to_string(),
                    engine: ENGINE.into(),
                    method: other.to_string(),
                }),
            ),
        }
    }
}

fn proxy_spec(args: &RolloutArgs, backend_urls: &[String]) -> Result<HttpServiceSpec, FleetError> {
    let argv = match &args.spec.proxy_command {
        Some(c) => c.clone(),
        None => {
            let exe = args.fleet_exe.clone().ok_or_else(|| {
                FleetError::bad_request(
                    format!("starting the proxy of {}", args.worker),
                    "this process is not the `fleet` binary: set FLEET_BIN or give RolloutSpec::proxy_command",
                )
            })?;
            vec![
                exe,
                "proxy".into(),
                "--backend".into(),
                "{backend}".into(),
                "--port".into(),
                "{port}".into(),
            ]
        }
    };
    // `{backend}` alone is every backend URL, the flag before it repeated (`--backend A
    // --backend B`); inside a longer argument it is the first.
    let first = backend_urls.first().cloned().unwrap_or_default();
    let mut out: Vec<String> = Vec::with_capacity(argv.len() + 2 * backend_urls.len());
    for a in argv {
        if a == "{backend}" && backend_urls.len() > 1 {
            let flag = out.last().filter(|f| f.starts_with('-')).cloned();
            for (i, u) in backend_urls.iter().enumerate() {
                if i > 0 {
                    if let Some(f) = &flag {
                        out.push(f.clone());
                    }
                }
                out.push(u.clone());
            }
        } else {
            out.push(a.replace("{backend}", &first));
        }
    }
    let mut argv = out;
    // The admin key goes to the proxy on its stdin, never in its environment (which every
    // agent-visible process of this user can read, C12); `fleet proxy` reads it there with
    // `--admin-key-stdin`.
    if argv.get(1).is_some_and(|a| a == "proxy") && !argv.iter().any(|a| a == "--admin-key-stdin") {
        argv.push("--admin-key-stdin".into());
    }
    // A pool is routed (even one server per node: the coordinator drives `/router/*`).
    if matches!(args.spec.backend, Backend::Pool(_))
        && argv.get(1).is_some_and(|a| a == "proxy")
        && !argv.iter().any(|a| a == "--router")
    {
        argv.push("--router".into());
    }
    // The proxy's readiness is its own liveness: its `/health` answers 503 while the backend
    // is unreachable, which for a real model lasts minutes; the worker waits for the backend
    // through the backend's own readiness (and its `ready_timeout`) instead.
    Ok(HttpServiceSpec::new(argv).ready_when("/health/live", 200))
}

impl Actor for RolloutWorker {
    type Msg = WorkerMsg;
    type State = State;
    type Arguments = RolloutArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        if args.ports.len() < 2 {
            return Err(format!(
                "rollout worker {} needs two ports (backend and proxy)",
                args.worker
            )
            .into());
        }
        let failed = Arc::new(Mutex::new(None));
        let role = &args.worker.role;
        let index = args.worker.index;
        let launcher =
            |id: WorkerId, spec: HttpServiceSpec, port: u16, what: &'static str| HttpLauncherArgs {
                worker: id,
                node: args.node.clone(),
                spec,
                ports: vec![port],
                env: args.env.clone(),
                log_dir: args.log_dir.clone(),
                on_failure: Some(child_hook(
                    args.on_failure.clone(),
                    args.worker.clone(),
                    what,
                    failed.clone(),
                    args.node.clone(),
                )),
                max_in_flight: 1024,
                client: args.client.clone(),
                secret: None,
                child_pid: Default::default(),
            };
        let probe_path = match &args.spec.backend {
            Backend::Command(spec) => spec.readiness.path.clone(),
            Backend::Url(_) | Backend::Pool(_) => "/health".to_string(),
        };
        let mut pool_urls = Vec::new();
        let (backend, backend_url) = match &args.spec.backend {
            Backend::Url(u) => (None, u.trim_end_matches('/').to_string()),
            Backend::Pool(servers) => {
                pool_urls = servers
                    .iter()
                    .filter(|s| s.node == args.node)
                    .map(|s| s.local_url())
                    .collect();
                let Some(first) = pool_urls.first().cloned() else {
                    return Err(format!(
                        "rollout worker {} on node {}: none of the pool's {} inference servers is on this node ({}); place them together",
                        args.worker,
                        args.node,
                        servers.len(),
                        servers.iter().map(|s| s.node.as_str()).collect::<Vec<_>>().join(", ")
                    )
                    .into());
                };
                (None, first)
            }
            Backend::Command(spec) => {
                let a = launcher(
                    WorkerId::new(format!("{role}.backend"), index),
                    spec.clone(),
                    args.ports[0],
                    "backend",
                );
                let (b, _) = Actor::spawn_linked(None, HttpLauncher, a, myself.get_cell())
                    .await
                    .map_err(|e| {
                        format!(
                            "the backend of {} did not start: {}",
                            args.worker,
                            startup(e)
                        )
                    })?;
                (Some(b), format!("http://127.0.0.1:{}", args.ports[0]))
            }
        };
        let admin_key = format!("{:032x}", rand::random::<u128>());
        if pool_urls.is_empty() {
            pool_urls.push(backend_url.clone());
        }
        let pspec = proxy_spec(&args, &pool_urls).map_err(|e| e.to_string())?;
        let mut a = launcher(
            WorkerId::new(format!("{role}.proxy"), index),
            pspec,
            args.ports[1],
            "proxy",
        );
        a.secret = Some(StdinSecret::new(admin_key.clone()));
        let (proxy_actor, _) = match Actor::spawn_linked(None, HttpLauncher, a, myself.get_cell())
            .await
        {
            Ok(x) => x,
            Err(e) => {
                if let Some(b) = &backend {
                    b.stop(None);
                }
                return Err(
                    format!("the proxy of {} did not start: {}", args.worker, startup(e)).into(),
                );
            }
        };
        let rust_agent = match &args.spec.agent {
            AgentSpec::Registered(name) => Some(args.agents.get(name).ok_or_else(|| {
                format!(
                    "no Rust agent registered as {name:?} on node {} (registered: {})",
                    args.node,
                    args.agents.names().join(", ")
                )
            })?),
            AgentSpec::Command { .. } => None,
        };
        let mut agent = args.spec.agent.clone();
        if let AgentSpec::Command { env, .. } = &mut agent {
            for (k, v) in &args.env {
                env.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        tracing::info!(worker = %args.worker, backend = %backend_url, proxy_port = args.ports[1], "rollout worker starting its backend and proxy");
        Ok(State {
            backend_probe: BackendProbe {
                base: backend_url.clone(),
                path: probe_path,
                strict: matches!(args.spec.backend, Backend::Command(_) | Backend::Pool(_)),
                others: pool_urls.iter().skip(1).cloned().collect(),
            },
            url_unreachable_since: None,
            proxy: ProxyClient {
                base: format!("http://127.0.0.1:{}", args.ports[1]),
                admin_key,
                http: args.client.clone(),
            },
            slots: Arc::new(Semaphore::new(args.spec.max_concurrent.max(1))),
            args,
            backend,
            proxy_actor,
            agent,
            rust_agent,
            ready: false,
            failed,
            episodes: Arc::new(Mutex::new(HashMap::new())),
            done: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Call(req, port) => state.call(req, port),
            WorkerMsg::Http(call, port) => {
                // Plain HTTP to a rollout worker reaches its proxy.
                if let Err(e) = state.proxy_actor.send_message(WorkerMsg::Http(call, port)) {
                    tracing::warn!(worker = %state.args.worker, error = %e, "proxy gone");
                }
            }
            WorkerMsg::Lifecycle(_) => {}
            WorkerMsg::Control(control, port) => {
                let r = match control {
                    Control::Health => state.health().await.map(|()| ControlOk::Done),
                    Control::Undecodable(detail) => Err(FleetError::Protocol { detail }),
                    Control::Status => Ok(ControlOk::Status(WorkerStatus {
                        worker: state.args.worker.clone(),
                        engines: vec![EngineSummary {
                            name: ENGINE.into(),
                            type_name: "rollout".into(),
                        }],
                        in_flight: None,
                        queued: lock(&state.episodes).len() as u64,
                        calls_done: state.done.load(Ordering::Relaxed),
                        uptime_ms: state.started.elapsed().as_millis() as u64,
                        pid: None,
                    })),
                    Control::SetEnv(vars) => {
                        if let AgentSpec::Command { env, .. } = &mut state.agent {
                            env.extend(vars);
                        }
                        Ok(ControlOk::Deferred(
                            "applies to agent commands started from now on; the running backend and proxy keep their environment".into(),
                        ))
                    }
                    // Episodes are stopped through their own channel (the controller's cancel);
                    // there is no queued engine call to drop.
                    Control::Cancel { .. } => Ok(ControlOk::Done),
                    Control::CreateEngine { .. } | Control::Configure(_) => {
                        Err(FleetError::bad_request(
                            format!("engine control for rollout worker {}", state.args.worker),
                            "a rollout worker has no engines to create or configure",
                        ))
                    }
                    Control::Destroy { timeout_ms } => {
                        state.stopping = true;
                        for (_, (tx, _)) in lock(&state.episodes).iter() {
                            let _ = tx.send(true);
                        }
                        let children: Vec<ActorRef<WorkerMsg>> =
                            std::iter::once(state.proxy_actor.clone())
                                .chain(state.backend.clone())
                                .collect();
                        tokio::spawn(async move {
                            let t =
                                Duration::from_millis(timeout_ms.max(1)) + Duration::from_secs(10);
                            for c in children {
                                let _ = ask(&c, Control::Destroy { timeout_ms }, t).await;
                            }
                            myself.stop(Some("destroyed".into()));
                            let _ = port.send(ControlReply(Ok(ControlOk::Done)));
                        });
                        return Ok(());
                    }
                };
                let _ = port.send(ControlReply(r));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, err) = event {
            let reason = format!("a child actor panicked: {err}");
            *lock(&state.failed) = Some(FleetError::WorkerFailed {
                worker: state.args.worker.to_string(),
                node: state.args.node.clone(),
                reason: reason.clone(),
                tail: vec![],
            });
            if let Some(h) = &state.args.on_failure {
                h(WorkerFailure {
                    worker: state.args.worker.clone(),
                    reason,
                    tail: vec![],
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // However the worker stops (destroyed, failed, fenced), its agents stop with it.
        for (_, (tx, _)) in lock(&state.episodes).iter() {
            let _ = tx.send(true);
        }
        state.proxy_actor.stop(None);
        if let Some(b) = &state.backend {
            b.stop(None);
        }
        Ok(())
    }
}

fn startup(e: ractor::SpawnErr) -> String {
    match e {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
