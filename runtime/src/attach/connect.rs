//! [`Cluster::connect`](crate::Cluster::connect): the builder, and the [`ConnectedCluster`] it
//! gives.

use super::link::RemoteLink;
use super::protocol::scheduler_group;
use crate::membership::protocol::FLEET_SCOPE;
use crate::membership::transport::remote_members;
use crate::membership::{TlsConfig, Transport, TransportConfig};
use crate::scheduler::Scheduler;
use fleet_actors::FleetError;
use std::sync::Arc;
use std::time::Duration;

/// Builder of a connection to a running head; see [`crate::Cluster::connect`].
#[derive(Debug)]
pub struct ConnectBuilder {
    addr: String,
    cookie: Option<String>,
    tls: Option<TlsConfig>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl ConnectBuilder {
    pub(crate) fn new(addr: impl Into<String>) -> Self {
        ConnectBuilder {
            addr: addr.into(),
            cookie: None,
            tls: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The cluster's cookie (default on a loopback address: the user's loopback cookie,
    /// [`crate::membership::loopback_cookie`]; any other address needs one).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }

    /// TLS, as the head and its nodes use it.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The deadline of scheduler requests that take none of their own: `create_workers`,
    /// `fork_workers`, `delete_workers`, `workers`, `job`, `roles`, `set_worker_env` (default
    /// 120 s). Calls, controls and `get_workers` keep their own deadlines.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How long connecting and authenticating may take (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Connects, authenticates and finds the head's scheduler service. Errors: nothing listens
    /// there ([`FleetError::Unavailable`]), the cookie or TLS does not match
    /// ([`FleetError::BadRequest`]), or the process there is no `fleet head`
    /// ([`FleetError::Unavailable`] saying so).
    pub async fn start(self) -> Result<ConnectedCluster, FleetError> {
        let host_is_loopback = match tokio::net::lookup_host(&self.addr).await {
            Ok(mut a) => a.next().map(|a| a.ip().is_loopback()).unwrap_or(false),
            Err(e) => {
                return Err(FleetError::bad_request(
                    format!("connecting to {}", self.addr),
                    format!("it is not HOST:PORT ({e})"),
                ))
            }
        };
        let cookie = match self.cookie {
            Some(c) => c,
            None if host_is_loopback => crate::membership::loopback_cookie::load_or_create()?,
            None => {
                return Err(FleetError::bad_request(
                    format!("connecting to {}", self.addr),
                    "a cookie is required for a head on any address other than loopback: give .cookie(..) (the head's --cookie-file / FLEET_COOKIE)",
                ))
            }
        };
        let cfg = TransportConfig {
            cookie,
            tls: self.tls,
            ..TransportConfig::loopback()
        };
        let client = format!("driver-{:016x}", rand::random::<u64>());
        let transport = Transport::start(&client, &cfg).await?;
        let addr = self.addr.clone();
        let found = async {
            let (session, peer) = transport.connect(&addr, self.connect_timeout).await?;
            remote_members(FLEET_SCOPE, &scheduler_group(&peer), session)
                .into_iter()
                .next()
                .ok_or_else(|| FleetError::Unavailable {
                    what: format!("the fleet process at {addr}"),
                    detail: "it runs no scheduler service: Cluster::connect attaches to a `fleet head` (a `fleet node` or `fleet run --listen` takes none)".into(),
                })
        }
        .await;
        match found {
            Ok(cell) => {
                let link = Arc::new(RemoteLink {
                    transport,
                    service: cell.into(),
                    client,
                    addr: self.addr,
                    timeout: self.timeout,
                });
                tracing::info!(head = %link.addr, client = %link.client, "connected to a head");
                Ok(ConnectedCluster {
                    scheduler: Scheduler::remote(link.clone()),
                    link,
                })
            }
            Err(e) => {
                transport.stop();
                Err(e)
            }
        }
    }
}

/// A program attached to a running head: its [`Scheduler`] has the same methods as an
/// embedded cluster's, run by the head (see [`crate::attach`]).
///
/// [`shutdown`](Self::shutdown) deletes the roles this program created and closes the
/// session; dropping it (or the process dying) closes the session, and the head then deletes
/// those roles itself.
#[derive(Debug)]
pub struct ConnectedCluster {
    link: Arc<RemoteLink>,
    scheduler: Scheduler,
}

impl ConnectedCluster {
    /// The scheduler: every method runs on the head.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The head's address.
    pub fn head_addr(&self) -> &str {
        self.link.addr()
    }

    /// The name the head knows this program by (its roles are recorded under it).
    pub fn client_name(&self) -> &str {
        &self.link.client
    }

    /// Deletes the roles this program created (destroy hooks, then stop, on the head) and
    /// closes the session. Roles created by other programs and submitted jobs stay.
    pub async fn shutdown(self) -> Result<(), FleetError> {
        let r = self.scheduler.delete_workers(None, false).await;
        self.link.close();
        r
    }
}

impl Drop for ConnectedCluster {
    fn drop(&mut self) {
        // The head deletes what this program still owns when the session closes.
        self.link.close();
    }
}
