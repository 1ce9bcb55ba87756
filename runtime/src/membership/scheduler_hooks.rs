//! What membership needs from the scheduler: fail a lost node's in-flight calls at once, mark
//! its workers lost, free its resources; and a snapshot for `fleet status`.
//!
//! [`Liveness`] is one `watch` channel per node. Every call to a worker on another node races
//! against its node's channel (see [`crate::remote`]), so a node marked down fails the calls
//! already in flight, not only the next ones.

use crate::node::resources::Ledger;
use crate::scheduler::{Scheduler, WorkerInfo, WorkerState};
use fleet_actors::{FleetError, NodeId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Per-node "lost" signals.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    inner: Arc<RwLock<HashMap<NodeId, watch::Sender<Option<FleetError>>>>>,
}

impl Liveness {
    /// Starts tracking `node` as alive.
    pub(crate) fn track(&self, node: &NodeId) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone(), watch::channel(None).0);
    }

    /// A receiver that turns `Some(err)` when `node` is lost; `None` if it is not tracked.
    pub(crate) fn watch(&self, node: &NodeId) -> Option<watch::Receiver<Option<FleetError>>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|s| s.subscribe())
    }

    /// Stops tracking `node` (a member the head forgot long after it was lost).
    pub(crate) fn forget(&self, node: &NodeId) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
    }

    /// Signals that `node` is lost; every waiting call fails with `err`.
    pub(crate) fn mark_lost(&self, node: &NodeId, err: FleetError) {
        if let Some(s) = self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
        {
            s.send_replace(Some(err));
        }
    }
}

/// One node as the scheduler accounts for it.
#[derive(Clone, Debug)]
pub struct NodeSnapshot {
    /// The node.
    pub node: NodeId,
    /// Its ledger (totals and use).
    pub ledger: Ledger,
}

impl Scheduler {
    /// Node `node` is lost: in-flight calls to it fail with [`FleetError::NodeLost`] now, its
    /// workers (and their aliases) are marked failed with that error, and it leaves placement
    /// (its resources are freed). Idempotent.
    pub async fn node_lost(&self, node: &NodeId, reason: &str) {
        let err = FleetError::NodeLost {
            node: node.to_string(),
            reason: reason.to_string(),
        };
        self.inner.liveness.mark_lost(node, err.clone());
        self.inner
            .misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
        let mut st = self.inner.state.lock().await;
        st.nodes.remove(node);
        let mut affected = Vec::new();
        for entry in st.roles.values_mut() {
            for w in entry.workers.iter_mut() {
                if &w.node == node && !matches!(w.state, WorkerState::Failed(_)) {
                    w.state = WorkerState::Failed(err.clone());
                    affected.push(w.id.clone());
                }
            }
        }
        drop(st);
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        for id in &affected {
            if let Some(r) = routes.get_mut(id) {
                r.failed = Some(err.clone());
            }
        }
        tracing::warn!(node = %node, %reason, workers = affected.len(), "node lost; its workers are marked lost");
    }

    /// Nodes with their ledgers, and every role with its workers, as recorded now.
    pub async fn snapshot(&self) -> (Vec<NodeSnapshot>, Vec<(String, Vec<WorkerInfo>)>) {
        let st = self.inner.state.lock().await;
        let nodes = st
            .nodes
            .iter()
            .map(|(n, e)| NodeSnapshot {
                node: n.clone(),
                ledger: e.ledger.clone(),
            })
            .collect();
        let roles = st
            .roles
            .iter()
            .map(|(r, e)| (r.clone(), e.workers.clone()))
            .collect();
        (nodes, roles)
    }

    /// The ids of the nodes placement may use now.
    pub async fn nodes(&self) -> Vec<NodeId> {
        self.inner
            .state
            .lock()
            .await
            .nodes
            .keys()
            .cloned()
            .collect()
    }
}
