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
    /// The caller's retry policy for this call, where fleet re-sends (a worker that is an
    /// HTTP service); `None` is the default policy.
    pub retry: Option<Retry>,
}

/// A caller's retry policy for one call or HTTP request: how many attempts, how long to back
/// off between them, and how long one attempt may take.
///
/// It can only shape retries that are safe anyway: whether an attempt that may have reached
/// the service is sent again is still decided by the call (idempotent, or carrying a request
/// id the service deduplicates), never by this policy. A request that was not sent (connection
/// refused) is re-sent up to `max_attempts`. Every sleep and attempt stays inside the call's
/// deadline. In-process engine calls are never re-sent; the policy does not apply to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Attempts in all, the first included (1: never re-sent).
    pub max_attempts: u32,
    /// Backoff cap before the first retry, in ms; doubles per retry (full jitter).
    pub base_backoff_ms: u64,
    /// Largest backoff cap, in ms.
    pub max_backoff_ms: u64,
    /// Bound on one attempt in ms; 0 keeps the default (a third of the deadline for a call
    /// that is safe to repeat, the whole deadline otherwise).
    pub attempt_timeout_ms: u64,
}

impl Default for Retry {
    /// fleet's default: 5 attempts, backoff from 50 ms to 2 s, the default attempt bound.
    fn default() -> Self {
        Retry {
            max_attempts: 5,
            base_backoff_ms: 50,
            max_backoff_ms: 2_000,
            attempt_timeout_ms: 0,
        }
    }
}

impl Retry {
    /// One attempt: never re-sent.
    pub fn never() -> Self {
        Retry::default().attempts(1)
    }
    /// Sets the number of attempts (at least 1).
    pub fn attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Sets the backoff: `base` before the first retry, doubling up to `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff_ms = millis(base);
        self.max_backoff_ms = millis(max.max(base));
        self
    }
    /// Bounds one attempt.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout_ms = millis(d).max(1);
        self
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(60),
            idempotent: false,
            request_id: None,
            rpc_meta: BTreeMap::new(),
            retry: None,
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
    /// Sets the retry policy (see [`Retry`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
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
