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
    /// The call's remaining time budget in milliseconds *when this message was sent* (0: none
    /// given). It is a budget, not a timeout restarted at every hop: whoever holds the request
    /// before passing it on (a node agent, a launcher waiting for a permit, an HTTP hop)
    /// subtracts the time it held it ([`CallRequest::set_budget`]); the worker turns it into a
    /// local deadline on arrival and drops the call, unrun, if that deadline passes while the
    /// call waits in its engine queue. Time spent in transit is not counted (no shared clock
    /// is assumed); it is small next to the budgets of engine calls.
    pub deadline_ms: u64,
    /// Whether the caller declared the call idempotent.
    pub idempotent: bool,
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
    /// The caller's retry policy, for a worker that forwards over HTTP.
    pub retry: Option<crate::options::Retry>,
}

/// The result of an engine call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallReply(pub Result<Payload, FleetError>);

/// A [`CallRequest`] without its argument bytes, borrowed: encodes to exactly the bytes the
/// request's other fields take (bincode has no per-struct overhead).
#[derive(Serialize)]
struct RequestShell<'a> {
    deadline_ms: u64,
    idempotent: bool,
    engine: &'a str,
    method: &'a str,
    rpc_meta: &'a BTreeMap<String, String>,
    request_id: &'a Option<RequestId>,
    retry: &'a Option<crate::options::Retry>,
}

impl CallRequest {
    /// The length of this request encoded with [`crate::wire::encode`], without walking the
    /// argument bytes (the size guard runs on every call).
    pub fn encoded_len(&self) -> usize {
        let shell = RequestShell {
            deadline_ms: self.deadline_ms,
            idempotent: self.idempotent,
            engine: &self.engine,
            method: &self.method,
            rpc_meta: &self.rpc_meta,
            request_id: &self.request_id,
            retry: &self.retry,
        };
        crate::wire::encoded_len(&shell).saturating_add(crate::wire::payload_len(&self.args))
    }
}

impl CallReply {
    /// The length of this reply encoded with [`crate::wire::encode`], without walking the
    /// result bytes.
    pub fn encoded_len(&self) -> usize {
        // One byte of variant index, then the value.
        1 + match &self.0 {
            Ok(p) => crate::wire::payload_len(p),
            Err(e) => crate::wire::encoded_len(e),
        }
    }

    /// This reply made to fit under `limit` before it is sent (the size guard of replies): an
    /// error has its text bounded; a result over the limit becomes `PayloadTooLarge` naming
    /// `what`.
    pub fn fit(self, limit: usize, what: impl FnOnce() -> String) -> CallReply {
        match self.0 {
            Err(e) => CallReply(Err(e.bounded())),
            Ok(p) => {
                let size = 1 + crate::wire::payload_len(&p);
                CallReply(crate::wire::check_len(size, limit, what).map(|()| p))
            }
        }
    }
}

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
    /// The caller of the call with this request id gave up (its deadline passed or its future
    /// was dropped): if the call is still queued and nobody else joined it by the same id, it
    /// is dropped unrun; an HTTP-service worker aborts its forward (which closes the
    /// connection to its child). A call already running is not interrupted. Always answered
    /// `Done`: there may be nothing left to cancel.
    Cancel {
        /// The cancelled call's request id.
        request_id: RequestId,
    },
    /// Stands for a control message whose bytes did not decode; answered with a protocol
    /// error.
    Undecodable(String),
}

/// A successful control answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlOk {
    /// Done.
    Done,
    /// Accepted, but it takes effect later; the text says when.
    Deferred(String),
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
    /// The worker's own process, for workers that are processes (HTTP services, isolated
    /// RpcServers); `None` for in-process workers.
    pub pid: Option<u32>,
}

/// The engine name a [`CallRequest`] carries when its bytes did not decode; the worker answers
/// it with [`FleetError::Protocol`].
pub const UNDECODABLE: &str = "<undecodable>";

impl CallRequest {
    /// The remaining budget, if the caller gave one.
    pub fn budget(&self) -> Option<std::time::Duration> {
        (self.deadline_ms > 0).then(|| std::time::Duration::from_millis(self.deadline_ms))
    }

    /// Sets the remaining budget before passing the request on (at least 1 ms, so that a
    /// budget never turns into "none").
    pub fn set_budget(&mut self, remaining: std::time::Duration) {
        self.deadline_ms = u64::try_from(remaining.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
    }

    /// The request that stands for bytes that did not decode (`detail` says why).
    pub fn undecodable(detail: String) -> Self {
        CallRequest {
            deadline_ms: 0,
            idempotent: false,
            engine: UNDECODABLE.to_string(),
            method: detail,
            args: Payload::json_bytes(Vec::new()),
            rpc_meta: BTreeMap::new(),
            request_id: None,
            retry: None,
        }
    }

    /// The decode failure this request stands for, if it is one.
    pub fn decode_failure(&self) -> Option<FleetError> {
        (self.engine == UNDECODABLE).then(|| FleetError::Protocol {
            detail: format!("an engine call that did not decode: {}", self.method),
        })
    }
}

crate::wire_type!(CallRequest, |err| CallRequest::undecodable(err));
crate::wire_type!(Control, |err| Control::Undecodable(err));
crate::wire_type!(Lifecycle, |_err| Lifecycle::RestartDue {
    generation: u64::MAX
});

/// Messages of a worker actor.
///
/// Remotable: a caller on another node may hold a worker's actor reference directly (found
/// through the process group `worker/<node>/<worker>`) and skip the node agent's hop. Every
/// payload decodes to a value the worker answers with a typed protocol error when its bytes are
/// bad, so nothing is dropped silently.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum WorkerMsg {
    /// An engine call.
    #[rpc]
    Call(CallRequest, RpcReplyPort<CallReply>),
    /// A control request.
    #[rpc]
    Control(Control, RpcReplyPort<ControlReply>),
    /// A plain HTTP request (HTTP-service workers only).
    #[rpc]
    Http(
        crate::http_call::HttpCall,
        RpcReplyPort<crate::http_call::HttpReply>,
    ),
    /// The lifecycle of a worker's own process, reported by its supervision task to the worker
    /// actor (HTTP-service workers only; others ignore it).
    Lifecycle(Lifecycle),
}

/// What happened to a worker's process. `generation` counts (re)starts, so that news about a
/// process that was already replaced is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Lifecycle {
    /// The readiness probe passed.
    Ready {
        /// Which start.
        generation: u64,
    },
    /// The readiness deadline passed with the process still running.
    NotReady {
        /// Which start.
        generation: u64,
        /// Why (names the probe and what it last saw).
        reason: String,
    },
    /// The process exited.
    Exited {
        /// Which start.
        generation: u64,
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// Signal, if it was killed by one.
        signal: Option<i32>,
        /// Its last output lines.
        tail: Vec<String>,
    },
    /// A liveness probe of a ready process: `failures` in a row so far (0: it answered).
    Probe {
        /// Which start.
        generation: u64,
        /// Consecutive failed probes.
        failures: u32,
        /// What the last probe saw.
        detail: String,
    },
    /// Time to start it again.
    RestartDue {
        /// The generation that exited.
        generation: u64,
    },
}

impl std::fmt::Debug for WorkerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerMsg::Call(req, _) => write!(f, "Call({}.{})", req.engine, req.method),
            WorkerMsg::Control(c, _) => write!(f, "Control({c:?})"),
            WorkerMsg::Http(c, _) => write!(f, "Http({} {})", c.method, c.path),
            WorkerMsg::Lifecycle(l) => write!(f, "Lifecycle({l:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_encoded_lengths_equal_the_real_encoding() {
        for n in [0usize, 1, 250, 251, 65_535, 65_536, 300_000] {
            let args = Payload::json_bytes(vec![7; n]);
            let mut req = CallRequest {
                deadline_ms: 12_345,
                idempotent: true,
                engine: "engine".into(),
                method: "method".into(),
                args: args.clone(),
                rpc_meta: BTreeMap::from([("k".to_string(), "v".repeat(n % 1000))]),
                request_id: Some(RequestId("r-1".into())),
                retry: Some(crate::options::Retry::never()),
            };
            assert_eq!(req.encoded_len(), crate::wire::encode(&req).len(), "{n}");
            req.request_id = None;
            req.retry = None;
            assert_eq!(req.encoded_len(), crate::wire::encode(&req).len(), "{n}");
            let ok = CallReply(Ok(args));
            assert_eq!(ok.encoded_len(), crate::wire::encode(&ok).len(), "{n}");
            let err = CallReply(Err(FleetError::internal("x".repeat(n % 5000))));
            assert_eq!(err.encoded_len(), crate::wire::encode(&err).len(), "{n}");
        }
    }
}
