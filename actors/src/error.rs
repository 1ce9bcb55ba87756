//! The one error type of fleet's worker protocol.
//!
//! It crosses process boundaries (bincode over ractor_cluster, JSON over HTTP), so it holds
//! strings and numbers, not sources. Every variant's message says what failed, where (worker,
//! node, engine) and what to do about it; [`FleetError::retryable`] says whether trying the same
//! call again can succeed; [`FleetError::kind`] and [`FleetError::http_status`] give the HTTP
//! face its `{"error": {"kind", "message"}}` shape.

use serde::{Deserialize, Serialize};
use std::fmt::Display;

/// Everything that can go wrong between a caller and a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum FleetError {
    /// No worker by that id.
    #[error("worker {worker} not found: {detail}; list the role's workers with get_workers or `fleet status`")]
    WorkerNotFound {
        /// `role/index`.
        worker: String,
        /// What is known instead (e.g. the role's size).
        detail: String,
    },
    /// No role by that name.
    #[error("role {role:?} not found (known roles: {known}); create it with create_workers first")]
    RoleNotFound {
        /// The role asked for.
        role: String,
        /// Comma-separated known roles.
        known: String,
    },
    /// A role by that name already exists.
    #[error("role {role:?} already exists; delete it with delete_workers or pick another name")]
    RoleExists {
        /// The role.
        role: String,
    },
    /// The worker's process or actor failed.
    #[error("worker {worker} on node {node} failed: {reason}{}", tail_suffix(.tail))]
    WorkerFailed {
        /// `role/index`.
        worker: String,
        /// The node it ran on.
        node: String,
        /// Exit status or panic message.
        reason: String,
        /// The last lines of its output, oldest first.
        tail: Vec<String>,
    },
    /// The node hosting the worker is gone (crashed, partitioned or stopped).
    #[error(
        "node {node} was lost ({reason}); its workers are gone: recreate them with create_workers"
    )]
    NodeLost {
        /// The node.
        node: String,
        /// How it was detected.
        reason: String,
    },
    /// A deadline passed.
    #[error("timed out after {after_ms} ms: {what}; raise CallOptions::timeout if the work is legitimately slow")]
    Timeout {
        /// What was being waited for (names the worker and method).
        what: String,
        /// The deadline in milliseconds.
        after_ms: u64,
    },
    /// The worker has no engine by that name.
    #[error(
        "worker {worker} has no engine {engine:?} (engines: {known}); create it with create_engine"
    )]
    EngineNotFound {
        /// `role/index`.
        worker: String,
        /// The engine name asked for.
        engine: String,
        /// Comma-separated engine names the worker has.
        known: String,
    },
    /// An engine by that name already exists on the worker.
    #[error("worker {worker} already has an engine named {engine:?}; engine names are unique per worker")]
    EngineExists {
        /// `role/index`.
        worker: String,
        /// The engine name.
        engine: String,
    },
    /// The engine type is not registered in the node's engine registry.
    #[error("engine type {type_name:?} is not registered on node {node} (registered: {known}); register it in the EngineRegistry the node starts with")]
    EngineTypeUnknown {
        /// The type asked for.
        type_name: String,
        /// The node.
        node: String,
        /// Comma-separated registered types.
        known: String,
    },
    /// The engine has no method by that name.
    #[error("engine {engine:?} on worker {worker} has no method {method:?}")]
    MethodNotFound {
        /// `role/index`.
        worker: String,
        /// The engine.
        engine: String,
        /// The method asked for.
        method: String,
    },
    /// The engine method ran and returned an error (or panicked).
    #[error("engine {engine:?} on worker {worker} failed in {method:?}: {message}")]
    EngineFailed {
        /// `role/index`.
        worker: String,
        /// The engine.
        engine: String,
        /// The method.
        method: String,
        /// The engine's message.
        message: String,
    },
    /// Placement found no room.
    #[error("cannot place {what}: not enough {resource} ({detail}); free some, ask for less, or add nodes")]
    InsufficientResources {
        /// What was being placed (`role/index`).
        what: String,
        /// The resource that is short: `gpu`, `cpu`, `mem`, `ports`.
        resource: String,
        /// Needed versus free, per node.
        detail: String,
    },
    /// The request itself is wrong: fix the caller.
    #[error("bad request: {what}: {detail}")]
    BadRequest {
        /// What was being done.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A message exceeds the size limit.
    #[error("{what} is {size} bytes, over the {limit}-byte limit; send bulk data over HTTP and pass a reference instead")]
    PayloadTooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The target is shutting down or not ready; trying again later may work.
    #[error("{what} is unavailable: {detail}")]
    Unavailable {
        /// What.
        what: String,
        /// Why.
        detail: String,
    },
    /// The outcome is unknown: the request may have run. The connection failed after it was
    /// sent, or an attempt timed out, or a gateway answered 502/504, and it was not sent again
    /// because running it twice is not known to be harmless.
    #[error("outcome unknown: {what} may have run ({detail}); check the service before repeating it, or make it safe to repeat (idempotent, or a request id the service deduplicates)")]
    Indeterminate {
        /// The call (worker, method and path or engine.method).
        what: String,
        /// What happened (the transport error, the timeout, the last status).
        detail: String,
        /// Whether repeating the call is harmless (it is idempotent or carries a request id the
        /// server deduplicates); only then is it [`retryable`](FleetError::retryable).
        resend_safe: bool,
    },
    /// A message could not be decoded: the two sides speak different protocol versions or the
    /// bytes are corrupt.
    #[error("protocol error: {detail}; check that every node runs the same fleet version")]
    Protocol {
        /// What could not be decoded.
        detail: String,
    },
    /// A bug in fleet: please report it with the log.
    #[error("internal error: {detail}")]
    Internal {
        /// What happened.
        detail: String,
    },
}

/// The most bytes any one text field of a [`FleetError`] keeps once [bounded](FleetError::bounded):
/// 64 KiB. Longer text (an engine's `format!("{tensor:?}")`, a huge method name) is cut, and
/// the cut says how long the original was.
pub const MAX_ERROR_TEXT_BYTES: usize = 64 * 1024;

/// The most bytes of output lines a bounded [`FleetError::WorkerFailed`] keeps in its `tail`
/// (the newest lines win): 64 KiB.
pub const MAX_ERROR_TAIL_BYTES: usize = 64 * 1024;

/// Cuts `s` to at most `max` bytes (on a character boundary), saying how long it was.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let total = s.len();
    let mut end = max.saturating_sub(48);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&format!("... (cut; {total} bytes in all)"));
}

/// Keeps the newest lines of `tail` within `max` bytes, each line cut to `max`.
fn cut_tail(tail: &mut Vec<String>, max: usize) {
    let mut budget = max;
    let mut kept = Vec::new();
    for line in tail.iter_mut().rev() {
        cut(line, budget.min(MAX_ERROR_TEXT_BYTES));
        if line.len() > budget {
            break;
        }
        budget -= line.len();
        kept.push(std::mem::take(line));
    }
    kept.reverse();
    *tail = kept;
}

fn tail_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n  {}", tail.join("\n  "))
    }
}

impl FleetError {
    /// A [`FleetError::BadRequest`].
    pub fn bad_request(what: impl Into<String>, detail: impl Display) -> Self {
        FleetError::BadRequest {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// A [`FleetError::Timeout`].
    pub fn timeout(what: impl Into<String>, after: std::time::Duration) -> Self {
        FleetError::Timeout {
            what: what.into(),
            after_ms: after.as_millis() as u64,
        }
    }

    /// A [`FleetError::Internal`].
    pub fn internal(detail: impl Display) -> Self {
        FleetError::Internal {
            detail: detail.to_string(),
        }
    }

    /// The same error with every text field cut to [`MAX_ERROR_TEXT_BYTES`] and a worker's
    /// output tail to [`MAX_ERROR_TAIL_BYTES`], so that it always fits in a message. Applied
    /// where errors are made from outside text (engine messages, output lines) and on every
    /// reply a node sends.
    pub fn bounded(mut self) -> Self {
        let m = MAX_ERROR_TEXT_BYTES;
        match &mut self {
            FleetError::WorkerNotFound { worker, detail } => {
                cut(worker, m);
                cut(detail, m);
            }
            FleetError::RoleNotFound { role, known } => {
                cut(role, m);
                cut(known, m);
            }
            FleetError::RoleExists { role } => cut(role, m),
            FleetError::WorkerFailed {
                worker,
                node,
                reason,
                tail,
            } => {
                cut(worker, m);
                cut(node, m);
                cut(reason, m);
                cut_tail(tail, MAX_ERROR_TAIL_BYTES);
            }
            FleetError::NodeLost { node, reason } => {
                cut(node, m);
                cut(reason, m);
            }
            FleetError::Timeout { what, .. } => cut(what, m),
            FleetError::EngineNotFound {
                worker,
                engine,
                known,
            } => {
                cut(worker, m);
                cut(engine, m);
                cut(known, m);
            }
            FleetError::EngineExists { worker, engine } => {
                cut(worker, m);
                cut(engine, m);
            }
            FleetError::EngineTypeUnknown {
                type_name,
                node,
                known,
            } => {
                cut(type_name, m);
                cut(node, m);
                cut(known, m);
            }
            FleetError::MethodNotFound {
                worker,
                engine,
                method,
            } => {
                cut(worker, m);
                cut(engine, m);
                cut(method, m);
            }
            FleetError::EngineFailed {
                worker,
                engine,
                method,
                message,
            } => {
                cut(worker, m);
                cut(engine, m);
                cut(method, m);
                cut(message, m);
            }
            FleetError::InsufficientResources {
                what,
                resource,
                detail,
            } => {
                cut(what, m);
                cut(resource, m);
                cut(detail, m);
            }
            FleetError::BadRequest { what, detail }
            | FleetError::Unavailable { what, detail }
            | FleetError::Indeterminate { what, detail, .. } => {
                cut(what, m);
                cut(detail, m);
            }
            FleetError::PayloadTooLarge { what, .. } => cut(what, m),
            FleetError::Protocol { detail } | FleetError::Internal { detail } => cut(detail, m),
        }
        self
    }

    /// Whether the same call may succeed if tried again (after a backoff). Timeouts are
    /// retryable only for idempotent calls: the caller decides that. An
    /// [`Indeterminate`](FleetError::Indeterminate) outcome (it may have run) is retryable only
    /// when repeating it is known to be harmless.
    pub fn retryable(&self) -> bool {
        match self {
            FleetError::Timeout { .. } | FleetError::Unavailable { .. } => true,
            FleetError::Indeterminate { resend_safe, .. } => *resend_safe,
            _ => false,
        }
    }

    /// A stable short name for the variant (the `kind` of the HTTP error shape).
    pub fn kind(&self) -> &'static str {
        match self {
            FleetError::WorkerNotFound { .. } => "worker_not_found",
            FleetError::RoleNotFound { .. } => "role_not_found",
            FleetError::RoleExists { .. } => "role_exists",
            FleetError::WorkerFailed { .. } => "worker_failed",
            FleetError::NodeLost { .. } => "node_lost",
            FleetError::Timeout { .. } => "timeout",
            FleetError::EngineNotFound { .. } => "engine_not_found",
            FleetError::EngineExists { .. } => "engine_exists",
            FleetError::EngineTypeUnknown { .. } => "engine_type_unknown",
            FleetError::MethodNotFound { .. } => "method_not_found",
            FleetError::EngineFailed { .. } => "engine_failed",
            FleetError::InsufficientResources { .. } => "insufficient_resources",
            FleetError::BadRequest { .. } => "bad_request",
            FleetError::PayloadTooLarge { .. } => "payload_too_large",
            FleetError::Unavailable { .. } => "unavailable",
            FleetError::Indeterminate { .. } => "indeterminate",
            FleetError::Protocol { .. } => "protocol",
            FleetError::Internal { .. } => "internal",
        }
    }

    /// The HTTP status AReaL's worker server would use: 400 bad request / unknown method,
    /// 404 unknown engine or worker, 409 conflicts, 500 the method failed.
    pub fn http_status(&self) -> u16 {
        match self {
            FleetError::BadRequest { .. }
            | FleetError::MethodNotFound { .. }
            | FleetError::EngineTypeUnknown { .. }
            | FleetError::Protocol { .. } => 400,
            FleetError::WorkerNotFound { .. }
            | FleetError::RoleNotFound { .. }
            | FleetError::EngineNotFound { .. } => 404,
            FleetError::RoleExists { .. } | FleetError::EngineExists { .. } => 409,
            FleetError::PayloadTooLarge { .. } => 413,
            FleetError::Unavailable { .. } | FleetError::InsufficientResources { .. } => 503,
            FleetError::Timeout { .. } => 504,
            FleetError::NodeLost { .. }
            | FleetError::WorkerFailed { .. }
            | FleetError::Indeterminate { .. } => 502,
            FleetError::EngineFailed { .. } | FleetError::Internal { .. } => 500,
        }
    }
}

crate::wire_type!(FleetError, |err| FleetError::Protocol { detail: err });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_failed_message_carries_the_log_tail() {
        let e = FleetError::WorkerFailed {
            worker: "gen/0".into(),
            node: "n1".into(),
            reason: "exit code 3".into(),
            tail: vec!["loading".into(), "CUDA error".into()],
        };
        let s = e.to_string();
        assert!(
            s.contains("gen/0") && s.contains("exit code 3") && s.contains("CUDA error"),
            "{s}"
        );
    }

    #[test]
    fn bounded_errors_cut_long_text_and_keep_the_newest_tail_lines() {
        let e = FleetError::EngineFailed {
            worker: "w/0".into(),
            engine: "e".into(),
            method: "m".into(),
            message: "é".repeat(17 << 20),
        }
        .bounded();
        let FleetError::EngineFailed { message, .. } = &e else {
            unreachable!()
        };
        assert!(message.len() <= MAX_ERROR_TEXT_BYTES, "{}", message.len());
        assert!(message.ends_with(&format!("cut; {} bytes in all)", 34 << 20)));

        let tail: Vec<String> = (0..100)
            .map(|i| format!("{i:>4}{}", "x".repeat(16 << 10)))
            .collect();
        let e = FleetError::WorkerFailed {
            worker: "w/0".into(),
            node: "n".into(),
            reason: "exit 1".into(),
            tail,
        }
        .bounded();
        let FleetError::WorkerFailed { tail, .. } = &e else {
            unreachable!()
        };
        assert!(tail.iter().map(String::len).sum::<usize>() <= MAX_ERROR_TAIL_BYTES);
        assert!(
            tail.last().is_some_and(|l| l.starts_with("  99")),
            "newest line kept"
        );
        assert!(!tail.is_empty());
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        assert!(FleetError::timeout("x", std::time::Duration::from_secs(1)).retryable());
        assert!(!FleetError::bad_request("x", "y").retryable());
        let maybe_ran = |resend_safe| FleetError::Indeterminate {
            what: "POST /train".into(),
            detail: "connection reset after sending".into(),
            resend_safe,
        };
        assert!(!maybe_ran(false).retryable());
        assert!(maybe_ran(true).retryable());
        assert_eq!(maybe_ran(false).kind(), "indeterminate");
    }
}
