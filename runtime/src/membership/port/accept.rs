//! fleet's accept loop on the cluster port: admit each connection as a pending handshake, run
//! the TLS handshake (if any) in a task of its own under the authentication deadline, and hand
//! the gated stream to the node server. Out of file descriptors it backs off and sheds the
//! oldest pending handshake instead of retrying at once.

use super::gated::{GatedConn, GatedRead};
use super::pending::{Pending, Ticket};
use super::throttle::Throttle;
use super::PortLimits;
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Log budgets shared by the loop and its handshake tasks.
#[derive(Debug)]
struct Logs {
    accept: Throttle,
    evicted: Throttle,
    tls_failed: Throttle,
    tls_late: Throttle,
}

/// Everything the loop needs.
pub(crate) struct Accept {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) server: ActorRef<NodeServerMessage>,
    pub(crate) pending: Arc<Pending>,
    pub(crate) limits: PortLimits,
}

/// Errors of `accept` that mean the process (or system) is out of descriptors or memory:
/// retrying at once would spin.
fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Errors about one connection that went away before it was accepted: take the next one.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Accept {
    /// Accepts until the node server stops.
    pub(crate) async fn run(self) {
        let logs = Arc::new(Logs {
            accept: Throttle::new(LOG_EVERY),
            evicted: Throttle::new(LOG_EVERY),
            tls_failed: Throttle::new(LOG_EVERY),
            tls_late: Throttle::new(LOG_EVERY),
        });
        let mut backoff = BACKOFF_MIN;
        loop {
            let accepted = self.listener.accept().await;
            if self.server.get_status() as u8 >= ractor::ActorStatus::Stopping as u8 {
                return;
            }
            let (stream, peer) = match accepted {
                Ok(x) => {
                    backoff = BACKOFF_MIN;
                    x
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    let exhausted = is_exhaustion(&e);
                    let shed = if exhausted {
                        self.pending.shed_oldest()
                    } else {
                        None
                    };
                    if let Some(skipped) = logs.accept.hit() {
                        tracing::warn!(
                            error = %e,
                            retry_in = ?backoff,
                            failures_not_logged = skipped,
                            shed_pending_handshake = ?shed,
                            "cannot accept a connection on the cluster port{}",
                            if exhausted {
                                ": out of file descriptors; raise `ulimit -n` (closing the oldest unauthenticated connection, backing off; at most one such line per 10 s)"
                            } else {
                                " (backing off; at most one such line per 10 s)"
                            }
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.admit(stream, peer, &logs);
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, logs: &Arc<Logs>) {
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let deadline = Instant::now() + self.limits.auth_timeout;
        let (ticket, evicted) = self.pending.admit(peer.to_string());
        if let Some(old) = evicted {
            if let Some(skipped) = logs.evicted.hit() {
                tracing::warn!(
                    closed = %old,
                    newer = %peer,
                    limit = self.pending.max(),
                    closed_not_logged = skipped,
                    "too many connections authenticating at once (--max-pending-handshakes): closed the oldest (at most one such line per 10 s)"
                );
            }
        }
        let hand = Handoff {
            server: self.server.clone(),
            peer,
            local,
            ticket,
            deadline,
            limits: self.limits,
        };
        match &self.tls {
            None => {
                let (r, w) = stream.into_split();
                hand.give(r, w);
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let logs = logs.clone();
                tokio::spawn(async move {
                    let gate = hand.ticket.gate.clone();
                    let evicted = std::future::poll_fn(|cx| gate.poll_closed(cx));
                    tokio::select! {
                        r = acceptor.accept(stream) => match r {
                            Ok(tls) => {
                                let (r, w) = tokio::io::split(tls);
                                hand.give(r, w);
                            }
                            Err(e) => {
                                if let Some(skipped) = logs.tls_failed.hit() {
                                    tracing::warn!(%peer, error = %e, refused_not_logged = skipped, "refused a connection: the TLS handshake failed (a peer without the cluster's certificates, or not TLS; at most one such line per 10 s)");
                                }
                            }
                        },
                        _ = tokio::time::sleep_until(deadline) => {
                            if let Some(skipped) = logs.tls_late.hit() {
                                tracing::warn!(%peer, refused_not_logged = skipped, "refused a connection: no TLS handshake within {:?} (--auth-timeout; at most one such line per 10 s)", hand.limits.auth_timeout);
                            }
                        }
                        _ = evicted => {}
                    }
                });
            }
        }
    }
}

/// A connection ready for the node server.
struct Handoff {
    server: ActorRef<NodeServerMessage>,
    peer: SocketAddr,
    local: SocketAddr,
    ticket: Ticket,
    deadline: Instant,
    limits: PortLimits,
}

impl Handoff {
    fn give<R, W>(self, r: R, w: W)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let read = GatedRead::new(r, self.ticket, self.deadline, self.limits, self.peer);
        let conn = GatedConn {
            read: Box::new(read),
            write: Box::new(w),
            peer: self.peer,
            local: self.local,
        };
        let _ = self
            .server
            .cast(NodeServerMessage::ConnectionOpenedExternal {
                stream: Box::new(conn),
                is_server: true,
            });
    }
}
