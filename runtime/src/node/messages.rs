//! The node agent's protocol. Every variant is remotable over ractor_cluster: payloads are
//! [`Wire`] (bincode, or the reason the bytes did not decode, which the agent answers with a
//! typed protocol error instead of dropping the message).

use super::ports::PortLease;
use super::resources::NodeResources;
use fleet_actors::rpc_server::{CallReply, CallRequest, Control, ControlReply};
use fleet_actors::wire::{Wire, WireReply};
use fleet_actors::{NodeId, SchedulingSpec, WorkerId, WorkerKind};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Start a worker on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Its id.
    pub worker: WorkerId,
    /// What it is.
    pub kind: WorkerKind,
    /// Its resources and env.
    pub spec: SchedulingSpec,
    /// The exact GPU ids the scheduler picked (`spec.gpu` of them).
    pub gpus: Vec<u32>,
    /// Extra env set by the scheduler (e.g. a fork's inherited `CUDA_VISIBLE_DEVICES`).
    pub env: BTreeMap<String, String>,
    /// This instance's incarnation id, unique per spawn: events about it carry it, so a late
    /// event about an earlier instance of the same worker id never touches this one.
    pub incarnation: u64,
}

/// A started worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnedWorker {
    /// Its id.
    pub worker: WorkerId,
    /// Where it runs.
    pub node: NodeId,
    /// Its GPUs.
    pub gpus: Vec<u32>,
    /// Its reserved ports.
    pub ports: Vec<u16>,
    /// Its full environment.
    pub env: BTreeMap<String, String>,
    /// Its log file, for workers that are processes.
    pub log_path: Option<String>,
    /// Its incarnation id (the one in its [`SpawnRequest`]).
    pub incarnation: u64,
}

/// An engine call for a worker on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerCall {
    /// The worker.
    pub worker: WorkerId,
    /// The call.
    pub req: CallRequest,
}

/// A control request for a worker on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerControl {
    /// The worker.
    pub worker: WorkerId,
    /// The request.
    pub control: Control,
}

/// A plain HTTP request for an HTTP-service worker on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHttp {
    /// The worker.
    pub worker: WorkerId,
    /// The request.
    pub call: fleet_actors::HttpCall,
}

/// Stop a worker: destroy hooks (bounded), stop, release its resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The worker.
    pub worker: WorkerId,
    /// Bound on its destroy hooks.
    pub destroy_timeout_ms: u64,
}

/// One local worker, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalWorkerInfo {
    /// Its id.
    pub worker: WorkerId,
    /// Its kind's short name.
    pub kind: String,
    /// Its GPUs.
    pub gpus: Vec<u32>,
    /// Its ports.
    pub ports: Vec<u16>,
    /// The pid of its child process, if it has one running.
    #[serde(default)]
    pub child_pid: Option<u32>,
    /// Set while it is stopping but still holds its resources (an in-process engine still
    /// running after its destroy deadline), with the reason.
    #[serde(default)]
    pub stopping: Option<String>,
}

/// What a node reports about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub node: NodeId,
    /// Its totals.
    pub resources: NodeResources,
    /// Free CPU (thousandths).
    pub free_cpu_millis: u64,
    /// Free memory (MiB).
    pub free_mem_mib: u64,
    /// Free GPU ids.
    pub free_gpus: Vec<u32>,
    /// Ports reserved now for workers and callers (the object store's own port is not
    /// counted).
    pub ports_held: u64,
    /// Its workers.
    pub workers: Vec<LocalWorkerInfo>,
    /// Its object store's URL and counters, if it runs one.
    #[serde(default)]
    pub store: Option<crate::store::StoreStats>,
}

/// A worker's state in its node's roster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RosterState {
    /// Running (or starting) on the node.
    Running,
    /// Being stopped, or stopped with its engine thread still running.
    Stopping,
}

/// One worker the node runs, as it reports it with every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The worker.
    pub worker: WorkerId,
    /// The instance.
    pub incarnation: u64,
    /// Its state.
    pub state: RosterState,
}

/// How a worker ended, unasked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerEventKind {
    /// Its actor failed (a panic in a handler) or stopped without being asked.
    Failed {
        /// Why.
        reason: String,
        /// Last output lines, when it had a process.
        tail: Vec<String>,
    },
    /// A worker whose stop was deferred (its engine thread outlived the destroy deadline) is
    /// gone at last: the GPUs, ports and memory it held are free.
    Released,
}

/// A worker state change pushed by its node (dead workers are reported, not discovered on the
/// next call).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// The worker.
    pub worker: WorkerId,
    /// Its node.
    pub node: NodeId,
    /// The incarnation the event is about; the scheduler applies it only to that one.
    pub incarnation: u64,
    /// What happened.
    pub kind: WorkerEventKind,
}

/// Messages of the node agent.
// A spawn request is large next to the other variants, but each message is moved once through
// a mailbox; boxing it would need a wire wrapper of its own for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum AgentMsg {
    /// Start a worker.
    #[rpc]
    Spawn(Wire<SpawnRequest>, RpcReplyPort<WireReply<SpawnedWorker>>),
    /// Forward an engine call to a local worker (answered by the worker, not the agent).
    #[rpc]
    Call(Wire<WorkerCall>, RpcReplyPort<CallReply>),
    /// Forward a control request to a local worker.
    #[rpc]
    Control(Wire<WorkerControl>, RpcReplyPort<ControlReply>),
    /// Stop a local worker and release what it holds.
    #[rpc]
    Stop(Wire<StopRequest>, RpcReplyPort<ControlReply>),
    /// Reserve ports on this node (held until released).
    #[rpc]
    ReservePorts(Wire<u16>, RpcReplyPort<WireReply<PortLease>>),
    /// Release a port lease.
    ReleasePorts(Wire<u64>),
    /// Report resources and workers.
    #[rpc]
    Info(RpcReplyPort<WireReply<NodeInfo>>),
    /// Forward a plain HTTP request to a local HTTP-service worker.
    #[rpc]
    Http(Wire<WorkerHttp>, RpcReplyPort<fleet_actors::HttpReply>),
    /// Every worker this node runs, with its incarnation (sent with each heartbeat, so the
    /// scheduler can reconcile its view with the node's).
    #[rpc]
    Roster(RpcReplyPort<Wire<Vec<RosterEntry>>>),
    /// Internal: a stopped worker's resources may be reused.
    Reclaim(Wire<WorkerId>),
    /// Internal: a stopping worker's engine thread outlived the destroy deadline; it keeps its
    /// resources, under the drain key, until [`AgentMsg::Drained`] (key, reason).
    Draining(Wire<(WorkerId, u64, String)>),
    /// Internal: the engine thread of the draining worker with this key has ended.
    Drained(Wire<u64>),
    /// Internal: the spawn with this key has started its worker's actor, or failed to (the
    /// outcome waits in the agent's state; see `agent.rs`).
    Started(Wire<u64>),
    /// Internal: a local worker failed for good (its actor lives on, answering with the error,
    /// until it is deleted); pushed on to the scheduler.
    Failed(Wire<WorkerEvent>),
}
