//! Binding, the accept loop, and the handle that shuts it all down.
//!
//! One task accepts connections; each connection is served by hyper's HTTP/1.1 server (with
//! keep-alive) in a task of its own, so a long engine call holds only its own connection.
//! Stopping (a `/destroy` that was answered, or [`RpcHttpServer::shutdown`]) flips one `watch`
//! switch: the accept loop drops the listener, every connection is shut down gracefully (the
//! answer in flight is finished, keep-alive ends) and waited for up to a grace period.

use super::config::RpcHttpConfig;
use super::routes::{self, Ctx};
use super::worker::WorkerHandle;
use fleet_actors::rpc_server::{Control, ControlReply, RpcServer, RpcServerArgs, WorkerMsg};
use fleet_actors::{FleetError, WorkerId};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ractor::{Actor, ActorRef};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another port (0 = any free port)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No token was configured for a non-loopback address.
    #[error("refusing to serve on {addr} without a token: anyone who can reach it could run engines and stop the worker; give --token-file FILE, --token-stdin or FLEET_RPC_TOKEN (at least {min} characters), or bind 127.0.0.1")]
    NoToken {
        /// The address asked for.
        addr: SocketAddr,
        /// The shortest token accepted off loopback.
        min: usize,
    },
    /// The configured token is unusable.
    #[error("the rpc-server token is {reason}; {hint}")]
    BadToken {
        /// What is wrong with it.
        reason: &'static str,
        /// What to do.
        hint: String,
    },
    /// The RpcServer actor did not start.
    #[error("cannot start the RpcServer actor for worker {worker}: {reason}")]
    Actor {
        /// The worker.
        worker: WorkerId,
        /// Why.
        reason: String,
    },
}

/// A running HTTP-faced RpcServer. Dropping it without [`shutdown`](Self::shutdown) stops the
/// actor (its engine thread still runs the destroy hooks) and the accept loop at once.
pub struct RpcHttpServer {
    addr: SocketAddr,
    token: String,
    worker: WorkerId,
    actor: ActorRef<WorkerMsg>,
    actor_done: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    accept: Option<JoinHandle<()>>,
    control_timeout: Duration,
    destroy_timeout: Duration,
}

/// Binds `config.addr`, spawns one RpcServer actor with `config.registry`, and serves the HTTP
/// routes until [`RpcHttpServer::shutdown`] or a `POST /destroy`.
///
/// This is what `fleet rpc-server` runs with the built-in engines; a program with engines of
/// its own calls it with its own [`EngineRegistry`](fleet_actors::EngineRegistry) (or
/// [`run_until_stopped`](super::run_until_stopped) for the whole process life cycle).
pub async fn serve(config: RpcHttpConfig) -> Result<RpcHttpServer, ServeError> {
    let token = checked_token(&config)?;
    let listener = fleet_http::listen::bind_with_backlog(config.addr, config.listen_backlog)
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.addr,
        source,
    })?;
    let mut args = RpcServerArgs::new(
        config.worker.clone(),
        config.node.clone(),
        config.registry.clone(),
    );
    args.env = config.env.clone();
    args.dedupe_capacity = config.dedupe_capacity;
    args.dedupe_bytes = config.dedupe_bytes;
    // No name: the registry is process-global and a fixed name would clash with a second
    // server in the same process (tests, embedding programs).
    let (actor, actor_done) =
        Actor::spawn(None, RpcServer, args)
            .await
            .map_err(|e| ServeError::Actor {
                worker: config.worker.clone(),
                reason: e.to_string(),
            })?;

    let (stop, stop_rx) = watch::channel(false);
    let (done_tx, done) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        worker: WorkerHandle {
            actor: actor.clone(),
            worker: config.worker.clone(),
        },
        max_body_bytes: config.max_body_bytes,
        body_read_timeout: config.body_read_timeout,
        token: token.clone(),
        call_timeout: config.call_timeout,
        control_timeout: config.control_timeout,
        destroy_timeout: config.destroy_timeout,
        stop: stop.clone(),
    });
    let accept = tokio::spawn(accept_loop(
        listener,
        ctx,
        stop_rx,
        config.shutdown_grace,
        config.header_read_timeout,
        done_tx,
    ));
    tracing::info!(worker = %config.worker, node = %config.node, %addr, "rpc-server HTTP face listening");
    Ok(RpcHttpServer {
        addr,
        token,
        worker: config.worker,
        actor,
        actor_done: Some(actor_done),
        stop,
        done,
        accept: Some(accept),
        control_timeout: config.control_timeout,
        destroy_timeout: config.destroy_timeout,
    })
}

impl std::fmt::Debug for RpcHttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcHttpServer")
            .field("addr", &self.addr)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// The token to require: the configured one, checked, or a random one on loopback.
fn checked_token(config: &RpcHttpConfig) -> Result<String, ServeError> {
    let loopback = config.addr.ip().is_loopback();
    match &config.token {
        None if loopback => Ok(super::auth::random_token()),
        None => Err(ServeError::NoToken {
            addr: config.addr,
            min: super::auth::MIN_REMOTE_TOKEN_LEN,
        }),
        Some(t) if t.trim().is_empty() => Err(ServeError::BadToken {
            reason: "empty",
            hint: "an empty token would turn authentication off; put a random string in the token file (e.g. `openssl rand -hex 32`), or give none on loopback to get a random one".into(),
        }),
        Some(t) if t.trim() != t || t.contains(char::is_control) => Err(ServeError::BadToken {
            reason: "padded with whitespace or holds control characters",
            hint: "use printable characters only".into(),
        }),
        Some(t) if !loopback && t.len() < super::auth::MIN_REMOTE_TOKEN_LEN => {
            Err(ServeError::BadToken {
                reason: "too short for a non-loopback address",
                hint: format!(
                    "use at least {} characters (e.g. `openssl rand -hex 32`)",
                    super::auth::MIN_REMOTE_TOKEN_LEN
                ),
            })
        }
        Some(t) => Ok(t.clone()),
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    header_read_timeout: Duration,
    done: watch::Sender<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        ctx.clone(),
                        stop.clone(),
                        header_read_timeout,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: say so, back off a little, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            ?grace,
            "connections still busy after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
    done.send_replace(true);
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(routes::handle(ctx, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Malformed requests, clients that hang up mid-request, header timeouts: that one
        // connection ends (hyper has answered 400/408 where it could), the server goes on.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

impl RpcHttpServer {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token every route but `GET /health` requires (the configured one, or the random
    /// one generated at start).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The worker this server is.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The RpcServer actor behind the routes, for in-process callers that want to skip HTTP.
    pub fn actor(&self) -> &ActorRef<WorkerMsg> {
        &self.actor
    }

    /// Resolves once the server has stopped serving: after a `POST /destroy` (or a bincode
    /// `Control::Destroy`) was answered, or after [`shutdown`](Self::shutdown) began.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Shuts down gracefully: runs the engines' destroy hooks (bounded by the configured
    /// destroy timeout; `/health` answers 503 meanwhile), stops accepting, lets open
    /// connections finish their current answer (bounded by the grace period) and waits for the
    /// actor to stop. Returns the destroy hooks' error, if any; the server is stopped either
    /// way.
    pub async fn shutdown(mut self) -> Result<(), FleetError> {
        let hooks = self.destroy_timeout;
        let timeout_ms = hooks.as_millis() as u64;
        let outcome = self
            .actor
            .call(
                |port| WorkerMsg::Control(Control::Destroy { timeout_ms }, port),
                Some(hooks.saturating_add(self.control_timeout)),
            )
            .await;
        let result = match outcome {
            Ok(ractor::rpc::CallResult::Success(ControlReply(r))) => r.map(|_| ()),
            Ok(ractor::rpc::CallResult::Timeout) => Err(FleetError::timeout(
                format!("destroy hooks of worker {}", self.worker),
                hooks,
            )),
            // Already destroyed (by `/destroy`) or stopped: nothing left to destroy.
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Ok(()),
        };
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.actor.stop(Some("rpc-server shut down".into()));
        if let Some(done) = self.actor_done.take() {
            let _ = tokio::time::timeout(self.control_timeout, done).await;
        }
        tracing::info!(worker = %self.worker, ok = result.is_ok(), "rpc-server stopped");
        result
    }
}

impl Drop for RpcHttpServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            self.stop.send_replace(true);
            accept.abort();
            // Dropping the actor's job sender ends its engine thread after the current job,
            // with the engines' destroy hooks.
            self.actor.stop(Some("rpc-server handle dropped".into()));
        }
    }
}
