//! Binding a TCP listener with a chosen listen backlog, for every HTTP surface fleet serves.
//!
//! `TcpListener::bind` asks for a backlog of 128: when thousands of agents connect at once
//! (a rollout's burst at the start of a batch) the kernel's accept queue overflows and new
//! connections are dropped or reset, which a client in front of the proxy reports as 502s. The
//! backlog is therefore a setting with a generous default ([`DEFAULT_LISTEN_BACKLOG`]); the
//! kernel still caps it at `net.core.somaxconn`.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Default listen backlog of fleet's HTTP servers (the proxy, `fleet rpc-server`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, like `TcpListener::bind`) and listens with `backlog`.
pub fn bind_with_backlog(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_bound_with_a_backlog_accepts() {
        let l = bind_with_backlog("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        let (c, a) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        assert!(c.is_ok() && a.is_ok());
    }
}
