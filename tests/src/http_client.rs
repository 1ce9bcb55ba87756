//! A small HTTP/1.1 client for tests: JSON in, status + headers + JSON out, or a streamed body
//! read chunk by chunk. Every call has a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Deadline of every request made through [`TestHttp`].
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// A finished response.
#[derive(Debug)]
pub struct JsonResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body parsed as JSON (`Null` if it is not JSON).
    pub json: serde_json::Value,
    /// Body as text.
    pub text: String,
}

/// A pooled keep-alive client.
#[derive(Clone)]
pub struct TestHttp {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestHttp {
    fn default() -> Self {
        TestHttp::new()
    }
}

impl TestHttp {
    /// A new client.
    pub fn new() -> TestHttp {
        TestHttp {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Bytes,
    ) -> Response<Incoming> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req.body(Full::new(body)).expect("build request");
        tokio::time::timeout(REQUEST_DEADLINE, self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{url}: no answer within {REQUEST_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("{url}: request failed: {e:?}"))
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Bytes,
    ) -> JsonResponse {
        let resp = self.send(method, url, key, body).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = tokio::time::timeout(REQUEST_DEADLINE, resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{url}: body not complete within {REQUEST_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("{url}: reading the body failed: {e}"))
            .to_bytes();
        JsonResponse {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// POSTs JSON.
    pub async fn post(
        &self,
        url: &str,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> JsonResponse {
        self.call(Method::POST, url, key, Bytes::from(body.to_string()))
            .await
    }

    /// GETs.
    pub async fn get(&self, url: &str) -> JsonResponse {
        self.call(Method::GET, url, None, Bytes::new()).await
    }
}

/// Reads the next data chunk of a streamed body within `deadline`; `None` at the end.
pub async fn next_chunk(body: &mut Incoming, deadline: Duration) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no chunk within {deadline:?}"))?
            .unwrap_or_else(|e| panic!("stream failed: {e}"));
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}
