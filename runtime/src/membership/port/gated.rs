//! The stream ractor_cluster reads from: until the session authenticates it enforces the
//! deadline and the frame limits of [`super::PortLimits`], then it passes reads straight
//! through.
//!
//! ractor_cluster's framing is a big-endian `u64` length and a protobuf payload; its reader asks
//! for exactly 8 header bytes, then for the payload in chunks of at most 8 KiB. Before
//! authentication this wrapper follows the same framing (never reading past a frame boundary)
//! and, instead of handing out the payload of a frame over the limit, or the header of a frame
//! past [`super::HANDSHAKE_FRAMES`], returns `Pending` until the gate opens (authenticated) or
//! closes (evicted, shed, or the deadline passed: the read fails and ractor_cluster closes the
//! session).

use super::pending::{GateState, Ticket};
use super::PortLimits;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How far into the current frame the peer is.
#[derive(Debug)]
enum Frame {
    Header { got: usize, bytes: [u8; 8] },
    Payload { len: u64, left: u64 },
}

/// What is still checked before authentication.
struct Guard {
    ticket: Ticket,
    deadline: Pin<Box<Sleep>>,
    frame: Frame,
    frames: u32,
}

/// A read half with the pre-authentication limits.
pub(crate) struct GatedRead<R> {
    inner: R,
    guard: Option<Guard>,
    limits: PortLimits,
    peer: SocketAddr,
}

impl<R> GatedRead<R> {
    /// Wraps `inner`, whose connection from `peer` must authenticate by `deadline`.
    pub(crate) fn new(
        inner: R,
        ticket: Ticket,
        deadline: Instant,
        limits: PortLimits,
        peer: SocketAddr,
    ) -> Self {
        GatedRead {
            inner,
            guard: Some(Guard {
                ticket,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                frame: Frame::Header {
                    got: 0,
                    bytes: [0; 8],
                },
                frames: 0,
            }),
            limits,
            peer,
        }
    }
}

/// The error that ends the session, recorded for the refusal log too.
fn closed(guard: &Guard, peer: SocketAddr, why: String) -> io::Error {
    guard.ticket.record_close(peer.to_string(), why.clone());
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("fleet closed the unauthenticated connection from {peer}: {why}"),
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for GatedRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(guard) = this.guard.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let gate = guard.ticket.gate.clone();
        gate.register(cx.waker());
        match gate.state() {
            GateState::Authenticated => {
                this.guard = None;
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            GateState::Evicted => {
                return Poll::Ready(Err(closed(
                    guard,
                    this.peer,
                    "more connections than --max-pending-handshakes arrived while it was still authenticating (the oldest is closed first)".into(),
                )))
            }
            GateState::Shed => {
                return Poll::Ready(Err(closed(
                    guard,
                    this.peer,
                    "the process ran out of file descriptors (raise `ulimit -n`)".into(),
                )))
            }
            GateState::Pending => {}
        }
        if guard.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed(
                guard,
                this.peer,
                format!(
                    "it did not authenticate within {:?} (--auth-timeout)",
                    this.limits.auth_timeout
                ),
            )));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // How much may be read now without crossing a frame boundary.
        let cap = match &guard.frame {
            Frame::Header { got, .. } => {
                if *got == 0 && guard.frames >= super::HANDSHAKE_FRAMES {
                    return Poll::Pending;
                }
                8 - *got
            }
            Frame::Payload { len, left } => {
                if len == left && *len > this.limits.handshake_frame {
                    return Poll::Pending;
                }
                (*left).min(8192) as usize
            }
        };
        let mut chunk = [0u8; 8192];
        let cap = cap.min(buf.remaining());
        let mut rb = ReadBuf::new(&mut chunk[..cap]);
        match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let got_now = rb.filled();
        let n = got_now.len();
        buf.put_slice(got_now);
        if n == 0 {
            return Poll::Ready(Ok(()));
        }
        guard.frame = match std::mem::replace(&mut guard.frame, Frame::Payload { len: 0, left: 0 })
        {
            Frame::Header { got, mut bytes } => {
                bytes[got..got + n].copy_from_slice(&chunk[..n]);
                if got + n < 8 {
                    Frame::Header {
                        got: got + n,
                        bytes,
                    }
                } else {
                    guard.frames += 1;
                    match u64::from_be_bytes(bytes) {
                        0 => Frame::Header {
                            got: 0,
                            bytes: [0; 8],
                        },
                        len => Frame::Payload { len, left: len },
                    }
                }
            }
            Frame::Payload { len, left } => match left - n as u64 {
                0 => Frame::Header {
                    got: 0,
                    bytes: [0; 8],
                },
                left => Frame::Payload { len, left },
            },
        };
        Poll::Ready(Ok(()))
    }
}

/// A gated connection as ractor_cluster's external transport.
pub(crate) struct GatedConn {
    pub(crate) read: ractor_cluster::BoxRead,
    pub(crate) write: ractor_cluster::BoxWrite,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

impl ractor_cluster::ClusterBidiStream for GatedConn {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        (self.read, self.write)
    }
    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }
    fn local_label(&self) -> Option<String> {
        Some(self.local.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::pending::Pending;
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> PortLimits {
        PortLimits {
            auth_timeout: Duration::from_secs(3600),
            max_pending: 4,
            handshake_frame: 16,
        }
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().expect("an address")
    }

    #[tokio::test]
    async fn small_frames_pass_and_a_big_one_waits_for_authentication() {
        let p = Pending::new(4);
        let (ticket, _) = p.admit(peer().to_string());
        let gate = ticket.gate.clone();
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut r = GatedRead::new(
            rx,
            ticket,
            Instant::now() + Duration::from_secs(3600),
            limits(),
            peer(),
        );
        tx.write_all(&3u64.to_be_bytes()).await.unwrap();
        tx.write_all(b"abc").await.unwrap();
        tx.write_all(&100u64.to_be_bytes()).await.unwrap();
        tx.write_all(&[7u8; 100]).await.unwrap();
        assert_eq!(r.read_u64().await.unwrap(), 3);
        let mut small = [0u8; 3];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"abc");
        assert_eq!(r.read_u64().await.unwrap(), 100);
        let mut big = vec![0u8; 100];
        {
            // Every byte is already in the pipe: only the gate can hold the read back.
            let mut read = std::pin::pin!(r.read_exact(&mut big));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(
                read.as_mut().poll(&mut cx).is_pending(),
                "the big frame is held back"
            );
        }
        p.authenticated(&peer().to_string());
        assert_eq!(gate.state(), GateState::Authenticated);
        r.read_exact(&mut big).await.unwrap();
        assert!(big.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn an_evicted_connection_fails_its_pending_read() {
        let p = Pending::new(1);
        let (ticket, _) = p.admit(peer().to_string());
        let (_tx, rx) = tokio::io::duplex(64);
        let mut r = GatedRead::new(
            rx,
            ticket,
            Instant::now() + Duration::from_secs(3600),
            limits(),
            peer(),
        );
        let read = tokio::spawn(async move { r.read_u64().await });
        tokio::task::yield_now().await;
        let (_other, evicted) = p.admit("127.0.0.1:2".into());
        assert!(evicted.is_some());
        let err = read.await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("--max-pending-handshakes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_fails_at_the_deadline() {
        let p = Pending::new(1);
        let (ticket, _) = p.admit(peer().to_string());
        let (_tx, rx) = tokio::io::duplex(64);
        let mut r = GatedRead::new(
            rx,
            ticket,
            Instant::now() + Duration::from_millis(20),
            limits(),
            peer(),
        );
        let err = r.read_u64().await.unwrap_err();
        assert!(err.to_string().contains("--auth-timeout"), "{err}");
    }
}
