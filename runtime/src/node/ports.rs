//! The node's port allocator: reservations held until released, never handed out twice.
//!
//! AReaL found ports by binding port 0 and releasing it, which races with every other process
//! on the machine. fleet hands out ports from a configured range that it owns, skips any port
//! that something else is already listening on, and keeps each reservation until it is released
//! (when its worker is deleted). The allocator is owned by the node agent actor, so concurrent
//! requests are serialized by its mailbox.

use fleet_actors::FleetError;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener};

/// A reservation: its id and ports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortLease {
    /// The lease id (release by it).
    pub id: u64,
    /// The ports, distinct.
    pub ports: Vec<u16>,
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
}

impl PortAllocator {
    /// An allocator over `lo..=hi` that skips ports something else listens on.
    pub fn new(lo: u16, hi: u16) -> Self {
        PortAllocator {
            lo,
            hi: hi.max(lo),
            next: lo,
            held: BTreeSet::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            probe: true,
        }
    }

    /// Turns the bind probe off (pure bookkeeping, for tests of the bookkeeping itself).
    pub fn without_probe(mut self) -> Self {
        self.probe = false;
        self
    }

    fn range_len(&self) -> usize {
        (self.hi - self.lo) as usize + 1
    }

    /// Ports held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn usable(&self, port: u16) -> bool {
        !self.held.contains(&port)
            && (!self.probe || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok())
    }

    /// Reserves `count` distinct ports, scanning round-robin from where the last scan stopped
    /// (so a just-released port is not handed straight out again).
    pub fn reserve(&mut self, count: u16) -> Result<PortLease, FleetError> {
        let free_in_range = self.range_len() - self.held.len();
        if count as usize > free_in_range {
            return Err(FleetError::InsufficientResources {
                what: format!("{count} ports"),
                resource: "ports".into(),
                detail: format!(
                    "{} of {} ports in {}..={} are reserved",
                    self.held.len(),
                    self.range_len(),
                    self.lo,
                    self.hi
                ),
            });
        }
        let mut got = Vec::with_capacity(count as usize);
        let mut scanned = 0usize;
        while got.len() < count as usize && scanned < self.range_len() {
            let p = self.next;
            self.next = if p >= self.hi { self.lo } else { p + 1 };
            scanned += 1;
            if self.usable(p) {
                self.held.insert(p);
                got.push(p);
            }
        }
        if got.len() < count as usize {
            for p in &got {
                self.held.remove(p);
            }
            return Err(FleetError::InsufficientResources {
                what: format!("{count} ports"),
                resource: "ports".into(),
                detail: format!(
                    "only {} free ports in {}..={} (others are in use by other processes)",
                    got.len(),
                    self.lo,
                    self.hi
                ),
            });
        }
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(id, got.clone());
        Ok(PortLease { id, ports: got })
    }

    /// Releases a lease; unknown ids are ignored (release is idempotent).
    pub fn release(&mut self, lease: u64) -> usize {
        match self.leases.remove(&lease) {
            Some(ports) => {
                for p in &ports {
                    self.held.remove(p);
                }
                ports.len()
            }
            None => 0,
        }
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
        assert!(err.to_string().contains("ports"), "{err}");
        assert_eq!(a.release(l1.id), 6);
        assert_eq!(a.release(l1.id), 0, "release is idempotent");
        assert_eq!(a.reserve(6).unwrap().ports.len(), 6);
    }

    #[test]
    fn a_port_in_use_by_another_process_is_skipped() {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let busy = l.local_addr().unwrap().port();
        let mut a = PortAllocator::new(busy, busy.saturating_add(3));
        let lease = a.reserve(2).unwrap();
        assert!(!lease.ports.contains(&busy));
    }
}
