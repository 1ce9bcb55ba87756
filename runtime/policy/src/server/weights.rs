//! The weights a server holds: the policy, its version and the hash of the file it came from,
//! which together name it in `system_fingerprint` (`fleet-infer-v<N>-<first 12 hex of the
//! file's SHA-256>`).
//!
//! A load reads the file once to hash it and once through candle's safetensors reader (the
//! files are small: a few hundred kB), builds a new [`Policy`] and only then replaces the
//! current one, so a failed load leaves the server serving what it had. Requests hold an `Arc`
//! of the weights they started with: a load never changes a generation in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{PolicyError, Result};
use crate::model::{ModelConfig, Policy, WEIGHTS_FILE};

/// Loaded weights.
#[derive(Debug)]
pub struct Loaded {
    /// The model.
    pub policy: Policy,
    /// The weight version.
    pub version: u64,
    /// The first 12 hex digits of the file's SHA-256.
    pub hash12: String,
    /// The file.
    pub path: PathBuf,
}

impl Loaded {
    /// `fleet-infer-v<N>-<hash12>`.
    pub fn fingerprint(&self) -> String {
        format!("fleet-infer-v{}-{}", self.version, self.hash12)
    }
}

/// The weights file a `model_path` names: the file itself, or `model.safetensors` inside a
/// directory.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(WEIGHTS_FILE)
    } else {
        path.to_path_buf()
    }
}

/// The version in a file name ending in `-v<N>` before its extension (`weights-v7.safetensors`).
pub fn version_from_name(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let (_, v) = stem.rsplit_once("-v")?;
    v.parse().ok()
}

/// Loads `path` (a file or a model directory) as version `version` of a model of `config`.
pub fn load(config: &ModelConfig, path: &Path, version: u64) -> Result<Arc<Loaded>> {
    let file = resolve(path);
    let bytes = std::fs::read(&file).map_err(PolicyError::io("reading weights", &file))?;
    let digest = Sha256::digest(&bytes);
    let hash12: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let policy = Policy::load(config, &file)?;
    Ok(Arc::new(Loaded {
        policy,
        version,
        hash12,
        path: file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_a_name_ending_in_dash_v_n() {
        assert_eq!(
            version_from_name(Path::new("/x/weights-v7.safetensors")),
            Some(7)
        );
        assert_eq!(version_from_name(Path::new("w-v12")), Some(12));
        assert_eq!(version_from_name(Path::new("model.safetensors")), None);
    }
}
