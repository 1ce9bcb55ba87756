//! The errors of the policy crate: each says what failed and on which file or request.

use std::path::PathBuf;

/// What a policy operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A tensor operation failed (a shape or dtype bug, or an allocation failure).
    #[error("{what}: tensor error: {source}")]
    Tensor {
        /// The operation.
        what: String,
        /// candle's error.
        source: candle_core::Error,
    },
    /// A model directory, config or weights file could not be read or written.
    #[error("{what} {}: {message}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed (and what to do).
        message: String,
    },
    /// An input (a request, a batch, a config) is not valid.
    #[error("{0}")]
    Invalid(String),
}

impl PolicyError {
    /// A tensor error while doing `what`.
    pub fn tensor(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> PolicyError {
        let what = what.into();
        move |source| PolicyError::Tensor { what, source }
    }

    /// An I/O error on `path` while doing `what`.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PolicyError {
        let path = path.into();
        move |e| PolicyError::Io {
            what,
            path,
            message: e.to_string(),
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, PolicyError>;
