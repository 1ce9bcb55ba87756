//! The node's port allocator: reservations held until released, never handed out twice on
//! one host.
//!
//! AReaL found ports by binding port 0 and releasing it, which races with every other process
//! on the machine. fleet hands out ports from a configured range, and a port is reserved only
//! after it is
//!
//! 1. not held by another reservation of this allocator,
//! 2. **claimed host-wide**: a lock on byte `port` of the per-user lock file
//!    `/tmp/fleet-ports-<uid>/ports.lock` (an open-file-description lock, `F_OFD_SETLK`), so two
//!    fleet nodes on one host (a head and a node, `fleet run --listen` and `fleet node`, tests
//!    running in parallel) never hand out the same port, even with the same range. The lock is
//!    held while the reservation lives and released with it; the kernel drops it when the process
//!    dies, so a killed node leaks no claims. One descriptor serves every port of a node;
//! 3. not listened on by anything else (a bind probe).
//!
//! The scan is bounded by the size of the range. The allocator is owned by the node agent
//! actor, so requests to one node are serialized by its mailbox; the host-wide claims keep
//! different nodes (in one process or many) apart.

use fleet_actors::FleetError;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The worker port range a node uses unless told otherwise: below the kernel's usual
/// ephemeral range (32768-60999 on Linux), so client sockets do not take workers' ports.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20000, 29999);

/// Where Linux keeps the ephemeral (client) port range.
pub const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// A reservation: its id and ports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortLease {
    /// The lease id (release by it).
    pub id: u64,
    /// The ports, distinct.
    pub ports: Vec<u16>,
}

/// Host-wide claims: byte locks on one per-user lock file.
#[derive(Debug)]
struct HostClaims {
    file: File,
    path: PathBuf,
}

/// What a claim attempt found.
enum Claim {
    Claimed,
    HeldElsewhere,
}

impl HostClaims {
    /// The lock directory of this user: `/tmp/fleet-ports-<uid>`. Fixed (not `$TMPDIR` or
    /// `$XDG_RUNTIME_DIR`), so every fleet process of the user finds the same file whatever its
    /// environment.
    fn default_dir() -> PathBuf {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        PathBuf::from(format!("/tmp/fleet-ports-{uid}"))
    }

    fn open(dir: &Path) -> io::Result<HostClaims> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(dir)?;
        // SAFETY: as above.
        let uid = unsafe { libc::getuid() };
        if !meta.is_dir() || meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("it is not a directory owned by uid {uid}"),
            ));
        }
        let path = dir.join("ports.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        Ok(HostClaims { file, path })
    }

    fn lock(&self, port: u16, kind: libc::c_int) -> io::Result<()> {
        // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = libc::off_t::from(port);
        fl.l_len = 1;
        fl.l_pid = 0; // required by F_OFD_SETLK
                      // SAFETY: the descriptor is open for the lifetime of `self`, and `fl` is a valid,
                      // initialized struct that outlives the call.
        let r = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn try_claim(&self, port: u16) -> io::Result<Claim> {
        match self.lock(port, libc::F_WRLCK) {
            Ok(()) => Ok(Claim::Claimed),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                Ok(Claim::HeldElsewhere)
            }
            Err(e) => Err(e),
        }
    }

    fn release(&self, port: u16) {
        if let Err(e) = self.lock(port, libc::F_UNLCK) {
            tracing::warn!(port, lock_file = %self.path.display(), error = %e, "cannot release the host-wide claim on a port; it is released when this process exits");
        }
    }
}

/// Hands out ports from `lo..=hi`.
#[derive(Debug)]
pub struct PortAllocator {
    lo: u16,
    hi: u16,
    next: u16,
    held: BTreeSet<u16>,
    leases: BTreeMap<u64, Vec<u16>>,
    next_lease: u64,
    probe: bool,
    claims: Option<HostClaims>,
}

impl PortAllocator {
    /// An allocator over `lo..=hi` that claims each port host-wide before handing it out and
    /// skips ports something else listens on. Warns when the range overlaps the kernel's
    /// ephemeral range, and when host-wide claims are unavailable (then only the bind probe
    /// protects against other nodes of this host).
    pub fn new(lo: u16, hi: u16) -> Self {
        let hi = hi.max(lo);
        warn_if_ephemeral(lo, hi, Path::new(EPHEMERAL_RANGE_FILE));
        let dir = HostClaims::default_dir();
        let claims = match HostClaims::open(&dir) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(lock_dir = %dir.display(), error = %e, "cannot open the host-wide port lock file; two fleet nodes on this host may hand out the same port: fix the directory (it must be yours, mode 0700) or give each node its own --port-range");
                None
            }
        };
        PortAllocator {
            lo,
            hi,
            next: lo,
            held: BTreeSet::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            probe: true,
            claims,
        }
    }

    /// Pure bookkeeping: no bind probe and no host-wide claims (for tests of the bookkeeping
    /// itself).
    pub fn without_probe(mut self) -> Self {
        self.probe = false;
        self.claims = None;
        self
    }

    fn range_len(&self) -> usize {
        (self.hi - self.lo) as usize + 1
    }

    /// Ports held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn bind_free(&self, port: u16) -> bool {
        !self.probe || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
    }

    fn unclaim(&self, port: u16) {
        if let Some(c) = &self.claims {
            c.release(port);
        }
    }

    fn shortage(&self, count: u16, got: usize, elsewhere: usize, in_use: usize) -> FleetError {
        FleetError::InsufficientResources {
            what: format!("{count} ports"),
            resource: "ports".into(),
            detail: format!(
                "found {got} of {count} in the range {lo}-{hi} ({len} ports): {held} held by this \
                 node, {elsewhere} claimed by other fleet processes on this host, {in_use} in use \
                 by other programs; nodes on one host share ports from overlapping ranges: give \
                 this node a larger or separate range with --port-range LO-HI \
                 (ClusterBuilder::port_range)",
                lo = self.lo,
                hi = self.hi,
                len = self.range_len(),
                held = self.held.len(),
            ),
        }
    }

    /// Reserves `count` distinct ports, scanning round-robin from where the last scan stopped
    /// (so a just-released port is not handed straight out again), at most once over the
    /// range.
    pub fn reserve(&mut self, count: u16) -> Result<PortLease, FleetError> {
        if count as usize > self.range_len() - self.held.len() {
            return Err(self.shortage(count, 0, 0, 0));
        }
        let mut got = Vec::with_capacity(count as usize);
        let (mut elsewhere, mut in_use) = (0usize, 0usize);
        let mut scanned = 0usize;
        while got.len() < count as usize && scanned < self.range_len() {
            let p = self.next;
            self.next = if p >= self.hi { self.lo } else { p + 1 };
            scanned += 1;
            if self.held.contains(&p) {
                continue;
            }
            if let Some(c) = &self.claims {
                match c.try_claim(p) {
                    Ok(Claim::Claimed) => {}
                    Ok(Claim::HeldElsewhere) => {
                        elsewhere += 1;
                        continue;
                    }
                    Err(e) => {
                        for q in &got {
                            self.held.remove(q);
                            self.unclaim(*q);
                        }
                        return Err(FleetError::Unavailable {
                            what: format!("the host-wide claim on port {p}"),
                            detail: format!(
                                "locking it in {}: {e}; check that the file is yours and \
                                 writable, or delete its directory",
                                c.path.display()
                            ),
                        });
                    }
                }
            }
            if !self.bind_free(p) {
                self.unclaim(p);
                in_use += 1;
                continue;
            }
            self.held.insert(p);
            got.push(p);
        }
        if got.len() < count as usize {
            for p in &got {
                self.held.remove(p);
            }
            let err = self.shortage(count, got.len(), elsewhere, in_use);
            for p in &got {
                self.unclaim(*p);
            }
            return Err(err);
        }
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(id, got.clone());
        Ok(PortLease { id, ports: got })
    }

    /// Releases a lease (and its host-wide claims); unknown ids are ignored (release is
    /// idempotent).
    pub fn release(&mut self, lease: u64) -> usize {
        match self.leases.remove(&lease) {
            Some(ports) => {
                for p in &ports {
                    self.held.remove(p);
                    self.unclaim(*p);
                }
                ports.len()
            }
            None => 0,
        }
    }
}

/// Parses the contents of [`EPHEMERAL_RANGE_FILE`] (`"32768\t60999\n"`).
pub fn parse_ephemeral_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// The warning for a worker port range `lo..=hi` that overlaps the ephemeral range in `file`,
/// or `None` (no overlap, or the file is missing or unreadable).
pub fn ephemeral_overlap_warning(lo: u16, hi: u16, file: &Path) -> Option<String> {
    let (elo, ehi) = parse_ephemeral_range(&std::fs::read_to_string(file).ok()?)?;
    if hi < elo || lo > ehi {
        return None;
    }
    Some(format!(
        "the worker port range {lo}-{hi} overlaps the kernel's ephemeral port range {elo}-{ehi} \
         ({}): outgoing connections can take a worker's port; give this node a range outside \
         it with --port-range LO-HI (default {}-{})",
        file.display(),
        DEFAULT_PORT_RANGE.0,
        DEFAULT_PORT_RANGE.1
    ))
}

fn warn_if_ephemeral(lo: u16, hi: u16, file: &Path) {
    if let Some(w) = ephemeral_overlap_warning(lo, hi, file) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_distinct_until_released() {
        let mut a = PortAllocator::new(30000, 30009).without_probe();
        let l1 = a.reserve(6).unwrap();
        let l2 = a.reserve(4).unwrap();
        let all: BTreeSet<u16> = l1.ports.iter().chain(&l2.ports).copied().collect();
        assert_eq!(all.len(), 10);
        let err = a.reserve(1).unwrap_err();
        assert!(err.to_string().contains("--port-range"), "{err}");
        assert_eq!(a.release(l1.id), 6);
        assert_eq!(a.release(l1.id), 0, "release is idempotent");
        assert_eq!(a.reserve(6).unwrap().ports.len(), 6);
    }

    #[test]
    fn a_port_in_use_by_another_process_is_skipped() {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let busy = l.local_addr().unwrap().port();
        // A wide range: the ports after `busy` are in the ephemeral range, where other
        // processes' client sockets may hold a few of them.
        let mut a = PortAllocator::new(busy, busy.saturating_add(64));
        let lease = a.reserve(2).unwrap();
        assert!(!lease.ports.contains(&busy));
    }

    #[test]
    fn two_allocators_with_the_same_range_share_it_and_a_release_frees_the_claim() {
        // Each allocator has its own open file description, so they exclude each other like
        // two processes do.
        let (lo, hi) = (29990, 29993);
        let mut a = PortAllocator::new(lo, hi);
        let mut b = PortAllocator::new(lo, hi);
        let la = a.reserve(2).unwrap();
        let lb = b.reserve(2).unwrap();
        let all: BTreeSet<u16> = la.ports.iter().chain(&lb.ports).copied().collect();
        assert_eq!(all.len(), 4, "{la:?} {lb:?}");
        let err = b.reserve(1).unwrap_err().to_string();
        assert!(
            err.contains("2 claimed by other fleet processes") && err.contains("--port-range"),
            "{err}"
        );
        a.release(la.id);
        let again = b.reserve(2).unwrap();
        assert_eq!(
            again.ports.iter().copied().collect::<BTreeSet<_>>(),
            la.ports.iter().copied().collect::<BTreeSet<_>>()
        );
    }

    #[test]
    fn the_ephemeral_range_is_parsed_and_an_overlap_is_named() {
        assert_eq!(
            parse_ephemeral_range("32768\t60999\n"),
            Some((32768, 60999))
        );
        assert_eq!(parse_ephemeral_range("junk"), None);
        let dir = std::env::temp_dir().join(format!("fleet-ports-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("range");
        std::fs::write(&f, "32768\t60999\n").unwrap();
        let w = ephemeral_overlap_warning(40000, 40999, &f).unwrap();
        assert!(
            w.contains("40000-40999") && w.contains("32768-60999") && w.contains("--port-range"),
            "{w}"
        );
        assert_eq!(ephemeral_overlap_warning(20000, 29999, &f), None);
        assert!(ephemeral_overlap_warning(60999, 61000, &f).is_some());
        assert_eq!(
            ephemeral_overlap_warning(20000, 29999, &dir.join("none")),
            None
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
