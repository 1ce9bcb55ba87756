//! The messages a worker actor answers.

use crate::engine::Configure;
use crate::error::FleetError;
use crate::ids::{RequestId, WorkerId};
use crate::payload::Payload;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One engine call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The engine's name on the worker.
    pub engine: String,
    /// The method.
    pub method: String,
    /// Serialized arguments.
    pub args: Payload,
    /// Caller metadata passed to the engine unchanged.
    pub rpc_meta: BTreeMap<String, String>,
    /// Present for non-idempotent calls: repeats are answered from the record.
    pub request_id: Option<RequestId>,
}

/// The result of an engine call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallReply(pub Result<Payload, FleetError>);

crate::wire_type!(CallReply, |err| CallReply(Err(FleetError::Protocol {
    detail: err
})));

/// Control-plane requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// Create engine `name` of registered type `type_name` with constructor `args`.
    CreateEngine {
        /// The engine's name on this worker (unique).
        name: String,
        /// The registered type.
        type_name: String,
        /// Constructor arguments.
        args: Payload,
    },
    /// Per-role/rank configuration, passed to every engine's `configure` hook (and to engines
    /// created later).
    Configure(Configure),
    /// Merge variables into the worker's environment (seen by engines created or called
    /// afterwards, and by processes forked afterwards). The node process's environment is never
    /// changed.
    SetEnv(BTreeMap<String, String>),
    /// Liveness: answered by the actor at once, even during a long engine call.
    Health,
    /// Engines, call in flight, uptime.
    Status,
    /// Run every engine's destroy hook (bounded by `timeout_ms`), then stop.
    Destroy {
        /// Bound on the destroy hooks.
        timeout_ms: u64,
    },
}

/// A successful control answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlOk {
    /// Done.
    Done,
    /// The worker's status.
    Status(WorkerStatus),
}

/// The answer to a [`Control`] request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlReply(pub Result<ControlOk, FleetError>);

crate::wire_type!(ControlReply, |err| ControlReply(Err(
    FleetError::Protocol { detail: err }
)));

/// One engine on a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSummary {
    /// Its name.
    pub name: String,
    /// Its registered type.
    pub type_name: String,
}

/// What a worker reports about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker.
    pub worker: WorkerId,
    /// Its engines.
    pub engines: Vec<EngineSummary>,
    /// `engine.method` running now, and for how long (ms).
    pub in_flight: Option<(String, u64)>,
    /// Engine jobs waiting behind it.
    pub queued: u64,
    /// Engine calls completed so far.
    pub calls_done: u64,
    /// Milliseconds since the worker started.
    pub uptime_ms: u64,
}

/// Messages of a worker actor (local to its node; remote callers go through the node agent).
#[derive(ractor_cluster::RactorMessage)]
pub enum WorkerMsg {
    /// An engine call.
    Call(CallRequest, RpcReplyPort<CallReply>),
    /// A control request.
    Control(Control, RpcReplyPort<ControlReply>),
}

impl std::fmt::Debug for WorkerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerMsg::Call(req, _) => write!(f, "Call({}.{})", req.engine, req.method),
            WorkerMsg::Control(c, _) => write!(f, "Control({c:?})"),
        }
    }
}
