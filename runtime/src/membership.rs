//! Multi-node fleet: the head, nodes that join it, heartbeats, failure detection and fencing.
//!
//! ractor_cluster gives authenticated sessions and remote actors found through process groups,
//! but no liveness timeout, no reconnect, and no stable node identity. This layer adds them:
//!
//! * [`transport`]: a `NodeServer` with fleet's settings (cookie, TLS, frame limit) whose
//!   session events arrive as a channel, and a connect that waits until the peer is ready or
//!   says it refused us;
//! * [`head`]: the head actor, found by nodes in the `fleet`/`head/<server>` group. It admits nodes
//!   (`Join` → cluster id and timings), tracks heartbeats, marks nodes suspect and down, frees
//!   what a lost node held (through [`scheduler_hooks`]) and answers `fleet status`;
//! * [`join`]: the node side: dial the head, join under a fresh [`fleet_actors::NodeId`], beat,
//!   and fence (stop every worker) when the lease runs out, then rejoin with backoff;
//! * [`fence`]: the first act of fencing, killing every child process of the node's workers;
//! * [`events`]: membership events for programs and tests;
//! * `runtime`: the head's own tokio runtime, so a driver that blocks its threads cannot
//!   stall heartbeats;
//! * [`tls`]: mutual TLS from PEM files;
//! * [`port`]: fleet's own accept loop on the cluster port, with limits on connections that
//!   have not authenticated;
//! * [`loopback_cookie`]: the random per-user cookie of loopback clusters started without one.
//!
//! Who drives a job: the head process hosts the scheduler (see [`crate::Cluster::head`]); a
//! driver program either *is* the head (embedded, like `fleet head`), submits a job file to a
//! running head ([`crate::jobs`]), or attaches to one with [`crate::Cluster::connect`] and
//! sends it scheduler requests ([`crate::attach`]; its calls then go through the head). Calls
//! go from the head to the node agents directly.

pub mod child_pids;
pub mod events;
pub mod fence;
pub mod head;
pub mod join;
pub(crate) mod lease_file;
pub mod loopback_cookie;
pub mod port;
pub mod protocol;
pub(crate) mod runtime;
pub mod scheduler_hooks;
pub mod tls;
pub mod transport;

pub use events::{EventBus, MemberEvent};
pub use head::{Head, HeadArgs, MembershipConfig};
pub use join::{JoinConfig, JoinedNode, NodePhase};
pub use protocol::{HeadMsg, MemberState, NodeRow, StatusReport, WorkerRow};
pub use tls::{TlsConfig, TlsFiles};
pub use transport::{Transport, TransportConfig};

use fleet_actors::wire::Wire;
use fleet_actors::FleetError;
use ractor::ActorRef;
use std::collections::HashSet;
use std::time::Duration;
use transport::SessionEventKind;

/// Forwards closed sessions to the head (a SIGKILLed node is down at once, not after the
/// timeout) and logs connections that closed before they authenticated.
pub(crate) fn watch_sessions(transport: &Transport, head: ActorRef<HeadMsg>, events: EventBus) {
    let mut rx = transport.subscribe();
    let transport = transport.clone();
    tokio::spawn(async move {
        let mut authenticated = HashSet::new();
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "session events lagged");
                    continue;
                }
                Err(_) => return,
            };
            match ev.kind {
                SessionEventKind::Opened => {}
                SessionEventKind::Authenticated | SessionEventKind::Ready => {
                    authenticated.insert(ev.session);
                }
                SessionEventKind::Closed => {
                    if !authenticated.remove(&ev.session) && ev.incoming {
                        let reason = transport.closed_by_limit(&ev.peer_addr).unwrap_or_else(|| "the connection closed before it authenticated: wrong cookie (every node needs the head's --cookie-file / FLEET_COOKIE), or not a fleet process".to_string());
                        tracing::warn!(peer = %ev.peer_addr, %reason, "refused a connection");
                        events.publish(MemberEvent::Refused {
                            peer: ev.peer_addr.clone(),
                            reason,
                        });
                    }
                    if head
                        .cast(HeadMsg::SessionClosed(Wire::new(ev.session)))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
}

/// Asks the head at `addr` for its status (used by `fleet status`): connects as a client with
/// `transport`, finds the head over that session, and calls it with `timeout`.
pub async fn fetch_status(
    transport: &Transport,
    addr: &str,
    timeout: Duration,
) -> Result<StatusReport, FleetError> {
    let (session, peer) = transport.connect(addr, timeout).await?;
    let group = protocol::head_group(&peer);
    let head = transport::remote_members(protocol::FLEET_SCOPE, &group, session)
        .into_iter()
        .next()
        .ok_or_else(|| FleetError::Unavailable {
            what: format!("the fleet process at {addr}"),
            detail: "it has no head (is it a `fleet node`? ask its head)".into(),
        })?;
    let head: ActorRef<HeadMsg> = head.into();
    match head.call(HeadMsg::Status, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(r)) => r.flatten(),
        Ok(ractor::rpc::CallResult::Timeout) => Err(FleetError::timeout(
            format!("status from the head at {addr}"),
            timeout,
        )),
        _ => Err(FleetError::Unavailable {
            what: format!("the head at {addr}"),
            detail: "the connection closed".into(),
        }),
    }
}
