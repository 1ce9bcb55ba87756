//! The cluster port: fleet's own listener in front of ractor_cluster, so that peers that have
//! not authenticated cannot lock real nodes out, hold large buffers, or make the process spin.
//!
//! ractor_cluster 0.16.5 gives an unauthenticated connection a full session (actors, a reader
//! that grows a buffer up to the 16 MiB frame limit as bytes arrive) with no deadline, and its
//! listener retries a failed `accept` at once and logs each failure, so a process out of file
//! descriptors spins and writes tens of MB of log per second. Here fleet accepts every
//! connection itself ([`accept`]) and hands ractor_cluster a wrapped stream
//! ([`gated::GatedRead`]) that enforces, until the session has authenticated:
//!
//! * a deadline ([`PortLimits::auth_timeout`]) covering the TLS handshake and the cookie
//!   challenge: a connection that has not authenticated by then is closed;
//! * small frames: the handshake needs a few frames of well under 1 KiB; a frame longer than
//!   [`PortLimits::handshake_frame`], or more than [`HANDSHAKE_FRAMES`] frames, is not read until
//!   the session authenticates (so an unauthenticated peer's partial 16 MiB frame costs nothing;
//!   a real peer's first messages after authentication wait only until fleet sees the
//!   authentication, microseconds later);
//! * a bounded number of pending handshakes ([`PortLimits::max_pending`]): when one more
//!   arrives, the oldest pending one is closed, so connections that never authenticate cannot
//!   keep newer, real ones out;
//! * out of file descriptors, `accept` backs off (10 ms doubling to 1 s), closes the oldest
//!   pending handshake to free one, and logs at most one line per 10 s.
//!
//! Memory held by unauthenticated peers is therefore at most `max_pending` × (one frame of at
//! most `handshake_frame` bytes, twice that with `Vec` growth, plus the session's few actors),
//! about 16 MiB with the defaults. After authentication the wrapper passes reads straight
//! through (one branch on a local flag).
//!
//! ractor_cluster always starts a listener of its own; fleet points it at a free loopback port
//! with a TLS acceptor that refuses every handshake, so fleet's gated port is the only way in.

pub(crate) mod accept;
pub(crate) mod gated;
pub(crate) mod pending;
pub(crate) mod throttle;

use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// Frames an unauthenticated peer may send before fleet stops reading (the handshake uses two
/// or three).
pub const HANDSHAKE_FRAMES: u32 = 8;

/// Limits on connections to the cluster port that have not authenticated yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortLimits {
    /// A connection must finish the TLS handshake and the cookie challenge within this long of
    /// being accepted, or it is closed (`--auth-timeout`, default 10 s).
    pub auth_timeout: Duration,
    /// At most this many connections may be authenticating at once; one more closes the oldest
    /// (`--max-pending-handshakes`, default 128).
    pub max_pending: usize,
    /// Largest frame read from a peer before it has authenticated (default 64 KiB; the
    /// handshake's frames are under 1 KiB).
    pub handshake_frame: u64,
}

impl Default for PortLimits {
    fn default() -> Self {
        PortLimits {
            auth_timeout: Duration::from_secs(10),
            max_pending: 128,
            handshake_frame: 64 * 1024,
        }
    }
}

/// A certificate resolver with no certificate: every TLS handshake it serves fails.
#[derive(Debug)]
struct NoCertificate;

impl rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

/// The encryption mode for ractor_cluster's own (unused) listener: TLS that refuses everyone.
///
/// Uses the process's default crypto provider, else aws-lc-rs (the one tokio-rustls brings),
/// so it works whether or not the process configured TLS.
pub(crate) fn refuse_all() -> Result<ractor_cluster::IncomingEncryptionMode, rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    Ok(ractor_cluster::IncomingEncryptionMode::Tls(
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    ))
}
