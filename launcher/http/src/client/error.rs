//! The error of a (retried) HTTP call: what happened, after how many attempts, and what the
//! server last said.
//!
//! One struct with a kind, rather than one enum variant per case, because every case needs the
//! same context: which call (method, URL, request id), how many attempts went out, the last
//! status and the start of the last body. It is serde so an actor can send it back to the
//! caller as is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many bytes of the last response body an error keeps.
pub const BODY_PREFIX_BYTES: usize = 1024;

/// Why the call ended without an acceptable response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpErrorKind {
    /// The request could not be built (bad URL, method or header); nothing was sent.
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// The server's answer was final and not 2xx (see `last_status`, `last_body`).
    Status,
    /// The connection failed after the request may have been sent, and the call is not
    /// idempotent, so it was not sent again (see `last_error`).
    Transport,
    /// An attempt timed out on a call that is not idempotent; it was not sent again because
    /// the server may still be running it.
    AttemptTimeout {
        /// The per-attempt timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// The response body was larger than the client accepts.
    ResponseTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Every allowed attempt failed with a retryable outcome.
    RetriesExhausted,
    /// The overall deadline passed, or the next backoff would have crossed it.
    Deadline {
        /// The deadline, in milliseconds.
        deadline_ms: u64,
    },
    /// The caller's abort signal fired (e.g. the child process died).
    Aborted {
        /// The reason the abort signal gave.
        reason: String,
    },
}

/// A failed HTTP call, with its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// What went wrong.
    pub kind: HttpErrorKind,
    /// The request method.
    pub method: String,
    /// The full URL.
    pub url: String,
    /// The request id sent as `X-Request-Id`, if any.
    pub request_id: Option<String>,
    /// How many attempts were started.
    pub attempts: u32,
    /// The status of the last response received, if any.
    pub last_status: Option<u16>,
    /// The first [`BODY_PREFIX_BYTES`] of the last response body (lossy UTF-8), if any.
    pub last_body: Option<String>,
    /// The last transport error, if any.
    pub last_error: Option<String>,
}

impl HttpError {
    /// Whether the same call may succeed if the caller tries again later: true when it ran out
    /// of attempts or time on outcomes that are themselves retryable; false for a final answer,
    /// a call that may have run, an abort or a malformed request.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            HttpErrorKind::RetriesExhausted | HttpErrorKind::Deadline { .. }
        )
    }

    fn advice(&self) -> &'static str {
        match &self.kind {
            HttpErrorKind::InvalidRequest { .. } => "fix the request",
            HttpErrorKind::Status => match self.last_status {
                Some(s) if (400..500).contains(&s) => {
                    "the server rejected the request; fix it rather than retrying"
                }
                _ => "the server failed the request; see its body and logs",
            },
            HttpErrorKind::Transport | HttpErrorKind::AttemptTimeout { .. } => {
                "not resent because the call is not idempotent and may have run; check the \
                 server before repeating it (with the same request id)"
            }
            HttpErrorKind::ResponseTooLarge { .. } => {
                "raise the client's body limit or fetch the data another way"
            }
            HttpErrorKind::RetriesExhausted | HttpErrorKind::Deadline { .. } => {
                "the server stayed unavailable; check that it is running and healthy"
            }
            HttpErrorKind::Aborted { .. } => "the call was abandoned",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        f.write_str(": ")?;
        match &self.kind {
            HttpErrorKind::InvalidRequest { reason } => write!(f, "invalid request: {reason}")?,
            HttpErrorKind::Status => match self.last_status {
                Some(s) => write!(f, "server answered {s}")?,
                None => f.write_str("server answered an error status")?,
            },
            HttpErrorKind::Transport => f.write_str("connection failed after sending")?,
            HttpErrorKind::AttemptTimeout { timeout_ms } => {
                write!(f, "attempt timed out after {timeout_ms} ms")?
            }
            HttpErrorKind::ResponseTooLarge { limit } => {
                write!(f, "response body larger than {limit} bytes")?
            }
            HttpErrorKind::RetriesExhausted => f.write_str("retries exhausted")?,
            HttpErrorKind::Deadline { deadline_ms } => {
                write!(f, "deadline of {deadline_ms} ms reached")?
            }
            HttpErrorKind::Aborted { reason } => write!(f, "aborted: {reason}")?,
        }
        write!(
            f,
            " after {} attempt{}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )?;
        if let Some(s) = self.last_status {
            if !matches!(self.kind, HttpErrorKind::Status) {
                write!(f, "; last status {s}")?;
            }
        }
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {e}")?;
        }
        if let Some(b) = &self.last_body {
            if !b.is_empty() {
                write!(f, "; body: {b}")?;
            }
        }
        write!(f, " ({})", self.advice())
    }
}

impl std::error::Error for HttpError {}

/// The first [`BODY_PREFIX_BYTES`] of `body` as lossy UTF-8, marked when cut.
pub(crate) fn body_prefix(body: &[u8]) -> String {
    if body.len() <= BODY_PREFIX_BYTES {
        return String::from_utf8_lossy(body).into_owned();
    }
    let mut s = String::from_utf8_lossy(&body[..BODY_PREFIX_BYTES]).into_owned();
    s.push_str(&format!("... ({} bytes in all)", body.len()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: HttpErrorKind) -> HttpError {
        HttpError {
            kind,
            method: "POST".into(),
            url: "http://127.0.0.1:1/call".into(),
            request_id: Some("r-7".into()),
            attempts: 3,
            last_status: Some(503),
            last_body: Some("busy".into()),
            last_error: None,
        }
    }

    #[test]
    fn message_names_call_attempts_status_and_body() {
        let msg = err(HttpErrorKind::RetriesExhausted).to_string();
        for part in [
            "POST http://127.0.0.1:1/call",
            "r-7",
            "3 attempts",
            "503",
            "busy",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
        assert!(err(HttpErrorKind::RetriesExhausted).retryable());
        assert!(!err(HttpErrorKind::Status).retryable());
        assert!(!err(HttpErrorKind::Aborted { reason: "x".into() }).retryable());
    }

    #[test]
    fn body_prefix_is_bounded() {
        let long = vec![b'a'; BODY_PREFIX_BYTES * 3];
        let p = body_prefix(&long);
        assert!(p.len() < BODY_PREFIX_BYTES + 40, "{}", p.len());
        assert!(p.ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(body_prefix(b"short"), "short");
    }
}
