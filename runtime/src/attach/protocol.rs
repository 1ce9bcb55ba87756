//! What a connected program ([`super::RemoteLink`]) asks a head's scheduler service, and what
//! it answers. One remotable message carries every request: an [`Op`] with the caller's name and
//! deadline, answered with an [`Answer`] or a typed error. Payloads are [`Wire`], so a request
//! that does not decode is answered with a protocol error instead of being dropped.

use crate::scheduler::WorkerInfo;
use fleet_actors::rpc_server::{Control, ControlOk};
use fleet_actors::wire::{Wire, WireReply};
use fleet_actors::{CallOptions, HttpCall, HttpResponseData, Job, Payload, WorkerId};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The process group (in [`crate::membership::protocol::FLEET_SCOPE`]) of the scheduler
/// service behind the node server called `server`.
pub fn scheduler_group(server: &str) -> String {
    let name = server.split_once('@').map(|(n, _)| n).unwrap_or(server);
    format!("scheduler/{name}")
}

/// One request of a connected program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The caller's ractor_cluster name: the roles it creates are recorded under it, and
    /// deleted when its session closes.
    pub client: String,
    /// The caller's deadline for this request, in milliseconds; the service bounds its work
    /// (and its wait) by it.
    pub timeout_ms: u64,
    /// What to do.
    pub op: Op,
}

/// The scheduler methods a connected program forwards (see [`crate::Scheduler`] for each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `create_workers(job)`.
    CreateWorkers(Job),
    /// `delete_workers(role, reverse)`; no role means every role this client created.
    DeleteWorkers {
        /// The role, or none for the client's own roles.
        role: Option<String>,
        /// Stop from the highest index down, one at a time.
        reverse: bool,
    },
    /// `workers(role)`.
    Workers(String),
    /// `job(role)`.
    Job(String),
    /// `roles()`.
    Roles,
    /// `get_workers(role, timeout)` (the timeout is the request's).
    GetWorkers(String),
    /// `call_raw(worker, engine, method, args, opts)`.
    Call {
        /// The worker.
        worker: WorkerId,
        /// The engine.
        engine: String,
        /// The method.
        method: String,
        /// Serialized arguments.
        args: Payload,
        /// Deadline, idempotency, request id, retries.
        opts: CallOptions,
    },
    /// `control(worker, control, timeout)` (the timeout is the request's).
    Control {
        /// The worker.
        worker: WorkerId,
        /// The control request.
        control: Control,
    },
    /// `http(worker, call)`.
    Http {
        /// The worker.
        worker: WorkerId,
        /// The request.
        call: HttpCall,
    },
    /// `set_worker_env(role, env)`.
    SetWorkerEnv {
        /// The role.
        role: String,
        /// The variables to merge in.
        env: BTreeMap<String, String>,
    },
}

impl Op {
    /// A short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateWorkers(_) => "create_workers",
            Op::DeleteWorkers { .. } => "delete_workers",
            Op::Workers(_) => "workers",
            Op::Job(_) => "job",
            Op::Roles => "roles",
            Op::GetWorkers(_) => "get_workers",
            Op::Call { .. } => "call",
            Op::Control { .. } => "control",
            Op::Http { .. } => "http",
            Op::SetWorkerEnv { .. } => "set_worker_env",
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// Workers (create_workers, workers, get_workers).
    Workers(Vec<WorkerInfo>),
    /// A role's job.
    Job(Box<Job>),
    /// Role names.
    Roles(Vec<String>),
    /// An engine call's result.
    Payload(Payload),
    /// A control request's answer.
    Control(ControlOk),
    /// An HTTP answer.
    Http(HttpResponseData),
    /// Done (delete_workers, set_worker_env).
    Done,
}

/// Messages of the scheduler service.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum SchedulerMsg {
    /// Run one request on the head's scheduler; answered from a task of its own.
    #[rpc]
    Request(Wire<Request>, RpcReplyPort<WireReply<Answer>>),
}

impl std::fmt::Debug for SchedulerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchedulerMsg::Request(..) => "Request",
        })
    }
}
