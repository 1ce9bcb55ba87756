//! Starting and stopping the proxy: [`serve`] and its [`ProxyHandle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::config::{AdminKey, ProxyConfig};
use crate::errors::ProxyError;
use crate::router::{Reach, Router};
use crate::routes;
use crate::sessions::{Limits, Store};
use crate::upstream::Upstream;
use fleet_http::listener::{ConnLimits, Listener, DEFAULT_HEADER_READ_TIMEOUT};

/// Shared by every request.
pub(crate) struct State {
    pub(crate) store: Arc<Store>,
    pub(crate) upstream: Upstream,
    /// The router over several servers; `None`: the single `upstream`, as before.
    pub(crate) router: Option<Arc<Router>>,
    pub(crate) admin: AdminKey,
    pub(crate) config: ProxyConfig,
}

/// A running proxy. Dropping it stops the proxy too (without waiting).
#[derive(Debug)]
pub struct ProxyHandle {
    addr: SocketAddr,
    admin_key: String,
    admin_key_configured: bool,
    listener: Listener,
    reaper: AbortOnDrop,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ProxyHandle {
    /// The address the proxy listens on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin key in use: the configured one, or the random one generated at start.
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// Whether the admin key was configured rather than generated.
    pub fn admin_key_configured(&self) -> bool {
        self.admin_key_configured
    }

    /// Stops accepting, gives open requests a short grace period, and waits for the end.
    pub async fn shutdown(self) {
        drop(self.reaper);
        self.listener.shutdown().await;
    }

    /// Waits until the proxy stops (it only stops when shut down).
    pub async fn wait(&mut self) {
        self.listener.wait().await;
    }
}

/// Validates `config`, binds, and serves the proxy in background tasks.
pub async fn serve(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let (backend, admin) = config.validate()?;
    let listener = fleet_http::listen::bind_with_backlog(config.bind, config.listen_backlog)
        .map_err(|source| ProxyError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: config.bind,
        source,
    })?;
    let store = Arc::new(Store::new(
        Limits {
            max_sessions: config.max_sessions,
            max_turns: config.max_turns_per_session,
            idle_timeout: config.session_idle_timeout,
            max_bytes: config.max_session_bytes,
        },
        config.initial_version,
    ));
    let upstream = Upstream::new(
        &backend,
        config.backend_api_key.as_deref(),
        config.backend_connect_timeout,
        config.backend_timeout,
    );
    let router = if config.uses_router() {
        Some(Arc::new(Router::new(
            &config.all_backends()?,
            config.initial_version,
            Reach {
                api_key: config.backend_api_key.clone(),
                connect_timeout: config.backend_connect_timeout,
                timeout: config.backend_timeout,
            },
            config.breaker_threshold,
            config.router_wait_timeout,
        )))
    } else {
        None
    };
    let reaper = AbortOnDrop(tokio::spawn(reap(
        Arc::clone(&store),
        (config.session_idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5)),
    )));
    let handle_key = admin.key.clone();
    let admin_key_configured = admin.configured;
    let state = Arc::new(State {
        store,
        upstream,
        router,
        admin,
        config,
    });
    tracing::info!(%addr, backend = %backend.root, admin_key_configured, "proxy listening");
    let limits = ConnLimits {
        header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        write_stall_timeout: Some(state.config.write_stall_timeout),
    };
    let listener = Listener::spawn_with("proxy", listener, limits, move |req, _peer| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(routes::handle(state, req).await) }
    });
    Ok(ProxyHandle {
        addr,
        admin_key: handle_key,
        admin_key_configured,
        listener,
        reaper,
    })
}

/// Ends idle sessions and forgets unexported ones, on a fixed tick (a fraction of the idle
/// timeout, so expiry is late by at most that fraction).
async fn reap(store: Arc<Store>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        store.reap(Instant::now());
    }
}
