//! How a node's store is set up: where its files live, its budget, how it listens, its token.
//!
//! Defaults: objects live under `/dev/shm/fleet-store-<uid>/<node>/` when `/dev/shm` exists
//! (memory-backed, so a same-node consumer maps pages that are already in memory and a fetch
//! never touches a disk), else under the system temp dir; the budget is 25% of that file
//! system's size, capped at 4 GiB when it is not `/dev/shm`; responses are streamed in 4 MiB chunks.
//!
//! The token: every request to a store carries `Authorization: Bearer <token>`, where the
//! token is SHA-256 over a fixed label and the cluster cookie. Every node of a cluster has the
//! cookie, so every node computes the same token without an extra exchange; a process without
//! the cookie cannot compute it and gets 401, and the cookie itself never goes over the wire.
//! (Without TLS the token travels in clear text, like everything else on a cleartext cluster:
//! run the store on a trusted network, as the cluster itself.)

use sha2::Digest;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The default chunk size of a streamed response.
pub const DEFAULT_CHUNK: usize = 4 << 20;

/// The budget cap when objects are not on `/dev/shm`.
pub const DEFAULT_BUDGET_CAP: u64 = 4 << 30;

/// A node store's settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The directory that holds one sub-directory per node (default: [`default_root`]).
    pub root: Option<PathBuf>,
    /// The byte budget (default: [`default_budget`] of the root).
    pub budget: Option<u64>,
    /// The address the HTTP server binds.
    pub listen_ip: IpAddr,
    /// The host put into object URLs (default: `listen_ip`, or 127.0.0.1 when that is
    /// unspecified).
    pub advertise_host: Option<String>,
    /// A fixed port (default: one from the node's port allocator, or any free port).
    pub port: Option<u16>,
    /// The bearer token ([`token_from_cookie`]).
    pub token: String,
    /// Chunk size of streamed responses (bytes).
    pub chunk: usize,
}

impl StoreConfig {
    /// Defaults for a cluster with this cookie, listening on `listen_ip`.
    pub fn new(cookie: &str, listen_ip: IpAddr) -> Self {
        StoreConfig {
            root: None,
            budget: None,
            listen_ip,
            advertise_host: None,
            port: None,
            token: token_from_cookie(cookie),
            chunk: DEFAULT_CHUNK,
        }
    }

    /// The root in force.
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(default_root)
    }

    /// The host that goes into URLs.
    pub fn host(&self) -> String {
        match &self.advertise_host {
            Some(h) => h.clone(),
            None if self.listen_ip.is_unspecified() => "127.0.0.1".into(),
            None => match self.listen_ip {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            },
        }
    }
}

/// The token every store of a cluster with `cookie` expects.
pub fn token_from_cookie(cookie: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"fleet object store token v1\0");
    h.update(cookie.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `/dev/shm/fleet-store-<uid>` when `/dev/shm` is a directory, else
/// `<temp dir>/fleet-store-<uid>`.
pub fn default_root() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("fleet-store-{uid}"))
}

/// 25% of the size of the file system that holds `dir` (or its nearest existing parent),
/// capped at [`DEFAULT_BUDGET_CAP`] unless it is under `/dev/shm`; the cap when the size is
/// unknown.
pub fn default_budget(dir: &Path) -> u64 {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => return DEFAULT_BUDGET_CAP,
        }
    }
    let Some(total) = fs_size(probe) else {
        return DEFAULT_BUDGET_CAP;
    };
    let quarter = total / 4;
    if dir.starts_with("/dev/shm") {
        quarter
    } else {
        quarter.min(DEFAULT_BUDGET_CAP)
    }
}

fn fs_size(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer for the call.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return None;
    }
    Some((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

/// Parses a byte size: `1073741824`, `512MiB`, `4GiB`, `100KiB`, `2GB` (powers of 1000), `1G`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4GiB or 1073741824"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    Ok((n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_depends_on_the_cookie_and_is_not_the_cookie() {
        let a = token_from_cookie("one");
        assert_eq!(a, token_from_cookie("one"));
        assert_ne!(a, token_from_cookie("two"));
        assert!(!a.contains("one") && a.len() == 64);
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn the_default_budget_is_a_quarter_of_the_file_system_and_capped_off_shm() {
        let b = default_budget(&std::env::temp_dir().join("fleet-store-none/x"));
        assert!(b > 0 && b <= DEFAULT_BUDGET_CAP, "{b}");
    }
}
