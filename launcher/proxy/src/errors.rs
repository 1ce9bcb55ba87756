//! The proxy's errors: what a client is told over HTTP ([`ApiError`]) and what stops the proxy
//! from starting ([`ProxyError`]).
//!
//! Every HTTP error has the one JSON shape OpenAI clients expect,
//! `{"error": {"type": "...", "message": "..."}}`, so an agent's OpenAI library raises a
//! readable exception instead of failing to parse. The status codes are chosen with those
//! libraries' retry rules in mind: they retry 408, 409, 429 and 5xx, so a refusal that retrying
//! cannot fix (a full session) is a 400, never a 429.

use std::time::Duration;

use hyper::{Response, StatusCode};
use serde_json::json;

use fleet_http::body::{json_response, Body};

/// Response header set on an error answer that is the backend's own, passed on unchanged.
pub const BACKEND_ERROR_HEADER: &str = "x-fleet-backend-error";

/// An error answered to an HTTP client, with its status and OpenAI-style type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not the JSON the route needs.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No key in `Authorization: Bearer` or `x-api-key`.
    #[error("missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    MissingKey,
    /// A key was sent but it is neither the admin key nor a live session's key.
    #[error("invalid API key: it is neither the admin key nor the key of a live session")]
    WrongKey,
    /// A session key on a route that needs the admin key.
    #[error("{route} needs the admin key; a session key cannot call it")]
    NeedsAdmin {
        /// The route called.
        route: &'static str,
    },
    /// The admin key on a route that acts for one session.
    #[error("{route} needs a session key (from POST /rl/start_session), not the admin key")]
    NeedsSession {
        /// The route called.
        route: &'static str,
    },
    /// The session id is not known: never started, already exported, or expired.
    #[error("unknown session {0}: it was never started, was already exported, or expired")]
    UnknownSession(String),
    /// `set_reward` named an interaction the session does not have.
    #[error("unknown interaction {interaction} in session {session}")]
    UnknownInteraction {
        /// The session.
        session: String,
        /// The interaction id sent.
        interaction: String,
    },
    /// `set_reward` without an id in a session that has no turn yet.
    #[error("session {0} has no turn to reward yet")]
    NoTurnYet(String),
    /// No such route.
    #[error("no route {method} {path}; see the proxy's module docs for the routes")]
    NoRoute {
        /// The method sent.
        method: String,
        /// The path sent.
        path: String,
    },
    /// The session was ended (by the agent, by idling, or by the controller); start a new one.
    #[error("session {0} has ended; ask the controller for a new session")]
    SessionEnded(String),
    /// The request body is larger than the proxy's limit.
    #[error(
        "request body larger than the limit of {limit} bytes (`fleet proxy --max-body-bytes`)"
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body did not arrive in time, or the connection broke while sending it.
    #[error("request body incomplete: {0}")]
    BodyIncomplete(String),
    /// `start_session` without capacity granted by the controller.
    #[error("no capacity: the controller has not granted a session (POST /grant_capacity)")]
    NoCapacity,
    /// The proxy holds as many sessions as it may.
    #[error("the proxy already holds its maximum of {max} sessions; export or end some first")]
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// The session holds as many turns as it may.
    #[error("session {session} reached its limit of {max} turns; end it and start a new one")]
    TooManyTurns {
        /// The session.
        session: String,
        /// The limit.
        max: usize,
    },
    /// The session has recorded as many bytes as it may.
    #[error("session {session} has recorded {recorded} bytes, reaching its limit of {limit} bytes (`fleet proxy --max-session-bytes`); end and export it, and start a new one")]
    SessionTooLarge {
        /// The session.
        session: String,
        /// Bytes recorded so far (an estimate of the turns' size in memory).
        recorded: usize,
        /// The limit.
        limit: usize,
    },
    /// The backend could not be reached or broke the connection.
    #[error("inference backend {backend} unreachable: {detail}")]
    BackendUnreachable {
        /// The backend's URL.
        backend: String,
        /// What the connection attempt said.
        detail: String,
    },
    /// The backend answered with an error status; 4xx is passed on, 5xx becomes 502.
    #[error("inference backend answered {status}: {body}")]
    BackendStatus {
        /// The backend's status.
        status: StatusCode,
        /// The start of the backend's body.
        body: String,
    },
    /// The backend refused the request with a 4xx and a JSON body: the body is passed on to the
    /// agent byte for byte with the backend's status, so `error.code` (e.g.
    /// `context_length_exceeded`), `type`, `param` and the message reach its OpenAI library.
    #[error(
        "inference backend answered {status}: {}",
        String::from_utf8_lossy(body)
    )]
    BackendRejected {
        /// The backend's status (4xx).
        status: StatusCode,
        /// The backend's whole error body.
        body: bytes::Bytes,
    },
    /// The backend answered something that is not the JSON an OpenAI server sends.
    #[error("inference backend sent an invalid response: {0}")]
    BackendInvalid(String),
    /// The backend did not answer within the deadline.
    #[error("inference backend did not answer within {0:?}")]
    BackendTimeout(Duration),
    /// The router found no server to take the request within the request's deadline.
    #[error("no inference server available after waiting {waited:?}: {servers}; restore or resume a server (POST /router/restore, /router/resume_all) or lower /router/min_version")]
    NoServerAvailable {
        /// How long the request waited.
        waited: Duration,
        /// Each server's state.
        servers: String,
    },
    /// A `/router/*` route named a server the router does not have.
    #[error("the router has no server {url}; its servers: {known}")]
    UnknownServer {
        /// The URL given.
        url: String,
        /// The router's servers.
        known: String,
    },
    /// `export_trajectories` waited its whole deadline and the session is still running.
    #[error("session {session} still running after waiting {waited:?}; export again later")]
    ExportTimeout {
        /// The session.
        session: String,
        /// How long the export waited.
        waited: Duration,
    },
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest(_) | NoTurnYet(_) | TooManyTurns { .. } | BodyIncomplete(_) => {
                StatusCode::BAD_REQUEST
            }
            MissingKey | WrongKey => StatusCode::UNAUTHORIZED,
            NeedsAdmin { .. } | NeedsSession { .. } => StatusCode::FORBIDDEN,
            UnknownSession(_) | UnknownInteraction { .. } | NoRoute { .. } => StatusCode::NOT_FOUND,
            UnknownServer { .. } => StatusCode::NOT_FOUND,
            NoServerAvailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SessionEnded(_) => StatusCode::GONE,
            BodyTooLarge { .. } | SessionTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            NoCapacity | TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
            BackendUnreachable { .. } | BackendInvalid(_) => StatusCode::BAD_GATEWAY,
            BackendStatus { status, .. } if status.is_client_error() => *status,
            BackendRejected { status, .. } => *status,
            BackendStatus { .. } => StatusCode::BAD_GATEWAY,
            BackendTimeout(_) | ExportTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The OpenAI-style `error.type`.
    pub fn kind(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest(_) | BodyIncomplete(_) | NoTurnYet(_) => "invalid_request_error",
            MissingKey | WrongKey => "authentication_error",
            NeedsAdmin { .. } | NeedsSession { .. } => "permission_error",
            UnknownSession(_) | UnknownInteraction { .. } | NoRoute { .. } => "not_found_error",
            UnknownServer { .. } => "not_found_error",
            NoServerAvailable { .. } => "no_server_available",
            SessionEnded(_) => "session_ended",
            BodyTooLarge { .. } => "request_too_large",
            NoCapacity => "no_capacity",
            TooManySessions { .. } => "too_many_sessions",
            TooManyTurns { .. } => "turn_limit_reached",
            SessionTooLarge { .. } => "session_byte_limit_reached",
            BackendUnreachable { .. }
            | BackendStatus { .. }
            | BackendRejected { .. }
            | BackendInvalid(_) => "backend_error",
            BackendTimeout(_) => "backend_timeout",
            ExportTimeout { .. } => "export_timeout",
        }
    }

    /// The error as a JSON value of the one shape.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {"type": self.kind(), "message": self.to_string()}})
    }

    /// The error as an HTTP response.
    pub fn into_response(self) -> Response<Body> {
        match self {
            ApiError::BackendRejected { status, body } => {
                let mut r = fleet_http::body::json_bytes_response(status, body);
                r.headers_mut().insert(
                    BACKEND_ERROR_HEADER,
                    hyper::header::HeaderValue::from_static("1"),
                );
                r
            }
            e => json_response(e.status(), &e.to_json()),
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The backend URL is not `http://host:port[/]`.
    #[error("invalid backend URL {url:?}: {reason}; pass the inference server's root, like http://127.0.0.1:8000")]
    BadBackend {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The admin key would let anyone on the network in.
    #[error("refusing to bind {addr} with {reason} admin key; set a random key of at least {min} characters with --admin-key-file or FLEET_ADMIN_KEY, or bind 127.0.0.1")]
    WeakAdminKey {
        /// The bind address.
        addr: std::net::SocketAddr,
        /// "an empty", "a well-known" or "a short".
        reason: &'static str,
        /// The minimum length on a non-loopback bind.
        min: usize,
    },
    /// The admin key is empty (a key file holding only a newline, `FLEET_ADMIN_KEY=`).
    #[error("refusing to serve on {addr} with an empty admin key (an empty --admin-key-file or FLEET_ADMIN_KEY): it would turn admin authentication off; use a random key (`openssl rand -hex 32 > admin.key`, then --admin-key-file admin.key), or give none to get a random one (admin routes are then locked)")]
    EmptyAdminKey {
        /// The bind address.
        addr: std::net::SocketAddr,
    },
    /// A limit was configured as zero.
    #[error("invalid configuration: {0}")]
    BadConfig(String),
    /// The admin key file could not be read.
    #[error("cannot read the admin key file {path}: {source}")]
    KeyFile {
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another port or use --port 0")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}
