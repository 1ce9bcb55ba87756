//! A write deadline on a connection: a client that stops reading is disconnected.
//!
//! A streamed answer (SSE) or a large export is written as fast as the client reads it. A
//! client that stops reading without closing the connection (a hung agent, a paused process)
//! fills the socket's send buffer, and from then on every write waits: without a deadline the
//! connection, the stream's task and the turn it records would wait forever, and so would the
//! session's export. [`StallGuard`] wraps the socket and fails a write that has made no
//! progress for the deadline (`io::ErrorKind::TimedOut`). hyper then drops the connection and
//! the response body with it; the stream's task sees the client gone and records the turn as
//! cancelled (an incomplete turn), which lets the session end and be exported.
//!
//! Only waiting counts: the timer starts when a write would block and is reset by every write
//! that goes through, so a slow but steady reader is never cut off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection whose writes fail after `deadline` without progress.
pub(crate) struct StallGuard<T> {
    inner: T,
    /// `None`: no deadline (writes wait as long as the client does).
    deadline: Option<Duration>,
    /// Running while a write is blocked.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub(crate) fn new(inner: T, deadline: Option<Duration>) -> StallGuard<T> {
        StallGuard {
            inner,
            deadline,
            timer: None,
        }
    }

    /// Called when a write returned `Pending`: starts the timer, or fails once it ran out.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} ms (the write stall timeout); closing the connection",
                    deadline.as_millis()
                ),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => match self.blocked(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                if matches!(done, Poll::Ready(Ok(n)) if n > 0) {
                    self.timer = None;
                }
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => match self.blocked(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                if matches!(done, Poll::Ready(Ok(n)) if n > 0) {
                    self.timer = None;
                }
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A flush that completes is no progress (on a socket it is a no-op): only a write that
        // went through resets the timer.
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => match self.blocked(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => done,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_deadline() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut g = StallGuard::new(a, Some(Duration::from_millis(50)));
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                g.write_all(&[0u8; 4096]).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        })
        .await
        .expect("the write fails instead of waiting forever");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
