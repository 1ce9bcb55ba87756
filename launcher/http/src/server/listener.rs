//! The HTTP/1.1 accept loop under the proxy and the mock inference server.
//!
//! Each accepted connection is served by hyper in a task of its own, so one slow client never
//! holds up another. A header-read deadline stops a client from holding a connection open by
//! sending headers slowly. Shutdown is a watch channel: the accept loop stops, open connections
//! are asked to finish their current response, and after a short grace period they are dropped
//! (which also drops any stream in flight, and with it the upstream request it was reading).
//! A write deadline (`stall.rs`) closes a connection whose client stopped reading.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::body::Body;
use super::stall::StallGuard;

/// How long a client may take to send a request's headers, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-connection limits of an accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A connection that has not sent a full request head within this is closed.
    pub header_read_timeout: Duration,
    /// A connection whose writes make no progress for this long is closed (see `stall.rs`);
    /// `None`: no deadline.
    pub write_stall_timeout: Option<Duration>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_stall_timeout: None,
        }
    }
}
/// How long open connections get to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A running accept loop: stop it with [`Listener::shutdown`] or by dropping it.
#[derive(Debug)]
pub struct Listener {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts serving `listener` with `handler`, one task per connection.
    ///
    /// A handler that returns `Err` makes hyper close the connection without a response (the
    /// mock uses that to simulate a dropped connection); the proxy's handler never does.
    pub fn spawn<H, F, E>(name: &'static str, listener: TcpListener, handler: H) -> Listener
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        Listener::spawn_with(name, listener, ConnLimits::default(), handler)
    }

    /// [`Listener::spawn`] with per-connection limits.
    pub fn spawn_with<H, F, E>(
        name: &'static str,
        listener: TcpListener,
        limits: ConnLimits,
        handler: H,
    ) -> Listener
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(name, listener, limits, handler, stop_rx));
        Listener {
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting, lets open connections finish for a short grace period, and waits until
    /// the accept loop has exited.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the accept loop exits (only after a shutdown).
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
            self.task = None;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop<H, F, E>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnLimits,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually out of file descriptors: back off a little instead of spinning.
                tracing::warn!(server = name, error = %e, "accept failed; retrying in 50 ms");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handler(req, peer));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(
                    TokioIo::new(StallGuard::new(stream, limits.write_stall_timeout)),
                    service,
                );
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::debug!(server = name, "accept loop stopped");
}

/// Resolves once shutdown was asked for (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
