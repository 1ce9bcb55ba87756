//! The head's protocol: what a node says when it joins, beats and reports, and what
//! `fleet status` asks. Every variant is remotable; payloads are [`Wire`] so a message that does
//! not decode is answered with a typed protocol error instead of vanishing.

use crate::node::messages::WorkerEvent;
use crate::node::resources::NodeResources;
use fleet_actors::wire::{Wire, WireReply};
use fleet_actors::NodeId;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

/// The process-group scope every fleet process shares before it knows a cluster id: heads are
/// found here (group [`head_group`]) and so are joining node agents (group [`agent_group`]).
pub const FLEET_SCOPE: &str = "fleet";

/// The group of the head behind the node server called `server` (its ractor_cluster name,
/// without `@host`). Process groups are process-wide and a session advertises every group of
/// its process, so a process with two heads (tests) shows both over each session: the group
/// name says which head listens on the server a node dialed.
pub fn head_group(server: &str) -> String {
    let name = server.split_once('@').map(|(n, _)| n).unwrap_or(server);
    format!("head/{name}")
}

/// The group a node puts its agent in before it asks to join, so that the head can find the
/// agent of the node that is joining (node ids are unique per process start).
pub fn agent_group(node: &NodeId) -> String {
    format!("agent/{node}")
}

/// The process group an in-process RpcServer worker joins, so that callers on other nodes can
/// reach it without the agent's hop.
pub fn worker_group(node: &NodeId, worker: &fleet_actors::WorkerId) -> String {
    format!("worker/{node}/{worker}")
}

/// A node asking to join.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its id (fresh for every admission: a node that comes back is a new member).
    pub node: NodeId,
    /// What it offers (CPUs, memory, GPU ids, port range, labels).
    pub resources: NodeResources,
    /// The fleet version it runs; the head refuses another one.
    pub version: String,
    /// The pid of the node process (for `fleet status`).
    pub pid: u32,
    /// Its object store's URL (`http://HOST:PORT`), if it runs one.
    pub store: Option<String>,
}

/// The head's answer to a join: the cluster's id and the failure-detection settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    /// The cluster id that scopes process groups.
    pub cluster_id: String,
    /// How often the node must beat.
    pub heartbeat_ms: u64,
    /// After how long without a beat the head marks the node down.
    pub timeout_ms: u64,
    /// After how long without an answer from the head the node stops its workers.
    pub lease_ms: u64,
}

/// One heartbeat from a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The node.
    pub node: NodeId,
    /// Counts up from 0 per admission.
    pub seq: u64,
    /// Every worker the node runs (`None`: its agent did not answer in time); the scheduler
    /// reconciles its view of the node with it.
    #[serde(default)]
    pub roster: Option<Vec<crate::node::messages::RosterEntry>>,
}

/// The head's answer to a beat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BeatAck {
    /// The node is a live member.
    Alive,
    /// The head does not count the node as a member (marked down, or never admitted): the
    /// node must stop its workers and join again as a new member.
    NotMember {
        /// Why.
        reason: String,
    },
}

/// A member's state as the head sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Beating on time.
    Alive,
    /// Missed beats for more than half the timeout.
    Suspect,
    /// Lost: missed beats for the whole timeout, or its connection closed.
    Down {
        /// How it was detected.
        reason: String,
    },
    /// Left on its own (clean shutdown).
    Left,
}

impl MemberState {
    /// A short name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down { .. } => "down",
            MemberState::Left => "left",
        }
    }
}

/// One worker in a status report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// `role/index`.
    pub worker: String,
    /// For a colocated role: the worker it stands for.
    pub alias_of: Option<String>,
    /// Its node.
    pub node: String,
    /// Its kind.
    pub kind: String,
    /// `starting`, `running` or `failed: ...`.
    pub state: String,
    /// Its GPUs.
    pub gpus: Vec<u32>,
    /// Its ports.
    pub ports: Vec<u16>,
    /// The pid of its child process, if it has one and its node answered.
    pub child_pid: Option<u32>,
}

/// One node in a status report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    /// Its id.
    pub node: String,
    /// Its state.
    pub state: MemberState,
    /// Whether it is the head's own node.
    pub is_head: bool,
    /// The node process's pid.
    pub pid: u32,
    /// Its totals.
    pub resources: NodeResources,
    /// Free CPU (thousandths), as the head accounts it.
    pub free_cpu_millis: u64,
    /// Free memory (MiB).
    pub free_mem_mib: u64,
    /// Free GPU ids.
    pub free_gpus: Vec<u32>,
    /// Workers placed on it.
    pub workers: u64,
    /// Milliseconds since its last beat (0 for the head's own node).
    pub last_beat_ms: u64,
    /// Its object store's URL, if it runs one.
    #[serde(default)]
    pub store: Option<String>,
}

/// What `fleet status` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The cluster id.
    pub cluster_id: String,
    /// Members, current ones first.
    pub nodes: Vec<NodeRow>,
    /// Roles, sorted, with their workers.
    pub roles: Vec<(String, Vec<WorkerRow>)>,
}

/// Messages of the head actor.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum HeadMsg {
    /// A node asks to join.
    #[rpc]
    Join(Wire<JoinRequest>, RpcReplyPort<WireReply<Admitted>>),
    /// A node's heartbeat.
    #[rpc]
    Beat(Wire<Beat>, RpcReplyPort<Wire<BeatAck>>),
    /// A node leaves cleanly.
    Leave(Wire<NodeId>),
    /// A worker on a node died unasked.
    WorkerEvent(Wire<WorkerEvent>),
    /// Nodes, roles and workers.
    #[rpc]
    Status(RpcReplyPort<WireReply<StatusReport>>),
    /// Internal: check every member's last beat.
    Sweep(Wire<()>),
    /// Internal: the ractor_cluster session with this id closed.
    SessionClosed(Wire<u64>),
}

impl std::fmt::Debug for HeadMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadMsg::Join(..) => "Join",
            HeadMsg::Beat(..) => "Beat",
            HeadMsg::Leave(..) => "Leave",
            HeadMsg::WorkerEvent(..) => "WorkerEvent",
            HeadMsg::Status(..) => "Status",
            HeadMsg::Sweep(..) => "Sweep",
            HeadMsg::SessionClosed(..) => "SessionClosed",
        })
    }
}
