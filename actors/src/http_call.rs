//! A plain HTTP request forwarded to a worker that is an HTTP service, and its answer.
//!
//! These travel inside actor messages (and across nodes), so they are plain serde data; the
//! launcher turns them into real HTTP requests over its pooled client with its retry policy.

use crate::error::FleetError;
use crate::ids::RequestId;
use serde::{Deserialize, Serialize};

/// An HTTP request for a worker's service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Overall deadline, including retries.
    pub timeout_ms: u64,
    /// Whether a timed-out attempt may be sent again.
    pub idempotent: bool,
    /// Sent as `X-Request-Id` on every attempt.
    pub request_id: Option<RequestId>,
    /// The caller's retry policy (`None`: the default).
    pub retry: Option<crate::options::Retry>,
}

impl HttpCall {
    /// A request with no body, 60 s deadline, not idempotent unless it is a GET/HEAD.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        let method = method.into();
        let idempotent = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
        HttpCall {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 60_000,
            idempotent,
            request_id: None,
            retry: None,
        }
    }
    /// A GET.
    pub fn get(path: impl Into<String>) -> Self {
        HttpCall::new("GET", path)
    }
    /// A POST with a JSON body.
    pub fn post_json(path: impl Into<String>, body: &serde_json::Value) -> Self {
        let mut c = HttpCall::new("POST", path);
        c.body = body.to_string().into_bytes();
        c.headers
            .push(("content-type".into(), "application/json".into()));
        c
    }
    /// Adds a header.
    pub fn header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// Sets the deadline.
    pub fn timeout(mut self, d: std::time::Duration) -> Self {
        // Saturating: `Duration::MAX` is "no deadline", not a wrapped-around number.
        self.timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self
    }
    /// Marks it idempotent (or not).
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }
    /// Sets the request id.
    pub fn request_id(mut self, id: impl Into<RequestId>) -> Self {
        self.request_id = Some(id.into());
        self
    }
    /// Sets the retry policy (see [`crate::Retry`]).
    pub fn retry(mut self, retry: crate::options::Retry) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// The service's answer, whatever its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponseData {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Attempts sent for it, the one answered included (1: answered at the first).
    pub attempts: u32,
}

impl HttpResponseData {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, FleetError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| FleetError::bad_request("decoding an HTTP response body as JSON", e))
    }
}

/// The outcome of an [`HttpCall`]: the response (any status), or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpReply(pub Result<HttpResponseData, FleetError>);

crate::wire_type!(HttpCall, |err| HttpCall::new(
    "<undecodable>",
    format!("/undecodable?{}", err.replace(' ', "+"))
));

crate::wire_type!(HttpReply, |err| HttpReply(Err(FleetError::Protocol {
    detail: err
})));
