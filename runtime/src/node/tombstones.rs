//! Failures of workers that failed for good, kept by the node agent so that calls still
//! reaching the node for them get the failure instead of "not found".
//!
//! The scheduler keeps a failed worker, with its error, until it is deleted, and answers most
//! calls itself; the agent's copy only covers calls already on their way. It is therefore
//! bounded rather than kept until a `Stop` that may never come: an entry lives for [`TTL`], and
//! at most [`CAP`] are kept (the oldest go first).

use fleet_actors::{FleetError, WorkerId};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a failure is remembered.
pub const TTL: Duration = Duration::from_secs(3600);
/// How many failures are remembered at most.
pub const CAP: usize = 4096;

/// The failures, with their insertion order for pruning.
#[derive(Default)]
pub struct Tombstones {
    by_worker: HashMap<WorkerId, (FleetError, Instant, u64)>,
    order: VecDeque<(WorkerId, u64)>,
    next: u64,
    ttl: Option<Duration>,
    cap: Option<usize>,
}

impl Tombstones {
    /// Empty, with [`TTL`] and [`CAP`].
    pub fn new() -> Tombstones {
        Tombstones::default()
    }

    #[cfg(test)]
    fn with_limits(ttl: Duration, cap: usize) -> Tombstones {
        Tombstones {
            ttl: Some(ttl),
            cap: Some(cap),
            ..Tombstones::default()
        }
    }

    fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(TTL)
    }

    /// Remembers `worker`'s failure (replacing an earlier one), then prunes.
    pub fn insert(&mut self, worker: WorkerId, error: FleetError, now: Instant) {
        let seq = self.next;
        self.next += 1;
        self.by_worker.insert(worker.clone(), (error, now, seq));
        self.order.push_back((worker, seq));
        self.prune(now);
    }

    /// The failure of `worker`, unless forgotten or expired.
    pub fn get(&self, worker: &WorkerId, now: Instant) -> Option<&FleetError> {
        self.by_worker
            .get(worker)
            .filter(|(_, at, _)| now.saturating_duration_since(*at) < self.ttl())
            .map(|(e, _, _)| e)
    }

    /// Forgets `worker`'s failure.
    pub fn remove(&mut self, worker: &WorkerId) {
        self.by_worker.remove(worker);
    }

    /// Failures remembered.
    pub fn len(&self) -> usize {
        self.by_worker.len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_worker.is_empty()
    }

    /// Drops expired entries and the oldest beyond the cap; stale order entries (replaced or
    /// removed workers) go on the way.
    fn prune(&mut self, now: Instant) {
        let (ttl, cap) = (self.ttl(), self.cap.unwrap_or(CAP));
        while let Some((worker, seq)) = self.order.front() {
            let live = self.by_worker.get(worker).filter(|(_, _, s)| s == seq);
            let drop_it = match live {
                None => true,
                Some((_, at, _)) => {
                    self.by_worker.len() > cap || now.saturating_duration_since(*at) >= ttl
                }
            };
            if !drop_it {
                break;
            }
            if live.is_some() {
                self.by_worker.remove(worker);
            }
            self.order.pop_front();
        }
        // Entries removed out of order leave stale ones behind: keep the queue bounded too.
        if self.order.len() > 2 * cap.max(1) {
            let map = &self.by_worker;
            self.order
                .retain(|(w, s)| map.get(w).is_some_and(|(_, _, live)| live == s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(i: u32) -> FleetError {
        FleetError::internal(format!("failure {i}"))
    }

    #[test]
    fn the_oldest_failures_go_beyond_the_cap() {
        let mut t = Tombstones::with_limits(TTL, 3);
        let now = Instant::now();
        for i in 0..10 {
            t.insert(WorkerId::new("w", i), err(i), now);
        }
        assert_eq!(t.len(), 3);
        assert!(t.get(&WorkerId::new("w", 6), now).is_none());
        for i in 7..10 {
            assert!(t.get(&WorkerId::new("w", i), now).is_some(), "{i}");
        }
    }

    #[test]
    fn failures_expire_after_the_ttl() {
        let mut t = Tombstones::with_limits(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        t.insert(WorkerId::new("old", 0), err(0), t0);
        let later = t0 + Duration::from_secs(11);
        assert!(t.get(&WorkerId::new("old", 0), later).is_none());
        t.insert(WorkerId::new("new", 0), err(1), later);
        assert_eq!(t.len(), 1, "the expired one was pruned");
        assert!(t.get(&WorkerId::new("new", 0), later).is_some());
    }

    #[test]
    fn many_replacements_and_removals_keep_the_queue_bounded() {
        let mut t = Tombstones::with_limits(TTL, 4);
        let now = Instant::now();
        for i in 0..10_000u32 {
            let w = WorkerId::new("w", i % 2);
            t.insert(w.clone(), err(i), now);
            if i % 3 == 0 {
                t.remove(&w);
            }
        }
        assert!(t.len() <= 2);
        assert!(t.order.len() <= 8, "{}", t.order.len());
    }
}
