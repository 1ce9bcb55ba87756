//! The proxy's client for its inference backend.
//!
//! One pooled hyper client with keep-alive connections (a fresh TCP connection per completion
//! would cost more than the proxy's whole overhead budget). Deadlines: connecting has its own
//! timeout (502 after it), and the answer's headers must arrive within the backend timeout
//! (504 after it). Dropping a response body before its end closes that connection instead of
//! returning it to the pool, which is what cancels a generation on the backend when the client
//! goes away.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::BackendUrl;
use crate::errors::ApiError;

/// Most bytes of a backend error body quoted in the proxy's error message.
const ERROR_BODY_QUOTE: usize = 2048;

type Req = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The pooled client for one backend.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<HttpConnector, Req>,
    root: String,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(
        backend: &BackendUrl,
        api_key: Option<&str>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let auth = api_key.and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok());
        Upstream {
            client,
            root: backend.root.clone(),
            auth,
            timeout,
        }
    }

    /// The backend's root URL.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// The per-answer deadline.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs JSON to `path`; returns once the answer's headers arrived.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, ApiError> {
        let mut req = self.request(Method::POST, path, Full::new(body).boxed())?;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.send(req, self.timeout).await
    }

    /// POSTs JSON to `path` like [`Upstream::post_json`], and says on failure whether nothing
    /// was sent (a connect error: another server may take the request safely).
    pub(crate) async fn post_json_classified(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, SendFailure> {
        let mut req = self
            .request(Method::POST, path, Full::new(body).boxed())
            .map_err(|error| SendFailure {
                error,
                unsent: true,
            })?;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(SendFailure {
                error: ApiError::BackendTimeout(self.timeout),
                unsent: false,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(SendFailure {
                unsent: e.is_connect(),
                error: ApiError::BackendUnreachable {
                    backend: self.root.clone(),
                    detail: error_chain(&e),
                },
            }),
        }
    }

    /// GETs `path` within `deadline`.
    pub(crate) async fn get(
        &self,
        path: &str,
        deadline: Duration,
    ) -> Result<Response<Incoming>, ApiError> {
        let req = self.request(Method::GET, path, Empty::new().boxed())?;
        self.send(req, deadline).await
    }

    fn request(&self, method: Method, path: &str, body: Req) -> Result<Request<Req>, ApiError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.root, path))
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body)
            .map_err(|e| ApiError::BackendUnreachable {
                backend: self.root.clone(),
                detail: format!("cannot build the request: {e}"),
            })?;
        if let Some(auth) = &self.auth {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        Ok(req)
    }

    async fn send(
        &self,
        req: Request<Req>,
        deadline: Duration,
    ) -> Result<Response<Incoming>, ApiError> {
        match tokio::time::timeout(deadline, self.client.request(req)).await {
            Err(_) => Err(ApiError::BackendTimeout(deadline)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(ApiError::BackendUnreachable {
                backend: self.root.clone(),
                detail: error_chain(&e),
            }),
        }
    }

    /// Reads a whole answer body of at most `limit` bytes within the backend timeout.
    pub(crate) async fn read_body(&self, body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
        match tokio::time::timeout(self.timeout, Limited::new(body, limit).collect()).await {
            Err(_) => Err(ApiError::BackendTimeout(self.timeout)),
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) => Err(ApiError::BackendUnreachable {
                backend: self.root.clone(),
                detail: format!("reading the answer failed: {e}"),
            }),
        }
    }

    /// Turns a backend's error answer into the proxy's error: a 4xx with a JSON body is kept
    /// whole (to pass on unchanged); anything else is quoted in the proxy's own error.
    pub(crate) async fn error_from(&self, resp: Response<Incoming>) -> ApiError {
        let status = resp.status();
        let bytes = match tokio::time::timeout(
            Duration::from_secs(5).min(self.timeout),
            Limited::new(resp.into_body(), 64 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(c)) => Some(c.to_bytes()),
            _ => None,
        };
        match bytes {
            Some(b)
                if status.is_client_error()
                    && serde_json::from_slice::<serde_json::Value>(&b).is_ok() =>
            {
                ApiError::BackendRejected { status, body: b }
            }
            Some(b) => {
                let text = String::from_utf8_lossy(&b[..b.len().min(ERROR_BODY_QUOTE)]);
                ApiError::BackendStatus {
                    status,
                    body: text.trim().to_string(),
                }
            }
            None => ApiError::BackendStatus {
                status,
                body: "<body unreadable>".to_string(),
            },
        }
    }
}

/// A request that failed, and whether it failed before any byte of it was sent.
#[derive(Debug)]
pub(crate) struct SendFailure {
    /// The error the agent gets if it is not sent elsewhere.
    pub(crate) error: ApiError,
    /// Nothing was sent (connect refused, DNS, connect timeout): safe to send elsewhere.
    pub(crate) unsent: bool,
}

/// An error and its sources, joined with ": ".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}
