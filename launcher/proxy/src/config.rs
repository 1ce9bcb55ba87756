//! The proxy's configuration, and the checks that run before it binds a socket.
//!
//! The checks exist because the proxy hands out session keys that let anyone generate with the
//! policy and write into the training data: bound to a non-loopback address, it refuses an
//! admin key that is empty, well known, or short, instead of trusting the operator to notice.

use std::net::SocketAddr;
use std::time::Duration;

use crate::errors::ProxyError;

/// Admin keys refused on a non-loopback bind, compared case-insensitively: the defaults and
/// examples people paste.
const WELL_KNOWN_KEYS: &[&str] = &[
    "admin",
    "password",
    "changeme",
    "secret",
    "test",
    "fleet",
    "default",
    "token",
    "key",
    "empty",
    "none",
    "null",
    "sk-admin",
    "sk-test",
    "sk-fleet",
    "123456",
    "12345678",
    "letmein",
    "areal-admin-key",
    "admin-key",
];

/// The shortest admin key accepted on a non-loopback bind.
pub const MIN_REMOTE_KEY_LEN: usize = 16;

/// Everything `fleet proxy` and [`super::serve`] need. Build it with [`ProxyConfig::new`] and
/// change the fields you need.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Address to listen on; port 0 picks a free port (read it from the handle).
    pub bind: SocketAddr,
    /// Root URL of the OpenAI-compatible inference server, e.g. `http://127.0.0.1:8000` (a
    /// trailing `/v1` is accepted and ignored).
    pub backend: String,
    /// The admin key; `None` means a random one (see [`super::ProxyHandle::admin_key`]).
    /// An empty (or all-whitespace) key is refused on every address: a key file holding only a
    /// newline, or `FLEET_ADMIN_KEY=`, must not turn authentication off.
    pub admin_key: Option<String>,
    /// Key sent to the backend as `Authorization: Bearer` (vLLM's `--api-key`), if any. Clients'
    /// keys are never forwarded.
    pub backend_api_key: Option<String>,
    /// The policy version before the first `/set_version`.
    pub initial_version: u64,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Most sessions held at once, ended-but-not-exported included (429 above).
    pub max_sessions: usize,
    /// Most turns in one session (400 above).
    pub max_turns_per_session: usize,
    /// A session with no request for this long is ended ("idle_timeout"); an ended session not
    /// exported for this long is forgotten.
    pub session_idle_timeout: Duration,
    /// Deadline for the backend's answer (non-streaming) or for each streamed chunk (504 / an
    /// error event after it).
    pub backend_timeout: Duration,
    /// Deadline for connecting to the backend (502 after it).
    pub backend_connect_timeout: Duration,
    /// Longest an export waits for its session to end (a request may ask for less).
    pub export_timeout: Duration,
    /// Deadline for a client to send its whole request body.
    pub body_read_timeout: Duration,
    /// Ask the backend for token ids with vLLM's `"return_token_ids": true` (turn off for a
    /// backend that rejects unknown fields; the proxy then records what it can and flags it).
    pub request_token_ids: bool,
    /// More inference servers of the same role, after `backend`. With any (or with
    /// `router`), every request goes through the router (`crate::router`).
    pub more_backends: Vec<String>,
    /// Use the router even with one backend (so that `/router/*` can drive it).
    pub router: bool,
    /// Longest a request waits in the router for a server to become available (503 after).
    pub router_wait_timeout: Duration,
    /// Consecutive failures (connect errors, timeouts, 5xx) that open a server's breaker.
    pub breaker_threshold: u32,
    /// The listen backlog (default [`fleet_http::listen::DEFAULT_LISTEN_BACKLOG`]).
    pub listen_backlog: u32,
    /// Most bytes one session records (an estimate of its turns' size); a request past it is
    /// answered 413 `session_byte_limit_reached` (default 256 MiB).
    pub max_session_bytes: usize,
    /// A connection whose writes make no progress for this long (a streaming client that
    /// stopped reading) is closed; its turn is recorded as cancelled (default 60 s).
    pub write_stall_timeout: Duration,
    /// The process's metrics as Prometheus text, served at `GET /metrics` (no key: counters
    /// only); `None` (the default) answers 404 there. `fleet proxy` passes fleet's recorder.
    pub metrics: Option<MetricsText>,
}

/// Renders the process's metrics as Prometheus text.
pub type MetricsText = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("bind", &self.bind)
            .field("backend", &self.backend)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .field(
                "backend_api_key",
                &self.backend_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("initial_version", &self.initial_version)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("max_turns_per_session", &self.max_turns_per_session)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("backend_timeout", &self.backend_timeout)
            .field("export_timeout", &self.export_timeout)
            .field("more_backends", &self.more_backends)
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// A configuration for `backend` on 127.0.0.1 with a free port, a random admin key and the
    /// default limits.
    pub fn new(backend: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            backend: backend.into(),
            admin_key: None,
            backend_api_key: None,
            initial_version: 0,
            max_body_bytes: 8 * 1024 * 1024,
            max_sessions: 1024,
            max_turns_per_session: 512,
            session_idle_timeout: Duration::from_secs(30 * 60),
            backend_timeout: Duration::from_secs(600),
            backend_connect_timeout: Duration::from_secs(5),
            export_timeout: Duration::from_secs(3600),
            body_read_timeout: Duration::from_secs(30),
            request_token_ids: true,
            more_backends: Vec::new(),
            router: false,
            router_wait_timeout: Duration::from_secs(600),
            breaker_threshold: 3,
            listen_backlog: fleet_http::listen::DEFAULT_LISTEN_BACKLOG,
            max_session_bytes: 256 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(60),
            metrics: None,
        }
    }

    /// Whether requests go through the router.
    pub fn uses_router(&self) -> bool {
        self.router || !self.more_backends.is_empty()
    }

    /// Every backend, parsed (the router's servers).
    pub(crate) fn all_backends(&self) -> Result<Vec<BackendUrl>, ProxyError> {
        std::iter::once(&self.backend)
            .chain(self.more_backends.iter())
            .map(|u| BackendUrl::parse(u))
            .collect()
    }

    /// Checks limits and the admin key against the bind address; returns the parsed backend
    /// and the admin key to use (random when none is configured).
    pub(crate) fn validate(&self) -> Result<(BackendUrl, AdminKey), ProxyError> {
        let backend = BackendUrl::parse(&self.backend)?;
        self.all_backends()?;
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_sessions", self.max_sessions),
            ("max_turns_per_session", self.max_turns_per_session),
            ("max_session_bytes", self.max_session_bytes),
        ] {
            if value == 0 {
                return Err(ProxyError::BadConfig(format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("session_idle_timeout", self.session_idle_timeout),
            ("backend_timeout", self.backend_timeout),
            ("backend_connect_timeout", self.backend_connect_timeout),
            ("export_timeout", self.export_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("router_wait_timeout", self.router_wait_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
        ] {
            if value.is_zero() {
                return Err(ProxyError::BadConfig(format!("{name} must be positive")));
            }
        }
        if self.initial_version > i64::MAX as u64 {
            return Err(ProxyError::BadConfig(format!(
                "the initial version must be at most {} (exports carry versions as signed 64-bit numbers)",
                i64::MAX
            )));
        }
        let key = match &self.admin_key {
            None => AdminKey {
                key: random_token(32),
                configured: false,
            },
            Some(k) => {
                if k.trim().is_empty() {
                    return Err(ProxyError::EmptyAdminKey { addr: self.bind });
                }
                if !self.bind.ip().is_loopback() {
                    check_remote_key(self.bind, k)?;
                }
                AdminKey {
                    key: k.clone(),
                    configured: true,
                }
            }
        };
        Ok((backend, key))
    }
}

fn check_remote_key(addr: SocketAddr, key: &str) -> Result<(), ProxyError> {
    let weak = |reason| ProxyError::WeakAdminKey {
        addr,
        reason,
        min: MIN_REMOTE_KEY_LEN,
    };
    let trimmed = key.trim();
    if trimmed.is_empty() {
        return Err(weak("an empty"));
    }
    if WELL_KNOWN_KEYS
        .iter()
        .any(|w| w.eq_ignore_ascii_case(trimmed))
    {
        return Err(weak("a well-known"));
    }
    if trimmed.len() < MIN_REMOTE_KEY_LEN {
        return Err(weak("a short"));
    }
    Ok(())
}

/// The admin key in use and whether it was configured (rather than generated).
#[derive(Clone)]
pub(crate) struct AdminKey {
    pub(crate) key: String,
    pub(crate) configured: bool,
}

/// A backend root URL, checked: `http://host:port` with no path beyond an optional `/v1`.
#[derive(Debug, Clone)]
pub(crate) struct BackendUrl {
    /// `http://host:port`, without a trailing slash.
    pub(crate) root: String,
}

impl BackendUrl {
    pub(crate) fn parse(url: &str) -> Result<BackendUrl, ProxyError> {
        let bad = |reason: &str| ProxyError::BadBackend {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; run the proxy beside the backend and use http",
                ))
            }
            _ => return Err(bad("it must start with http://")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad("it has no host"))?
            .as_str();
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let path = uri.path().trim_end_matches('/');
        if !(path.is_empty() || path == "/v1") {
            return Err(bad("it must not have a path other than /v1"));
        }
        if uri.query().is_some() {
            return Err(bad("it must not have a query"));
        }
        Ok(BackendUrl {
            root: format!("http://{authority}"),
        })
    }
}

/// A random token of `bytes` random bytes, hex-encoded.
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(addr: &str, key: Option<&str>) -> Result<(BackendUrl, AdminKey), ProxyError> {
        let mut c = ProxyConfig::new("http://127.0.0.1:9");
        c.bind = addr.parse().unwrap();
        c.admin_key = key.map(str::to_string);
        c.validate()
    }

    #[test]
    fn weak_admin_keys_are_refused_on_a_non_loopback_bind() {
        for key in ["admin", "ChangeMe", "short-key"] {
            assert!(
                matches!(
                    on("0.0.0.0:0", Some(key)),
                    Err(ProxyError::WeakAdminKey { .. })
                ),
                "{key:?} accepted"
            );
        }
        assert!(on("0.0.0.0:0", Some("a-long-random-key-0123456789")).is_ok());
        assert!(on("0.0.0.0:0", None).is_ok(), "a random key is strong");
    }

    #[test]
    fn an_empty_admin_key_is_refused_on_every_address() {
        for addr in ["127.0.0.1:0", "0.0.0.0:0"] {
            for key in ["", " ", "\n"] {
                assert!(
                    matches!(on(addr, Some(key)), Err(ProxyError::EmptyAdminKey { .. })),
                    "{key:?} accepted on {addr}"
                );
            }
        }
    }

    #[test]
    fn weak_admin_keys_are_allowed_on_loopback() {
        let (_, k) = on("127.0.0.1:0", Some("admin")).unwrap();
        assert!(k.configured);
        let (_, k) = on("127.0.0.1:0", None).unwrap();
        assert!(!k.configured);
        assert_eq!(k.key.len(), 64);
    }

    #[test]
    fn backend_urls_are_checked() {
        assert_eq!(
            BackendUrl::parse("http://127.0.0.1:8000/v1/").unwrap().root,
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            BackendUrl::parse("http://localhost:8000").unwrap().root,
            "http://localhost:8000"
        );
        for bad in [
            "https://x:1",
            "127.0.0.1:8000",
            "http://x:1/api",
            "ftp://x",
            "",
        ] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut c = ProxyConfig::new("http://127.0.0.1:9");
        c.max_sessions = 0;
        assert!(matches!(c.validate(), Err(ProxyError::BadConfig(_))));
    }
}
