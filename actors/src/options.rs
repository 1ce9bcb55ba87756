//! Per-call options: deadline, idempotency, request id and the caller's `rpc_meta`.

use crate::ids::RequestId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Options of one engine call.
///
/// Every call has a deadline (`timeout`). A call that must run at most once even when it is
/// repeated carries the caller's own [`RequestId`] (`request_id`): the worker records its
/// result under (engine, method, id) and answers a repeat from the record instead of running
/// the method twice. Without an id nothing is recorded: a call that is neither idempotent nor
/// carries an id is never re-sent by fleet after it may have reached the worker, and an
/// outcome that is unknown is reported as such (`Timeout`, `Indeterminate`), not retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallOptions {
    /// Overall deadline of the call, measured by the caller.
    pub timeout: Duration,
    /// Whether running the call twice is harmless (then timeouts may be retried).
    pub idempotent: bool,
    /// Identifies the logical call across retries (the caller's; fleet generates none for the
    /// worker to record, since nobody could repeat a generated id).
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
    /// The given request id, or a fresh one for a non-idempotent call: for a caller that
    /// re-sends the same call itself and wants the worker to deduplicate its re-sends. The
    /// scheduler sends only the caller's own id (`request_id`).
    pub fn effective_request_id(&self) -> Option<RequestId> {
        match (&self.request_id, self.idempotent) {
            (Some(id), _) => Some(id.clone()),
            (None, false) => Some(RequestId::generate()),
            (None, true) => None,
        }
    }
}
