//! The request and response that travel between an actor and the HTTP client.
//!
//! Plain data (strings, a status number, bytes) rather than `http` crate types, so they can be
//! serialized into actor messages. Header values that are not UTF-8 are replaced lossily on
//! the way in; that never happens with the JSON services fleet talks to.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The header that carries the caller's request id on every attempt.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One HTTP request, relative to a base URL given per call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Method, e.g. `"GET"`.
    pub method: String,
    /// Path and query, e.g. `"/call?x=1"`; must start with `/`.
    pub path_and_query: String,
    /// Extra headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    #[serde(with = "bytes_serde")]
    pub body: Bytes,
    /// Sent as `X-Request-Id` on every attempt when set (replacing such a header in
    /// `headers`), so the server can recognise a repeat.
    pub request_id: Option<String>,
}

impl HttpRequest {
    /// A request with `method` and `path_and_query`, no headers and no body.
    pub fn new(method: impl Into<String>, path_and_query: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path_and_query: path_and_query.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            request_id: None,
        }
    }

    /// A GET request.
    pub fn get(path_and_query: impl Into<String>) -> HttpRequest {
        HttpRequest::new("GET", path_and_query)
    }

    /// A POST request with `body`.
    pub fn post(path_and_query: impl Into<String>, body: impl Into<Bytes>) -> HttpRequest {
        HttpRequest::new("POST", path_and_query).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> HttpRequest {
        self.body = body.into();
        self
    }

    /// Sets the request id sent as `X-Request-Id`.
    pub fn request_id(mut self, id: impl Into<String>) -> HttpRequest {
        self.request_id = Some(id.into());
        self
    }
}

/// One HTTP response with its whole body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers (name in lower case, value).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    #[serde(with = "bytes_serde")]
    pub body: Bytes,
    /// Attempts the retry loop sent, this one included (1 for a single attempt).
    #[serde(default)]
    pub attempts: u32,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

mod bytes_serde {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        b.as_ref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(d).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_round_trip_through_json() {
        let req = HttpRequest::post("/call", &b"\x00\xffbody"[..])
            .header("content-type", "application/octet-stream")
            .request_id("r-1");
        let back: HttpRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let resp = HttpResponse {
            status: 503,
            headers: vec![("retry-after".into(), "1".into())],
            body: Bytes::from_static(b"busy"),
            attempts: 1,
        };
        let back: HttpResponse =
            serde_json::from_str(&serde_json::to_string(&resp).unwrap()).unwrap();
        assert_eq!(back, resp);
        assert_eq!(back.header("Retry-After"), Some("1"));
        assert!(!back.is_success());
    }
}
