//! One pooled keep-alive HTTP/1.1 client, and the single attempt that the retry loop repeats.
//!
//! This is also where hyper's errors are turned into retry [`Outcome`]s, the one subtle part of
//! the policy. hyper-util's legacy client exposes `is_connect()` (opening the connection
//! failed: nothing was sent). A request that hyper never wrote because the connection closed
//! first comes back with a `hyper::Error` source for which `is_canceled()` holds (hyper-util
//! retries those itself on reused connections; on a fresh one it reports them). Everything
//! else — a reset or an end of file after writing, a body that broke off — may have reached the
//! server, so it is [`Outcome::MaybeSent`].

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::policy::{parse_retry_after, Outcome};
use super::types::{HttpRequest, HttpResponse, REQUEST_ID_HEADER};

/// Settings of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long an idle keep-alive connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// Largest response body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            pool_idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 32,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A pooled HTTP/1.1 client. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    inner: LegacyClient<HttpConnector, Full<Bytes>>,
    max_body_bytes: usize,
}

impl Default for Client {
    fn default() -> Client {
        Client::new()
    }
}

impl Client {
    /// A client with [`ClientConfig::default`].
    pub fn new() -> Client {
        Client::with_config(ClientConfig::default())
    }

    /// A client with `config`.
    pub fn with_config(config: ClientConfig) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = LegacyClient::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Client {
            inner,
            max_body_bytes: config.max_body_bytes,
        }
    }

    /// Sends one attempt of a prepared request and reads the whole response.
    pub(crate) async fn attempt(&self, req: &Prepared) -> Result<HttpResponse, AttemptError> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.uri.clone());
        if let Some(headers) = builder.headers_mut() {
            for (name, value) in &req.headers {
                headers.append(name.clone(), value.clone());
            }
        }
        let request = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| AttemptError::Invalid(e.to_string()))?;
        let response = self
            .inner
            .request(request)
            .await
            .map_err(|e| AttemptError::Transport {
                outcome: transport_outcome(&e),
                message: error_chain(&e),
            })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_body_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    AttemptError::TooLarge {
                        limit: self.max_body_bytes,
                    }
                } else {
                    AttemptError::Transport {
                        outcome: Outcome::MaybeSent,
                        message: format!("reading the response body: {}", error_chain(&*e)),
                    }
                }
            })?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers,
            body,
            attempts: 1,
        })
    }
}

/// A request checked and converted once, then sent as often as the policy allows.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

impl Prepared {
    /// Validates `req` against `base_url` (e.g. `http://127.0.0.1:8000`).
    pub(crate) fn new(base_url: &str, req: &HttpRequest) -> Result<Prepared, String> {
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", req.method))?;
        if !req.path_and_query.starts_with('/') {
            return Err(format!("path {:?} must start with '/'", req.path_and_query));
        }
        let url = full_url(base_url, &req.path_and_query);
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("URL {url:?} must be http://host[:port]/..."));
        }
        let mut headers = Vec::with_capacity(req.headers.len() + 1);
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            if req.request_id.is_some() && name.as_str() == REQUEST_ID_HEADER {
                continue;
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            headers.push((name, value));
        }
        if let Some(id) = &req.request_id {
            let value = HeaderValue::from_str(id)
                .map_err(|_| format!("invalid request id {id:?} (must be a header value)"))?;
            headers.push((HeaderName::from_static(REQUEST_ID_HEADER), value));
        }
        Ok(Prepared {
            method,
            uri,
            headers,
            body: req.body.clone(),
        })
    }
}

/// `base_url` + `path_and_query`, with exactly one `/` between them.
pub(crate) fn full_url(base_url: &str, path_and_query: &str) -> String {
    format!("{}{}", base_url.trim_end_matches('/'), path_and_query)
}

/// Why one attempt produced no response.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// A transport failure, classified for the retry policy.
    Transport { outcome: Outcome, message: String },
    /// The body exceeded the limit.
    TooLarge { limit: usize },
    /// The request could not be built.
    Invalid(String),
}

impl HttpResponse {
    /// The retry outcome of this response.
    pub(crate) fn outcome(&self) -> Outcome {
        Outcome::Status {
            status: self.status,
            retry_after: self
                .header("retry-after")
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        }
    }
}

fn transport_outcome(err: &hyper_util::client::legacy::Error) -> Outcome {
    if err.is_connect() {
        return Outcome::ConnectFailed;
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_canceled() {
                return Outcome::NotSent;
            }
        }
        source = e.source();
    }
    Outcome::MaybeSent
}

/// `err: cause: cause...`, because hyper's top-level messages ("client error (Connect)") say
/// little on their own.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        source = e.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_validates_and_sets_the_request_id_once() {
        let req = HttpRequest::get("/x?a=1")
            .header("X-Request-Id", "stale")
            .header("accept", "application/json")
            .request_id("r-1");
        let p = Prepared::new("http://127.0.0.1:9/", &req).expect("valid");
        assert_eq!(p.uri.to_string(), "http://127.0.0.1:9/x?a=1");
        let ids: Vec<_> = p
            .headers
            .iter()
            .filter(|(n, _)| n.as_str() == REQUEST_ID_HEADER)
            .map(|(_, v)| v.to_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["r-1"]);
        assert_eq!(p.headers.len(), 2);

        for (base, req) in [
            ("http://127.0.0.1:9", HttpRequest::get("no-slash")),
            ("http://127.0.0.1:9", HttpRequest::new("BAD METHOD", "/")),
            ("ftp://127.0.0.1:9", HttpRequest::get("/")),
            (
                "http://127.0.0.1:9",
                HttpRequest::get("/").header("bad name", "v"),
            ),
            (
                "http://127.0.0.1:9",
                HttpRequest::get("/").request_id("a\nb"),
            ),
        ] {
            assert!(Prepared::new(base, &req).is_err(), "{base} {req:?}");
        }
    }
}
