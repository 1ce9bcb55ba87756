//! The "weights" the mock serves: a file's BLAKE3 hash and a version number.
//!
//! The mock has no model, so a weights file is only a source of entropy: loading one reads it
//! streamed (a fixed 1 MiB buffer, never the whole file in memory: real checkpoints are GiBs)
//! and hashes it, and the sampler's seed becomes a function of that hash and the request. So
//! the mock's outputs are a deterministic function of the bytes of the file it loaded, and a
//! test can tell which file generated a turn, from its tokens or from the
//! `system_fingerprint` (`fleet-mock-v<N>-<first 12 hex of the hash>`) on every answer.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes read per `read` call while hashing.
const READ_BUF: usize = 1 << 20;

/// What the mock generates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    /// The weights version (`weight_version`, or the file name's `-v<N>`).
    pub version: u64,
    /// BLAKE3 of the file; `None` for the initial weights (no file).
    pub hash: Option<[u8; 32]>,
    /// The file loaded, if any.
    pub path: Option<PathBuf>,
}

impl Weights {
    /// The weights before any file is loaded: version `version`, no hash.
    pub fn initial(version: u64) -> Weights {
        Weights {
            version,
            hash: None,
            path: None,
        }
    }

    /// `fleet-mock-v<N>-<first 12 hex of the hash>`, or `fleet-mock-v<N>-initial`.
    pub fn fingerprint(&self) -> String {
        match &self.hash {
            Some(h) => {
                let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("fleet-mock-v{}-{hex}", self.version)
            }
            None => format!("fleet-mock-v{}-initial", self.version),
        }
    }

    /// The part of the sampler seed that comes from the weights (0 with no file, so a mock
    /// without weights samples exactly as it always did).
    pub fn seed(&self) -> u64 {
        match &self.hash {
            Some(h) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[..8]);
                u64::from_le_bytes(b)
            }
            None => 0,
        }
    }
}

/// Why a weights file could not be loaded (the message of a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be opened or read.
    #[error("cannot read the weights file {path}: {reason}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// No `weight_version` and no `-v<N>` at the end of the file name.
    #[error(
        "no version for the weights file {path}: pass \"weight_version\" or name the file \
         ...-v<N> (e.g. policy-v7.safetensors)"
    )]
    NoVersion {
        /// The path given.
        path: String,
    },
    /// `weight_version` is not a non-negative integer.
    #[error("weight_version {0:?} is not a non-negative integer")]
    BadVersion(String),
}

/// The version in a file name that ends in `-v<N>` before any extension
/// (`policy-v7.safetensors` → 7, `ckpt-v12` → 12).
pub fn version_from_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.split('.').next().unwrap_or(name);
    let (_, n) = stem.rsplit_once("-v")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Parses a `weight_version` given as a string of digits.
pub fn parse_version(v: &str) -> Result<u64, WeightsError> {
    let t = v.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WeightsError::BadVersion(v.to_string()));
    }
    t.parse()
        .map_err(|_| WeightsError::BadVersion(v.to_string()))
}

/// Reads and hashes `path` (blocking; call it off the async threads) with version `version`,
/// or the one in its name.
pub fn load(path: &Path, version: Option<u64>) -> Result<Weights, WeightsError> {
    let shown = path.display().to_string();
    let version = match version.or_else(|| version_from_name(path)) {
        Some(v) => v,
        None => return Err(WeightsError::NoVersion { path: shown }),
    };
    let read_err = |e: std::io::Error| WeightsError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    if file.metadata().map_err(read_err)?.is_dir() {
        return Err(WeightsError::Read {
            path: shown,
            reason: "it is a directory; pass one file".into(),
        });
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(Weights {
        version,
        hash: Some(*hasher.finalize().as_bytes()),
        path: Some(path.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_a_trailing_dash_v_number_before_the_extension() {
        for (name, v) in [
            ("policy-v7.safetensors", Some(7)),
            ("/x/ckpt-v12", Some(12)),
            ("a-v3.tar.gz", Some(3)),
            ("policy-v.bin", None),
            ("policy-v7x.bin", None),
            ("policy.bin", None),
        ] {
            assert_eq!(version_from_name(Path::new(name)), v, "{name}");
        }
        assert_eq!(parse_version("7").unwrap(), 7);
        assert!(parse_version("v7").is_err());
    }

    #[test]
    fn the_fingerprint_names_the_version_and_the_hash() {
        let dir = std::env::temp_dir().join(format!("fleet-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w-v4.bin");
        std::fs::write(&p, b"some weights").unwrap();
        let w = load(&p, None).unwrap();
        let hex = blake3::hash(b"some weights").to_hex().to_string();
        assert_eq!(w.fingerprint(), format!("fleet-mock-v4-{}", &hex[..12]));
        assert_eq!(load(&p, Some(9)).unwrap().version, 9);
        assert_eq!(Weights::initial(0).fingerprint(), "fleet-mock-v0-initial");
        assert!(matches!(
            load(&dir.join("missing-v1.bin"), None),
            Err(WeightsError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
