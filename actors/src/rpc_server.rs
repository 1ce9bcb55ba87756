//! The RpcServer worker: an actor that hosts named engines in the node process.
//!
//! Why an actor plus a thread: engine calls are long, blocking and must run one at a time (a GPU
//! engine's collectives require it), while `health`/`status`/`destroy` must be answered within
//! milliseconds. The actor owns the mailbox and answers control messages itself; engine work is
//! handed to an executor thread owned by the worker ([`executor`]), which replies straight to the
//! caller's reply port. The actor never awaits an engine call.
//!
//! A call may carry a request id (the caller's own). The [`dedupe`] record keeps, per worker, the
//! results of the last [`DEFAULT_DEDUPE_CAPACITY`] completed ids and at most
//! [`DEFAULT_DEDUPE_BYTES`] of replies, keyed by (engine, method, id): a repeat of a completed
//! id gets the recorded result, a repeat of an id still running waits for the same result, and
//! in neither case does the method run again; the same id for another engine or method is a
//! `BadRequest`.

mod actor;
pub mod dedupe;
mod executor;
mod messages;

pub use actor::{EngineExit, RpcServer, RpcServerArgs};
pub use messages::{
    CallReply, CallRequest, Control, ControlOk, ControlReply, EngineSummary, Lifecycle, WorkerMsg,
    WorkerStatus,
};

/// How many completed request ids each worker remembers.
pub const DEFAULT_DEDUPE_CAPACITY: usize = 4096;

/// How many bytes of recorded replies (encoded size) each worker keeps at most: 64 MiB.
pub const DEFAULT_DEDUPE_BYTES: usize = 64 << 20;

/// The content type of fleet's binary RPC over HTTP: `POST /call` carries a bincode
/// [`CallRequest`] and answers a bincode [`CallReply`]; `POST /control` carries a bincode
/// [`Control`] and answers a bincode [`ControlReply`] (encoded with [`crate::wire::encode`]).
/// Spoken by `fleet rpc-server` and by the HTTP launcher in front of it.
pub const FLEET_RPC_CONTENT_TYPE: &str = "application/x-fleet-bincode";
