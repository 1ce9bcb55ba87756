//! The wire between fleet processes: a ractor_cluster `NodeServer` with fleet's settings
//! (listen address, cookie, optional TLS, frame limit, limits on unauthenticated connections),
//! session events as a channel, and a connect that waits until the peer is authenticated and
//! its actors are visible, or says why not.
//!
//! ractor_cluster only tells about sessions through a subscription callback and gives no error
//! when a peer refuses the cookie (the session just closes). Here every session event goes into
//! a broadcast channel, so a connecting side can wait for "ready" or "closed before it
//! authenticated" (refused), and the accepting side can log refusals with the peer's address.
//!
//! fleet accepts connections on the cluster port itself (plain TCP and TLS alike; see
//! [`super::port`]): each connection is a pending handshake with a deadline and small-frame
//! limits until ractor_cluster reports it authenticated, which the subscription tells the
//! gate directly.

use super::port::accept::Accept;
use super::port::pending::Pending;
use super::port::PortLimits;
use super::tls::TlsConfig;
use fleet_actors::FleetError;
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// What happened to a ractor_cluster session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The TCP (or TLS) connection is up; authentication starts.
    Opened,
    /// The cookie challenge passed.
    Authenticated,
    /// Actors and process groups are exchanged: remote actors are visible.
    Ready,
    /// The session ended.
    Closed,
}

/// One session event.
#[derive(Clone, Debug)]
pub struct SessionEvent {
    /// What happened.
    pub kind: SessionEventKind,
    /// ractor_cluster's id of the session (the `node()` of the peer's actor ids).
    pub session: u64,
    /// The peer's address.
    pub peer_addr: String,
    /// Whether the peer connected to us.
    pub incoming: bool,
    /// The peer's ractor_cluster name, once known.
    pub peer_name: Option<String>,
    /// The session's actor (stopping it closes the connection, also before authentication).
    pub actor: ractor::ActorRef<ractor_cluster::NodeSessionMessage>,
}

struct Forward(broadcast::Sender<SessionEvent>, Arc<Pending>);

impl Forward {
    fn send(&self, kind: SessionEventKind, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent {
            kind,
            session: ses.node_id,
            peer_addr: ses.peer_addr,
            incoming: ses.is_server,
            peer_name: ses.peer_name.map(|n| n.name),
            actor: ses.actor,
        });
    }
}

impl NodeEventSubscription for Forward {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEventKind::Opened, ses);
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEventKind::Closed, ses);
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        // Synchronously, before anything else: the connection's reader may be waiting for it.
        if ses.is_server {
            self.1.authenticated(&ses.peer_addr);
        }
        self.send(SessionEventKind::Authenticated, ses);
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEventKind::Ready, ses);
    }
}

/// How a fleet process listens and authenticates.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Address to listen on.
    pub listen_ip: IpAddr,
    /// Port (0: a free one).
    pub port: u16,
    /// The shared secret every peer must present.
    pub cookie: String,
    /// TLS between nodes (both ways: peers must present a certificate the CA signed).
    pub tls: Option<TlsConfig>,
    /// Largest inbound frame accepted (ractor_cluster drops the session over it).
    pub max_frame: u64,
    /// Limits on connections that have not authenticated yet.
    pub limits: PortLimits,
}

impl TransportConfig {
    /// Loopback, a free port, a random cookie, no TLS, the default 16 MiB frame limit and
    /// [`PortLimits::default`].
    pub fn loopback() -> Self {
        TransportConfig {
            listen_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 0,
            cookie: format!("{:032x}", rand::random::<u128>()),
            tls: None,
            max_frame: ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
            limits: PortLimits::default(),
        }
    }
}

/// A started node server with its event channel.
#[derive(Clone)]
pub struct Transport {
    /// The node server actor.
    pub server: ActorRef<NodeServerMessage>,
    /// The port it listens on.
    pub port: u16,
    /// The address it listens on.
    pub listen_ip: IpAddr,
    /// Its ractor_cluster name.
    pub name: String,
    events: broadcast::Sender<SessionEvent>,
    tls: Option<TlsConfig>,
    accept: Option<tokio::task::AbortHandle>,
    pending: Arc<Pending>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("listen_ip", &self.listen_ip)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

fn unavailable(what: impl Into<String>, detail: impl std::fmt::Display) -> FleetError {
    FleetError::Unavailable {
        what: what.into(),
        detail: detail.to_string(),
    }
}

impl Transport {
    /// Starts a node server called `name` (must be unique among the peers: ractor_cluster keeps
    /// one session per peer name).
    pub async fn start(name: &str, cfg: &TransportConfig) -> Result<Transport, FleetError> {
        // Bound here and kept: no window in which another process can take the port.
        let listener = tokio::net::TcpListener::bind((cfg.listen_ip, cfg.port))
            .await
            .map_err(|e| {
                unavailable(
                    format!("listening on {}:{}", cfg.listen_ip, cfg.port),
                    format!("{e}; pick another --listen port"),
                )
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| unavailable(format!("the port of {}", cfg.listen_ip), e))?
            .port();
        let host = match cfg.listen_ip {
            IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
            ip => ip.to_string(),
        };
        // ractor_cluster's own listener cannot be turned off: it gets a loopback port and
        // refuses every handshake (see `port`).
        let server = ractor_cluster::NodeServer::new(
            0,
            cfg.cookie.clone(),
            name.to_string(),
            host,
            Some(super::port::refuse_all().map_err(|e| {
                FleetError::internal(format!(
                    "setting up the node server's internal listener (TLS that refuses all): {e}"
                ))
            })?),
            None,
        )
        .with_listen_addr(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        .with_max_inbound_frame_size(cfg.max_frame);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| FleetError::internal(format!("node server did not start: {e}")))?;
        // Peers learn where to reach us (transitive connections) from this.
        let _ = server.cast(NodeServerMessage::PortChanged { port });
        let (events, _) = broadcast::channel(1024);
        let pending = Pending::new(cfg.limits.max_pending);
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "fleet".into(),
                subscription: Box::new(Forward(events.clone(), pending.clone())),
            })
            .map_err(|e| FleetError::internal(format!("node server stopped at once: {e}")))?;
        // A call is a mailbox barrier: the subscription is in place once it returns.
        let _ = ractor::call_t!(server, NodeServerMessage::GetSessions, 5_000);
        let accept = Accept {
            listener,
            tls: cfg.tls.as_ref().map(|t| t.acceptor.clone()),
            server: server.clone(),
            pending: pending.clone(),
            limits: cfg.limits,
        };
        let accept = Some(tokio::spawn(accept.run()).abort_handle());
        Ok(Transport {
            name: name.to_string(),
            server,
            port,
            listen_ip: cfg.listen_ip,
            events,
            tls: cfg.tls.clone(),
            accept,
            pending,
        })
    }

    /// Why fleet itself closed the unauthenticated incoming connection from `peer` (its
    /// deadline or the pending limit), if it did; asked once per connection.
    pub fn closed_by_limit(&self, peer: &str) -> Option<String> {
        self.pending.close_reason(peer)
    }

    /// Session events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Connects to the fleet process at `addr` and waits (up to `deadline`) until the session is
    /// ready, returning its id and the peer's ractor_cluster name. A peer that closes the session before authentication refused
    /// us: wrong cookie, TLS mismatch, or not a fleet process.
    pub async fn connect(
        &self,
        addr: &str,
        deadline: Duration,
    ) -> Result<(u64, String), FleetError> {
        let what = format!("the fleet process at {addr}");
        let sock: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| FleetError::bad_request(format!("resolving {addr}"), e))?
            .next()
            .ok_or_else(|| FleetError::bad_request(format!("resolving {addr}"), "no address"))?;
        let mut rx = self.subscribe();
        // The TCP connect too is bounded: across a partition a SYN may go unanswered for
        // minutes.
        let connecting = async {
            match &self.tls {
                None => ractor_cluster::client_connect(&self.server, sock).await,
                Some(t) => {
                    let name = t.server_name(addr);
                    ractor_cluster::client_connect_enc(
                        &self.server,
                        sock,
                        t.connector.clone(),
                        name,
                    )
                    .await
                }
            }
        };
        let started = tokio::time::Instant::now();
        let Ok(connected) = tokio::time::timeout(deadline, connecting).await else {
            return Err(FleetError::timeout(
                format!("connecting to {addr}"),
                deadline,
            ));
        };
        let deadline = deadline.saturating_sub(started.elapsed());
        if let Err(e) = connected {
            return Err(unavailable(
                what,
                match e {
                    ractor_cluster::ClientConnectErr::Encryption(e) => {
                        format!("the TLS handshake failed: {e} (check --tls-cert, --tls-key and --tls-ca on both sides)")
                    }
                    ractor_cluster::ClientConnectErr::Socket(e) => format!("cannot connect: {e}"),
                    other => other.to_string(),
                },
            ));
        }
        let want = sock.to_string();
        let mut session = None;
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(ev) if !ev.incoming && ev.peer_addr == want => match ev.kind {
                        SessionEventKind::Opened => session = Some((ev.session, ev.actor)),
                        SessionEventKind::Authenticated => {}
                        SessionEventKind::Ready => {
                            return Ok((ev.session, ev.peer_name.unwrap_or_default()))
                        }
                        SessionEventKind::Closed => {
                            let ours = session.as_ref().map(|(id, _)| *id);
                            return Err(if ours == Some(ev.session) || ours.is_none() {
                                FleetError::BadRequest {
                                    what: what.clone(),
                                    detail: "it closed the connection during authentication: the cookie does not match (set the same --cookie-file or FLEET_COOKIE on every node), TLS is on at one end only or the certificates are not from the same CA, or it is not a fleet process of this version".into(),
                                }
                            } else {
                                unavailable(what.clone(), "the connection closed")
                            });
                        }
                    },
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(unavailable(what.clone(), "the local node server stopped"))
                    }
                }
            }
        };
        let r = match tokio::time::timeout(deadline, wait).await {
            Ok(r) => r,
            Err(_) => Err(FleetError::timeout(
                format!(
                    "authenticating with {addr} (is it a fleet process? is TLS on at both ends?)"
                ),
                deadline,
            )),
        };
        if r.is_err() {
            // A handshake that did not finish in time must not complete later, behind the
            // caller's back, as a second session to the same peer.
            // (`close_session` sees only authenticated sessions: stop the actor itself.)
            if let Some((_, actor)) = session {
                actor.stop(Some("fleet: the connect attempt failed".into()));
            }
        }
        r
    }

    /// Closes the session with this id (its TCP connection), if it is still open.
    pub async fn close_session(&self, id: u64) {
        if let Ok(m) = ractor::call_t!(self.server, NodeServerMessage::GetSessions, 5_000) {
            if let Some(s) = m.get(&id) {
                s.actor.stop(Some("closed by fleet".into()));
            }
        }
    }

    /// Ids of the authenticated sessions, with the peers' addresses.
    pub async fn sessions(&self) -> HashMap<u64, String> {
        match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 5_000) {
            Ok(m) => m.into_iter().map(|(id, s)| (id, s.peer_addr)).collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// The ractor_cluster names of the peers of the authenticated sessions.
    pub async fn peer_names(&self) -> HashSet<String> {
        match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 5_000) {
            Ok(m) => m
                .into_values()
                .filter_map(|s| s.peer_name.map(|n| n.name))
                .collect(),
            Err(_) => HashSet::new(),
        }
    }

    /// Stops the node server (and with it every session).
    pub fn stop(&self) {
        if let Some(a) = &self.accept {
            a.abort();
        }
        self.server.stop(Some("fleet transport stopped".into()));
    }
}

/// The remote members of `scope`/`group` that came over `session`.
pub fn remote_members(scope: &str, group: &str, session: u64) -> Vec<ActorCell> {
    ractor::pg::get_scoped_members(&scope.to_string(), &group.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local() && c.get_id().node() == session)
        .collect()
}
