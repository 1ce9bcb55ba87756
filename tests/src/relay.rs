//! A loopback TCP relay whose traffic can be cut and restored: a network partition between two
//! real processes whose sockets stay open.
//!
//! [`Relay::start`] listens on 127.0.0.1 and forwards every connection to an upstream address.
//! [`Relay::cut`] stops all forwarding, on existing connections and new ones alike, without
//! closing anything: like a blackholed link, bytes (and a closed end) wait until
//! [`Relay::restore`], when they are delivered, as TCP retransmission would after a partition
//! heals. A connection accepted while cut reaches upstream only at the restore, with what its
//! client sent meanwhile, and one whose client closed it meanwhile never does (like a SYN that
//! waited out the partition, or one never answered).
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed at once), one
//! 64 KiB buffer per direction. Dropping the relay closes every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Most connections relayed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A relay from a loopback port to `upstream`; see the module docs.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

/// Waits until the link is open (returns false if the relay is gone).
async fn until_open(open: &mut watch::Receiver<bool>) -> bool {
    open.wait_for(|o| *o).await.is_ok()
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !until_open(&mut open).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        // Held while cut, delivered after the restore.
        if !until_open(&mut open).await {
            return;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// For a connection accepted while the link is cut: what the client sent until the restore
/// (at most 64 KiB), or `None` if it gave up (closed) meanwhile. Such a connection reaches
/// upstream only at the restore, like a connect whose SYN waited out the partition; one the
/// client abandoned never reaches it, like a SYN that was never answered.
async fn before_restore(down: &mut TcpStream, open: &mut watch::Receiver<bool>) -> Option<Vec<u8>> {
    let mut early = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while !*open.borrow() {
        if early.len() >= 64 * 1024 {
            return until_open(open).await.then_some(early);
        }
        tokio::select! {
            r = open.changed() => if r.is_err() { return None },
            n = down.read(&mut buf) => match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => early.extend_from_slice(&buf[..n]),
            },
        }
    }
    Some(early)
}

impl Relay {
    /// Starts relaying connections to `upstream` (`IP:PORT`).
    pub async fn start(upstream: &str) -> std::io::Result<Relay> {
        let upstream: SocketAddr = upstream
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, _) = watch::channel(true);
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let live = Arc::new(AtomicUsize::new(0));
        let open_rx = open.subscribe();
        let tasks2 = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    drop(down);
                    continue;
                }
                live.fetch_add(1, Ordering::SeqCst);
                let mut open = open_rx.clone();
                let live = live.clone();
                let conn = tokio::spawn(async move {
                    let mut down = down;
                    let Some(early) = before_restore(&mut down, &mut open).await else {
                        live.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    if until_open(&mut open).await {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            if up.write_all(&early).await.is_err() {
                                live.fetch_sub(1, Ordering::SeqCst);
                                return;
                            }
                            let _ = down.set_nodelay(true);
                            let _ = up.set_nodelay(true);
                            let (dr, dw) = down.into_split();
                            let (ur, uw) = up.into_split();
                            let a = pump(dr, uw, open.clone());
                            let b = pump(ur, dw, open);
                            tokio::join!(a, b);
                        }
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
                let mut t = tasks2.lock().unwrap_or_else(|p| p.into_inner());
                t.retain(|h| !h.is_finished());
                t.push(conn.abort_handle());
            }
        });
        tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(accept.abort_handle());
        Ok(Relay { addr, open, tasks })
    }

    /// The relay's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stops forwarding in both directions, keeping every connection open.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again, first what waited.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}
