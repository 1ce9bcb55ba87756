//! Membership events, as the head publishes them: a node joined, became suspect, went down,
//! left, or a peer was refused. Programs and tests subscribe with
//! [`crate::Cluster::member_events`] instead of polling.

use crate::node::resources::NodeResources;
use fleet_actors::NodeId;
use tokio::sync::broadcast;

/// A change in the cluster's membership.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberEvent {
    /// A node was admitted.
    Joined {
        /// The node.
        node: NodeId,
        /// What it offers.
        resources: NodeResources,
    },
    /// A node missed beats for more than half the timeout.
    Suspect {
        /// The node.
        node: NodeId,
    },
    /// A node is lost: its workers are marked lost and its resources freed.
    Down {
        /// The node.
        node: NodeId,
        /// How it was detected.
        reason: String,
    },
    /// A node left cleanly.
    Left {
        /// The node.
        node: NodeId,
    },
    /// A connection was refused before it authenticated (wrong cookie, TLS mismatch, not a
    /// fleet process), or a join was refused.
    Refused {
        /// The peer's address.
        peer: String,
        /// Why.
        reason: String,
    },
}

/// The sending side, shared by the head's parts.
#[derive(Clone, Debug)]
pub struct EventBus(broadcast::Sender<MemberEvent>);

impl Default for EventBus {
    fn default() -> Self {
        EventBus(broadcast::channel(4096).0)
    }
}

impl EventBus {
    /// Publishes an event (dropped if nobody listens).
    pub fn publish(&self, ev: MemberEvent) {
        let _ = self.0.send(ev);
    }

    /// A receiver of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.0.subscribe()
    }
}
