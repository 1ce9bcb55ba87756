//! The HTTP/1.1 plumbing under `fleet infer`: an accept loop (one task per connection, a
//! header-read deadline, graceful shutdown) and JSON / server-sent-event bodies with a bounded,
//! deadline-limited request body read. The same patterns as the proxy and the mock, kept in
//! this crate; the response bodies (JSON, server-sent events) are the launcher's own.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use fleet_http::{json_response, sse_response, Body};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// An OpenAI-shaped JSON error.
pub fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {"type": kind, "message": message.to_string()}}),
    )
}

/// Reads a whole body of at most `limit` bytes within `deadline`; the error is a response.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("body larger than {limit} bytes (fleet infer --max-body-bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(deadline, Limited::new(req.into_body(), limit).collect()).await {
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("body not received within {deadline:?}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, "invalid_request_error", e)),
    }
}

/// A running accept loop; dropping it stops accepting.
#[derive(Debug)]
pub struct Listener {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// Serves `listener` with `handler`, one task per connection.
    pub fn spawn<H, F>(listener: TcpListener, handler: H) -> Listener
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, handler, stop_rx));
        Listener {
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting, gives open connections a short grace period, waits for the loop.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop<H, F>(listener: TcpListener, handler: H, mut stop: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            a = listener.accept() => a,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "fleet infer: accept failed; retrying in 50 ms");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service_fn(handler));
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "fleet infer: connection ended with an error");
            }
        });
    }
}

/// Resolves once shutdown was asked for (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
