//! The wire between fleet processes: a ractor_cluster `NodeServer` with fleet's settings
//! (listen address, cookie, optional TLS, frame limit), session events as a channel, and a
//! connect that waits until the peer is authenticated and its actors are visible, or says
//! why not.
//!
//! ractor_cluster only tells about sessions through a subscription callback and gives no error
//! when a peer refuses the cookie (the session just closes). Here every session event goes into
//! a broadcast channel, so a connecting side can wait for "ready" or "closed before it
//! authenticated" (refused), and the accepting side can log refusals with the peer's address.
//!
//! With TLS, fleet accepts connections itself: ractor_cluster's listener runs the TLS
//! handshake inside its accept loop, so one client that connects and sends half a handshake
//! would stop the node from accepting anyone else. Here each handshake runs in its own task
//! with a deadline, and the finished stream is handed to the node server. (The node server's
//! own listener then only listens on a loopback port, with TLS too.)

use super::tls::TlsConfig;
use fleet_actors::FleetError;
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
}

struct Forward(broadcast::Sender<SessionEvent>);

impl Forward {
    fn send(&self, kind: SessionEventKind, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent {
            kind,
            session: ses.node_id,
            peer_addr: ses.peer_addr,
            incoming: ses.is_server,
            peer_name: ses.peer_name.map(|n| n.name),
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
}

impl TransportConfig {
    /// Loopback, a free port, a random cookie, no TLS, the default 16 MiB frame limit.
    pub fn loopback() -> Self {
        TransportConfig {
            listen_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 0,
            cookie: format!("{:032x}", rand::random::<u128>()),
            tls: None,
            max_frame: ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
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
        let port = if cfg.port == 0 {
            std::net::TcpListener::bind((cfg.listen_ip, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| {
                    unavailable(
                        format!("a port on {} for the node server", cfg.listen_ip),
                        e,
                    )
                })?
        } else {
            // Fail with a clear message instead of ractor_cluster's panic in its listener.
            std::net::TcpListener::bind((cfg.listen_ip, cfg.port)).map_err(|e| {
                unavailable(
                    format!("listening on {}:{}", cfg.listen_ip, cfg.port),
                    format!("{e}; pick another --listen port"),
                )
            })?;
            cfg.port
        };
        let encryption = cfg
            .tls
            .as_ref()
            .map(|t| ractor_cluster::IncomingEncryptionMode::Tls(t.acceptor.clone()));
        let host = match cfg.listen_ip {
            IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
            ip => ip.to_string(),
        };
        // With TLS, our own listener takes the public port (see the module docs).
        let (server_port, server_ip) = match &cfg.tls {
            None => (port, cfg.listen_ip),
            Some(_) => (0, IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        };
        let server = ractor_cluster::NodeServer::new(
            server_port,
            cfg.cookie.clone(),
            name.to_string(),
            host,
            encryption,
            None,
        )
        .with_listen_addr(server_ip)
        .with_max_inbound_frame_size(cfg.max_frame);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| FleetError::internal(format!("node server did not start: {e}")))?;
        let (events, _) = broadcast::channel(1024);
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "fleet".into(),
                subscription: Box::new(Forward(events.clone())),
            })
            .map_err(|e| FleetError::internal(format!("node server stopped at once: {e}")))?;
        // A call is a mailbox barrier: the subscription is in place once it returns.
        let _ = ractor::call_t!(server, NodeServerMessage::GetSessions, 5_000);
        let accept = if let Some(tls) = &cfg.tls {
            let listener = tokio::net::TcpListener::bind((cfg.listen_ip, port))
                .await
                .map_err(|e| unavailable(format!("listening on {}:{port}", cfg.listen_ip), e))?;
            Some(
                tokio::spawn(accept_tls(listener, tls.acceptor.clone(), server.clone()))
                    .abort_handle(),
            )
        } else {
            None
        };
        Ok(Transport {
            name: name.to_string(),
            server,
            port,
            listen_ip: cfg.listen_ip,
            events,
            tls: cfg.tls.clone(),
            accept,
        })
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
        let connected = match &self.tls {
            None => ractor_cluster::client_connect(&self.server, sock).await,
            Some(t) => {
                let name = t.server_name(addr);
                ractor_cluster::client_connect_enc(&self.server, sock, t.connector.clone(), name)
                    .await
            }
        };
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
                        SessionEventKind::Opened => session = Some(ev.session),
                        SessionEventKind::Authenticated => {}
                        SessionEventKind::Ready => {
                            return Ok((ev.session, ev.peer_name.unwrap_or_default()))
                        }
                        SessionEventKind::Closed => {
                            return Err(if session == Some(ev.session) || session.is_none() {
                                FleetError::BadRequest {
                                    what: what.clone(),
                                    detail: "it closed the connection during authentication: the cookie does not match (set the same --cookie-file or FLEET_COOKIE on every node), TLS is on at one end only or the certificates are not from the same CA, or it is not a fleet process of this version".into(),
                                }
                            } else {
                                unavailable(what.clone(), "the connection closed")
                            })
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
        match tokio::time::timeout(deadline, wait).await {
            Ok(r) => r,
            Err(_) => Err(FleetError::timeout(
                format!(
                    "authenticating with {addr} (is it a fleet process? is TLS on at both ends?)"
                ),
                deadline,
            )),
        }
    }

    /// Ids of the authenticated sessions, with the peers' addresses.
    pub async fn sessions(&self) -> HashMap<u64, String> {
        match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 5_000) {
            Ok(m) => m.into_iter().map(|(id, s)| (id, s.peer_addr)).collect(),
            Err(_) => HashMap::new(),
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

/// Accepts TLS connections, each handshake in its own task with a deadline, and hands the
/// streams to the node server; ends when the node server stops.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
) {
    const HANDSHAKE: Duration = Duration::from_secs(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if server.get_status() as u8 >= ractor::ActorStatus::Stopping as u8 {
            return;
        }
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = server.cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(ractor_cluster::NetworkStream::TlsServer {
                            peer_addr: peer,
                            local_addr: local,
                            stream: tls,
                        }),
                        is_server: true,
                    });
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refused a connection: the TLS handshake failed (a peer without the cluster's certificates, or not TLS)");
                }
                Err(_) => {
                    tracing::warn!(%peer, "refused a connection: no TLS handshake within 10 s");
                }
            }
        });
    }
}

/// The remote members of `scope`/`group` that came over `session`.
pub fn remote_members(scope: &str, group: &str, session: u64) -> Vec<ActorCell> {
    ractor::pg::get_scoped_members(&scope.to_string(), &group.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local() && c.get_id().node() == session)
        .collect()
}
