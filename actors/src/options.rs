//! Per-call options: deadline, idempotency, request id and the caller's `rpc_meta`.

use crate::ids::RequestId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Options of one engine call.
///
/// Every call has a deadline (`timeout`). A call that is not `idempotent` always carries a
/// [`RequestId`] (one is generated when none is given), so that a repeat is answered from the
/// server's record instead of running the method twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallOptions {
    /// Overall deadline of the call, measured by the caller.
    pub timeout: Duration,
    /// Whether running the call twice is harmless (then timeouts may be retried).
    pub idempotent: bool,
    /// Identifies the logical call across retries.
    pub request_id: Option<RequestId>,
    /// Opaque metadata forwarded unchanged to the engine (tracing ids, step numbers, ...).
    pub rpc_meta: BTreeMap<String, String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(60),
            idempotent: false,
            request_id: None,
            rpc_meta: BTreeMap::new(),
        }
    }
}

impl CallOptions {
    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Marks the call idempotent.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
    /// Sets the request id.
    pub fn request_id(mut self, id: impl Into<RequestId>) -> Self {
        self.request_id = Some(id.into());
        self
    }
    /// Adds one `rpc_meta` entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.rpc_meta.insert(key.into(), value.into());
        self
    }
    /// The request id to send: the given one, or a fresh one for a non-idempotent call.
    pub fn effective_request_id(&self) -> Option<RequestId> {
        match (&self.request_id, self.idempotent) {
            (Some(id), _) => Some(id.clone()),
            (None, false) => Some(RequestId::generate()),
            (None, true) => None,
        }
    }
}
