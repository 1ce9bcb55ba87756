//! The scheduler's bookkeeping: nodes (with a mirror ledger each), roles and their workers.

use crate::node::messages::AgentMsg;
use crate::node::resources::Ledger;
use fleet_actors::{FleetError, Job, NodeId, WorkerId};
use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A worker's lifecycle state as the scheduler knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerState {
    /// Being started.
    Starting,
    /// Running and reachable.
    Running,
    /// Died; the error says how.
    Failed(FleetError),
}

/// What the scheduler reports about a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// For a colocated (non-fork) role: the target worker this id stands for.
    pub alias_of: Option<WorkerId>,
    /// Its node.
    pub node: NodeId,
    /// Its kind's short name.
    pub kind: String,
    /// Its GPUs.
    pub gpus: Vec<u32>,
    /// Its reserved ports.
    pub ports: Vec<u16>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// Its log file, for workers that are processes.
    pub log_path: Option<String>,
    /// Its incarnation id: unique per spawn, so events about an earlier instance of the same
    /// id are told apart from this one.
    #[serde(default)]
    pub incarnation: u64,
    /// Its state.
    pub state: WorkerState,
}

/// How a role relates to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RoleLink {
    /// Its own workers.
    Own,
    /// The same workers as the named role.
    Alias(String),
    /// Its workers were forked next to the named role's.
    Fork(String),
}

pub(crate) struct RoleEntry {
    pub(crate) job: Job,
    pub(crate) order: u64,
    pub(crate) link: RoleLink,
    pub(crate) workers: Vec<WorkerInfo>,
}

pub(crate) struct NodeEntry {
    pub(crate) agent: ActorRef<AgentMsg>,
    pub(crate) ledger: Ledger,
    pub(crate) alive: bool,
}

impl crate::scheduler::placement::Candidate for NodeEntry {
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    fn eligible(&self) -> bool {
        self.alive
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) nodes: BTreeMap<NodeId, NodeEntry>,
    pub(crate) roles: BTreeMap<String, RoleEntry>,
    pub(crate) next_order: u64,
    /// Deleted workers whose node deferred their stop (an engine thread still running): the
    /// mirror ledger keys their resources are held under, oldest first, until the node reports
    /// them released.
    pub(crate) draining: BTreeMap<(NodeId, u64), WorkerId>,
    /// Releases (node, incarnation) reported before the deferred stop's answer was booked.
    pub(crate) released_early: std::collections::BTreeSet<(NodeId, u64)>,
    pub(crate) next_drain: u64,
}

impl State {
    pub(crate) fn known_roles(&self) -> String {
        if self.roles.is_empty() {
            "none".into()
        } else {
            self.roles.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    pub(crate) fn role(&self, role: &str) -> Result<&RoleEntry, FleetError> {
        self.roles
            .get(role)
            .ok_or_else(|| FleetError::RoleNotFound {
                role: role.to_string(),
                known: self.known_roles(),
            })
    }

    /// Roles that depend on `role` (aliases and forks of it), transitively, dependents first.
    pub(crate) fn dependents(&self, role: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (name, entry) in &self.roles {
            let depends = match &entry.link {
                RoleLink::Alias(t) | RoleLink::Fork(t) => t == role,
                RoleLink::Own => false,
            };
            if depends {
                for d in self.dependents(name) {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
        out
    }
}
