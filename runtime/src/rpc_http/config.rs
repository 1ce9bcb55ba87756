//! What an HTTP-faced RpcServer starts with.

use fleet_actors::rpc_server::{DEFAULT_DEDUPE_BYTES, DEFAULT_DEDUPE_CAPACITY};
use fleet_actors::{EngineRegistry, WorkerId};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Default largest request body: 64 MiB (bulk data belongs on HTTP, not in actor messages,
/// but it still needs a bound).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Default deadline for a request body to arrive in full: 30 s (the proxy's too).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub use fleet_http::listen::DEFAULT_LISTEN_BACKLOG;

/// The largest deadline a request may ask for (`X-Fleet-Timeout-Ms`, a destroy's
/// `timeout_ms`): 30 days. A larger one is a 400, never a wrapped or saturated value.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

/// Settings of [`serve`](super::serve). Build with [`RpcHttpConfig::new`] and the setters.
#[derive(Clone)]
pub struct RpcHttpConfig {
    /// Address to bind; port 0 picks a free port (read it back with
    /// [`RpcHttpServer::addr`](super::RpcHttpServer::addr)).
    pub addr: SocketAddr,
    /// The worker this server is (default `rpc/0`).
    pub worker: WorkerId,
    /// The node label used in error messages.
    pub node: String,
    /// The worker's initial environment (seen by engines; the process env is never changed).
    pub env: BTreeMap<String, String>,
    /// The engine types `/create_engine` can build.
    pub registry: EngineRegistry,
    /// Largest request body accepted; a larger one is answered 413 before it is read.
    pub max_body_bytes: usize,
    /// Completed request ids remembered for deduplication.
    pub dedupe_capacity: usize,
    /// Bytes of recorded replies kept for deduplication at most.
    pub dedupe_bytes: usize,
    /// Deadline of engine work (calls, engine creation, configure) when the request carries no
    /// `X-Fleet-Timeout-Ms`.
    pub call_timeout: Duration,
    /// Deadline of the worker's quick answers (health, status, set_env).
    pub control_timeout: Duration,
    /// Bound on the engines' destroy hooks at shutdown and for a `/destroy` without one.
    pub destroy_timeout: Duration,
    /// How long shutdown waits for open connections to finish their current answer.
    pub shutdown_grace: Duration,
    /// A connection that has not sent a full request head within this is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived within this is answered 408 (default 30 s).
    pub body_read_timeout: Duration,
    /// The token every route but `GET /health` requires (see [`super::auth`]); `None`
    /// generates a random one (read it with [`RpcHttpServer::token`](super::RpcHttpServer::token)),
    /// which only a loopback address allows.
    pub token: Option<String>,
    /// The listen backlog (default [`DEFAULT_LISTEN_BACKLOG`]; the kernel caps it at
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
}

impl std::fmt::Debug for RpcHttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcHttpConfig")
            .field("addr", &self.addr)
            .field("worker", &self.worker)
            .field("node", &self.node)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("call_timeout", &self.call_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("listen_backlog", &self.listen_backlog)
            .finish_non_exhaustive()
    }
}

impl RpcHttpConfig {
    /// Defaults: `127.0.0.1:0`, worker `rpc/0`, node `local`, empty env, 64 MiB bodies, one
    /// hour for engine work, 10 s for quick answers, 30 s for destroy hooks.
    pub fn new(registry: EngineRegistry) -> Self {
        RpcHttpConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            worker: WorkerId::new("rpc", 0),
            node: "local".to_string(),
            env: BTreeMap::new(),
            registry,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            dedupe_capacity: DEFAULT_DEDUPE_CAPACITY,
            dedupe_bytes: DEFAULT_DEDUPE_BYTES,
            call_timeout: Duration::from_secs(3600),
            control_timeout: Duration::from_secs(10),
            destroy_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            token: None,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
        }
    }

    /// Sets the bind address.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Sets the worker id.
    pub fn worker(mut self, worker: WorkerId) -> Self {
        self.worker = worker;
        self
    }

    /// Sets the node label.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// Adds a variable to the initial environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the largest request body.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets the dedupe capacity.
    pub fn dedupe_capacity(mut self, n: usize) -> Self {
        self.dedupe_capacity = n;
        self
    }

    /// Sets the byte bound of the dedupe record.
    pub fn dedupe_bytes(mut self, bytes: usize) -> Self {
        self.dedupe_bytes = bytes;
        self
    }

    /// Sets the default deadline of engine work.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets the token (see [`super::auth`]).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the deadline for a request body to arrive.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Sets the listen backlog.
    pub fn listen_backlog(mut self, backlog: u32) -> Self {
        self.listen_backlog = backlog;
        self
    }

    /// Sets the bound on destroy hooks.
    pub fn destroy_timeout(mut self, timeout: Duration) -> Self {
        self.destroy_timeout = timeout;
        self
    }
}
