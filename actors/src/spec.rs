//! What a caller asks for: a [`Job`] of `replicas` workers of one role, each with a
//! [`SchedulingSpec`] (resources), a [`Strategy`] (where) and a [`WorkerKind`] (what).
//!
//! The kind is always chosen explicitly by the caller. AReaL's Ray launcher guessed it from the
//! command string (`"rpc.rpc_server" not in command`); fleet never does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resources and environment of one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulingSpec {
    /// CPU cores; fractions allowed (accounted in thousandths).
    pub cpu: f64,
    /// Whole GPUs. Each gets an exclusive physical id on its node, exported to the worker as
    /// `CUDA_VISIBLE_DEVICES`.
    pub gpu: u32,
    /// Memory in MiB.
    pub mem: u64,
    /// How many TCP ports to reserve on the worker's node (held until the worker is deleted).
    pub ports: u16,
    /// Environment for the worker's engines and for processes it forks.
    pub env: BTreeMap<String, String>,
    /// Placement constraint: only nodes carrying every one of these `key=value` labels
    /// (`fleet node --label k=v`) may take the worker.
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
}

impl Default for SchedulingSpec {
    fn default() -> Self {
        SchedulingSpec {
            cpu: 0.0,
            gpu: 0,
            mem: 0,
            ports: 0,
            env: BTreeMap::new(),
            node_labels: BTreeMap::new(),
        }
    }
}

impl SchedulingSpec {
    /// Sets the CPU cores.
    pub fn cpu(mut self, cpu: f64) -> Self {
        self.cpu = cpu;
        self
    }
    /// Sets the GPU count.
    pub fn gpu(mut self, gpu: u32) -> Self {
        self.gpu = gpu;
        self
    }
    /// Sets the memory in MiB.
    pub fn mem(mut self, mib: u64) -> Self {
        self.mem = mib;
        self
    }
    /// Sets the number of ports to reserve.
    pub fn ports(mut self, ports: u16) -> Self {
        self.ports = ports;
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
    /// Requires a node label `key=value` (see [`SchedulingSpec::node_labels`]).
    pub fn node_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_labels.insert(key.into(), value.into());
        self
    }
    /// CPU in thousandths of a core, as the ledgers account it.
    pub fn cpu_millis(&self) -> u64 {
        if self.cpu.is_finite() && self.cpu > 0.0 {
            (self.cpu * 1000.0).round() as u64
        } else {
            0
        }
    }
}

/// Where a role's workers go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Strategy {
    /// Each worker is placed on its own merits (the scheduler's packing policy).
    #[default]
    Separate,
    /// Next to the workers of `target`: worker `i` of this role goes with worker `i` of the
    /// target.
    Colocate {
        /// The role to colocate with.
        target: String,
        /// `false`: this role *is* the target's workers under another name (same actors, no new
        /// resources). `true`: a new worker is started on the target worker's node, with gpu 0
        /// and the target's `CUDA_VISIBLE_DEVICES`.
        fork: bool,
    },
}

/// Where an RpcServer worker's engines run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Isolation {
    /// In the node process, on a thread of the worker's own (fastest; an engine crash that
    /// aborts the process takes the node down).
    #[default]
    InProcess,
    /// In a child process (`fleet rpc-server`) behind the HTTP launcher; calls travel over one
    /// keep-alive HTTP connection. `command` replaces the default
    /// `<this executable> rpc-server --port {port} --worker {worker} --node {node}` (for programs
    /// that embed fleet with engines of their own: point it at your binary's equivalent;
    /// `{worker}` and `{node}` are filled in too).
    Process {
        /// The command, with `{port}` placeholders; `None` for the default.
        command: Option<Vec<String>>,
    },
}

/// How an RpcServer worker is hosted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RpcServerSpec {
    /// In the node process, or in a child process of its own.
    pub isolation: Isolation,
}

/// How to tell that an HTTP service is ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// The path to GET on the service's first port.
    pub path: String,
    /// The status that means ready.
    pub expected_status: u16,
    /// First poll interval (doubles, capped at 1 s; default 10 ms).
    pub interval_ms: u64,
    /// Give up after this long.
    pub deadline_ms: u64,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            path: "/health".into(),
            expected_status: 200,
            interval_ms: 10,
            deadline_ms: 60_000,
        }
    }
}

/// How to tell that a ready HTTP service is still alive: its readiness path is probed every
/// `interval_ms`; `failure_threshold` probes in a row that fail (no answer within `timeout_ms`,
/// a refused connection, or another status than the readiness status) mean it froze or broke,
/// and it is killed, so that its restart policy applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Between probes (0 turns liveness probing off).
    pub interval_ms: u64,
    /// Longest wait for one probe's answer.
    pub timeout_ms: u64,
    /// Failed probes in a row that fail the service.
    pub failure_threshold: u32,
}

impl Default for Liveness {
    /// Every 5 s, 2 s per probe, 3 in a row: a service that answers nothing for about 15 s is
    /// failed (Kubernetes' defaults are 10 s, 1 s, 3).
    fn default() -> Self {
        Liveness {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            failure_threshold: 3,
        }
    }
}

/// What to do when an HTTP service's process exits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    /// Report the worker failed.
    #[default]
    Never,
    /// Start it again after a non-zero exit, up to `max_restarts` times, waiting `backoff_ms`
    /// (doubling) between tries; then report it failed.
    OnFailure {
        /// Restarts allowed over the worker's life.
        max_restarts: u32,
        /// First wait before a restart.
        backoff_ms: u64,
    },
}

/// How a call (`engine.method`) is carried to an HTTP service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CallProtocol {
    /// The service is plain HTTP: reach it with `Scheduler::http`; engine calls are refused.
    #[default]
    None,
    /// fleet's RPC over HTTP (`fleet rpc-server`): bincode `CallRequest` to `POST /call`.
    FleetRpc,
    /// AReaL-style JSON: `POST /call {engine_name, method, args, rpc_meta}`, arguments must be
    /// JSON payloads; the reply is `{"result": ...}` or `{"error": {"kind", "message"}}`.
    Json,
}

/// An external command started and supervised by the HTTP launcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpServiceSpec {
    /// Program and arguments; `{port}`, `{port0}`, `{port1}`, ... are filled from the ports
    /// reserved for the worker (ask for them with `SchedulingSpec::ports`), `{worker}` with
    /// `role/index` and `{index}` with the index.
    pub argv: Vec<String>,
    /// Working directory (default: the node's).
    pub cwd: Option<String>,
    /// Extra environment (placeholders filled too); merged over the spec's env.
    pub env: BTreeMap<String, String>,
    /// Readiness probe against the first port.
    pub readiness: Readiness,
    /// Liveness probe once it is ready (the readiness path again).
    #[serde(default)]
    pub liveness: Liveness,
    /// What to do when the process exits.
    pub restart: RestartPolicy,
    /// Between SIGTERM and SIGKILL when stopping.
    pub stop_grace_ms: u64,
    /// Output lines kept in memory for error messages.
    pub tail_lines: usize,
    /// How engine calls reach it.
    pub protocol: CallProtocol,
    /// Requests forwarded to it at once (default 1,024); more wait for a free slot, each at
    /// most until its own deadline (then `Timeout`, never sent).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

/// The default of [`HttpServiceSpec::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

impl HttpServiceSpec {
    /// A service started with `argv`, default readiness (`GET /health` = 200 within 60 s), no
    /// restarts, 5 s stop grace.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        HttpServiceSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env: BTreeMap::new(),
            readiness: Readiness::default(),
            liveness: Liveness::default(),
            restart: RestartPolicy::Never,
            stop_grace_ms: 5000,
            tail_lines: 200,
            protocol: CallProtocol::None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
    /// Sets how many requests are forwarded to it at once (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
    /// Sets the readiness probe path and status.
    pub fn ready_when(mut self, path: impl Into<String>, status: u16) -> Self {
        self.readiness.path = path.into();
        self.readiness.expected_status = status;
        self
    }
    /// Sets the readiness deadline.
    pub fn ready_within(mut self, d: std::time::Duration) -> Self {
        self.readiness.deadline_ms = d.as_millis() as u64;
        self
    }
    /// Sets the liveness probe (`Liveness { interval_ms: 0, .. }` turns it off).
    pub fn liveness(mut self, l: Liveness) -> Self {
        self.liveness = l;
        self
    }
    /// Sets the restart policy.
    pub fn restart(mut self, r: RestartPolicy) -> Self {
        self.restart = r;
        self
    }
    /// Sets the call protocol.
    pub fn protocol(mut self, p: CallProtocol) -> Self {
        self.protocol = p;
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
    /// Sets the stop grace period.
    pub fn stop_grace(mut self, d: std::time::Duration) -> Self {
        self.stop_grace_ms = d.as_millis() as u64;
        self
    }
}

/// Where a rollout worker's inference server comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// Started through the HTTP launcher next to the worker (a vLLM or SGLang command; the
    /// demo uses `fleet mock-llm --port {port}`). It serves on the worker's first port.
    Command(HttpServiceSpec),
    /// Already running at this base URL (`http://host:port`).
    Url(String),
    /// A pool of inference servers (a role of their own, started by the job): the worker's
    /// proxy routes over the pool's servers on the worker's own node (session-sticky, least
    /// in-flight, health-aware; see `fleet_launcher::router`).
    Pool(Vec<PoolServer>),
}

/// One server of a [`Backend::Pool`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolServer {
    /// Its node (as `NodeId` displays).
    pub node: String,
    /// Its port on that node.
    pub port: u16,
}

impl PoolServer {
    /// Its URL as seen from its own node.
    pub fn local_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The agent a rollout worker runs for each episode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentSpec {
    /// A Rust agent registered by name in the node's agent registry (built in:
    /// `multi-turn`).
    Registered(String),
    /// An external command in any language: run with `OPENAI_BASE_URL` and `OPENAI_API_KEY`
    /// (the session key) in its environment and the task as JSON on stdin; it prints
    /// `{"reward": r}` or `{"rewards": [r0, r1, ...]}` (one per turn) as its last stdout line.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: Option<String>,
    },
}

/// A rollout worker: its backend, its proxy (forked next to it), its agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The inference server.
    pub backend: Backend,
    /// The OpenAI-compatible proxy command; `None` for `fleet proxy --backend {backend} --port
    /// {port}` with this node's fleet executable. `{backend}` is the backend's base URL. The
    /// worker's admin key arrives on the command's stdin as one line (never in its environment);
    /// `fleet proxy` reads it with `--admin-key-stdin`, which is added to a `fleet proxy`
    /// command that lacks it.
    pub proxy_command: Option<Vec<String>>,
    /// The agent.
    pub agent: AgentSpec,
    /// Episodes this worker runs at once.
    pub max_concurrent: usize,
}

impl RolloutSpec {
    /// A worker with `backend` and `agent`, the default proxy, 8 episodes at once.
    pub fn new(backend: Backend, agent: AgentSpec) -> Self {
        RolloutSpec {
            backend,
            proxy_command: None,
            agent,
            max_concurrent: 8,
        }
    }
}

/// What a worker is. Chosen by the caller, never inferred.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerKind {
    /// An actor that hosts named engines and calls them by method name, in the node process or
    /// isolated in a child process.
    RpcServer(RpcServerSpec),
    /// An external command (inference server, proxy, any HTTP service) started, supervised and
    /// forwarded to by the HTTP launcher actor.
    HttpService(HttpServiceSpec),
    /// A rollout worker: runs agent episodes against its own backend through its own proxy.
    Rollout(RolloutSpec),
}

impl Default for WorkerKind {
    fn default() -> Self {
        WorkerKind::RpcServer(RpcServerSpec::default())
    }
}

impl WorkerKind {
    /// A short name for logs and tables.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerKind::RpcServer(RpcServerSpec {
                isolation: Isolation::InProcess,
            }) => "rpc-server",
            WorkerKind::RpcServer(_) => "rpc-server (process)",
            WorkerKind::HttpService(_) => "http-service",
            WorkerKind::Rollout(_) => "rollout",
        }
    }
}

/// A request for `replicas` workers of one role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The role name; workers are `role/0 .. role/(replicas-1)`.
    pub role: String,
    /// How many workers.
    pub replicas: u32,
    /// One spec for all replicas, or exactly one per replica.
    pub specs: Vec<SchedulingSpec>,
    /// Where they go.
    pub strategy: Strategy,
    /// What they are.
    pub kind: WorkerKind,
}

impl Job {
    /// `replicas` RPC-server workers of `role`, no resources, placed separately.
    pub fn new(role: impl Into<String>, replicas: u32) -> Self {
        Job {
            role: role.into(),
            replicas,
            specs: vec![SchedulingSpec::default()],
            strategy: Strategy::Separate,
            kind: WorkerKind::default(),
        }
    }
    /// Uses `spec` for every replica.
    pub fn spec(mut self, spec: SchedulingSpec) -> Self {
        self.specs = vec![spec];
        self
    }
    /// Uses one spec per replica (must have `replicas` entries).
    pub fn specs(mut self, specs: Vec<SchedulingSpec>) -> Self {
        self.specs = specs;
        self
    }
    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Colocates with `target` (`fork = false`: share its workers; `true`: start new ones next
    /// to them).
    pub fn colocate(mut self, target: impl Into<String>, fork: bool) -> Self {
        self.strategy = Strategy::Colocate {
            target: target.into(),
            fork,
        };
        self
    }
    /// Sets the worker kind.
    pub fn kind(mut self, kind: WorkerKind) -> Self {
        self.kind = kind;
        self
    }
    /// The spec of replica `i`, if the job is well formed.
    pub fn spec_for(&self, i: u32) -> Option<&SchedulingSpec> {
        if self.specs.len() == 1 {
            self.specs.first()
        } else {
            self.specs.get(i as usize)
        }
    }
}
