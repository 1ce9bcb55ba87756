//! The store's one error type: each variant says what failed, where, and what to do, and maps
//! onto [`FleetError`] (and an HTTP status) so it can cross an engine call or a response.

use super::object::{Checksum, ObjectId};
use fleet_actors::FleetError;

/// What a store operation can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A put or fetch would take the node past its byte budget.
    #[error("the object store of node {node} is full: {what} needs {need} bytes, {used} of the {budget}-byte budget are used ({reserved} reserved by writes in progress); delete objects you no longer need, give them a TTL, or raise the budget (--store-budget / StoreConfig::budget)")]
    Full {
        /// The node.
        node: String,
        /// What asked for room.
        what: String,
        /// Bytes it needs.
        need: u64,
        /// Bytes held by complete objects.
        used: u64,
        /// Bytes reserved by writes not yet complete.
        reserved: u64,
        /// The budget.
        budget: u64,
    },
    /// No such object in this store (never put, deleted, or expired).
    #[error("object {id} is not in the store of node {node} (deleted, expired, or never put there); put it again, or renew its lease before it runs out")]
    NotFound {
        /// The object.
        id: ObjectId,
        /// The node asked.
        node: String,
    },
    /// The bytes that arrived are not the bytes that were put.
    #[error("object {id} from {from} arrived damaged: {detail} (expected {expected_size} bytes, {expected}); nothing was kept; fetch it again")]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// Where it came from.
        from: String,
        /// What differed.
        detail: String,
        /// The size in its reference.
        expected_size: u64,
        /// The checksum in its reference.
        expected: Checksum,
    },
    /// The peer refused our token (401/403).
    #[error("the store at {url} refused this node's token: {detail}; every node must run with the same cluster cookie (--cookie-file / FLEET_COOKIE)")]
    Unauthorized {
        /// The store asked.
        url: String,
        /// What it said.
        detail: String,
    },
    /// The peer could not be reached or the transfer broke off.
    #[error("the store at {url} is unreachable: {detail}; check that its node is up (`fleet status`), then fetch again")]
    Unreachable {
        /// The store asked.
        url: String,
        /// What happened.
        detail: String,
    },
    /// A local file operation failed.
    #[error("{what} failed in the store directory {dir}: {detail}; check that the directory is writable and its file system has room (`df -h`)")]
    Io {
        /// What was being done.
        what: String,
        /// The store directory.
        dir: String,
        /// The OS error.
        detail: String,
    },
    /// The store's HTTP server could not bind its address.
    #[error("the object store could not listen on {addr}: {detail}; {hint}")]
    Bind {
        /// The address it tried.
        addr: String,
        /// The OS error.
        detail: String,
        /// Whether the port was taken (another process listens on it, or a client socket
        /// holds it as its local port).
        in_use: bool,
        /// What to do.
        hint: &'static str,
    },
    /// The request itself is wrong (a bad id, a name with a path in it, ...).
    #[error("bad store request: {what}: {detail}")]
    BadRequest {
        /// What was asked.
        what: String,
        /// Why it is refused.
        detail: String,
    },
    /// The store has been shut down, or there is none for this node in this process.
    #[error("no object store for {what}: {detail}")]
    NoStore {
        /// Who asked.
        what: String,
        /// Why.
        detail: String,
    },
}

impl StoreError {
    /// An [`StoreError::Io`] from an OS error.
    pub fn io(what: impl Into<String>, dir: &std::path::Path, e: std::io::Error) -> Self {
        StoreError::Io {
            what: what.into(),
            dir: dir.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. } | StoreError::Corrupt { .. }
        )
    }

    /// The HTTP status the server answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::Full { .. } => 507,
            StoreError::NotFound { .. } => 404,
            StoreError::Unauthorized { .. } => 401,
            StoreError::BadRequest { .. } => 400,
            StoreError::NoStore { .. } => 503,
            StoreError::Corrupt { .. }
            | StoreError::Unreachable { .. }
            | StoreError::Io { .. }
            | StoreError::Bind { .. } => 500,
        }
    }
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> Self {
        let detail = e.to_string();
        match e {
            StoreError::Full { node, what, .. } => FleetError::InsufficientResources {
                what,
                resource: format!("object store bytes on node {node}"),
                detail,
            },
            StoreError::BadRequest { what, .. } | StoreError::NotFound { id: _, node: what } => {
                FleetError::bad_request(what, detail)
            }
            StoreError::Unreachable { url, .. } | StoreError::Unauthorized { url, .. } => {
                FleetError::Unavailable { what: url, detail }
            }
            StoreError::Corrupt { from, .. } => FleetError::Unavailable { what: from, detail },
            StoreError::NoStore { what, .. } => FleetError::Unavailable { what, detail },
            StoreError::Io { .. } | StoreError::Bind { .. } => FleetError::internal(detail),
        }
    }
}
