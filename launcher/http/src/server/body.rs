//! Request and response bodies shared by the proxy and the mock inference server.
//!
//! Both servers answer with small JSON documents or with a server-sent-event stream that a task
//! feeds chunk by chunk. One boxed body type covers both, so every handler returns the same
//! `Response<Body>`. Request bodies are read with a size limit and a deadline, so a client can
//! neither make the server buffer without bound nor hold a task forever by sending slowly.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// The body type of every response the proxy and the mock send.
pub type Body = BoxBody<Bytes, Infallible>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with a JSON body and `status`.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    // Serialising a `Value` cannot fail: its map keys are strings.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    json_bytes_response(status, Bytes::from(bytes))
}

/// A response whose body is already-serialised JSON.
pub fn json_bytes_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A server-sent-event response whose chunks arrive on `rx`; the stream ends when every sender
/// is dropped. Dropping this body (the client went away) closes the channel, which the
/// producing task observes with `Sender::closed` and takes as "cancel".
pub fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut resp = Response::new(BodyExt::boxed(ChannelBody { rx }));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// A streaming body fed by a channel: each message is sent to the client as one data frame as
/// soon as it arrives, with no buffering in between.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum ReadBodyError {
    /// The body is larger than the limit (by its `Content-Length` or by what arrived).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The connection failed or closed before the whole body arrived.
    Read(String),
    /// The body did not arrive within the deadline.
    Timeout(Duration),
}

/// Reads a whole request body of at most `limit` bytes within `deadline`.
pub async fn read_body(
    req: hyper::Request<Incoming>,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ReadBodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ReadBodyError::TooLarge { limit });
    }
    let collect = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(deadline, collect).await {
        Err(_) => Err(ReadBodyError::Timeout(deadline)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ReadBodyError::TooLarge { limit })
            } else {
                Err(ReadBodyError::Read(e.to_string()))
            }
        }
    }
}
