//! The store's bookkeeping: which objects a node holds, the byte budget, and leases.
//!
//! Pure logic over numbers and instants (no files, no clock of its own), so the budget and
//! lease rules are unit-tested here and the store only has to call it under its lock:
//!
//! * **Budget.** Bytes of complete objects (`used`) plus bytes reserved by writes in progress
//!   (`reserved`) never exceed `budget`. A write reserves its size before the first byte is
//!   written (a stream of unknown length reserves chunk by chunk), so two writers cannot both
//!   pass the check and overrun it together; a failed or abandoned write gives its reservation
//!   back.
//! * **Leases.** An object lives until it is deleted, or until its TTL runs out if it has one;
//!   `renew` moves the deadline. [`Catalog::expired`] removes what has run out, and
//!   [`Catalog::next_expiry`] tells the sweeper when to wake next, so nothing polls.

use super::errors::StoreError;
use super::object::{ObjectId, ObjectRef};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One object this node holds.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its reference (the original's: `node`/`url` name its home, also for fetched copies).
    pub obj: ObjectRef,
    /// Its file.
    pub path: PathBuf,
    /// When its lease runs out, if it has a TTL.
    pub expires: Option<Instant>,
    /// Who holds it on this node (the putter, or the fetcher of a copy).
    pub holder: String,
}

/// Counters and levels of one node's store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// The node.
    pub node: String,
    /// Where its objects are served, `http://HOST:PORT`.
    pub url: String,
    /// Its directory.
    pub dir: String,
    /// Objects held now.
    pub objects: u64,
    /// Bytes of the objects held now.
    pub bytes: u64,
    /// Bytes reserved by writes in progress.
    pub reserved: u64,
    /// The byte budget.
    pub budget: u64,
    /// Objects put on this node.
    pub puts: u64,
    /// Objects fetched from other nodes into this one.
    pub fetches: u64,
    /// Bytes fetched from other nodes.
    pub fetched_bytes: u64,
    /// `fetch_to_local` calls answered with a path already here (no copy).
    pub local_hits: u64,
    /// Objects served to other nodes (complete responses).
    pub served: u64,
    /// Bytes served to other nodes.
    pub bytes_served: u64,
    /// Objects deleted on request.
    pub deletes: u64,
    /// Objects removed because their TTL ran out.
    pub expired: u64,
    /// Puts and fetches refused because the budget was full.
    pub refused_full: u64,
}

/// The objects, budget and leases of one node's store.
#[derive(Debug)]
pub struct Catalog {
    budget: u64,
    used: u64,
    reserved: u64,
    objects: HashMap<ObjectId, Entry>,
    /// Counters (levels are filled in by [`Catalog::stats`]).
    pub stats: StoreStats,
}

impl Catalog {
    /// An empty catalog for `node` with a budget of `budget` bytes.
    pub fn new(node: impl Into<String>, budget: u64) -> Self {
        Catalog {
            budget,
            used: 0,
            reserved: 0,
            objects: HashMap::new(),
            stats: StoreStats {
                node: node.into(),
                ..StoreStats::default()
            },
        }
    }

    /// Reserves `need` bytes for `what`, or says the store is full (budget, used, reserved).
    pub fn reserve(&mut self, what: &str, need: u64) -> Result<(), StoreError> {
        let taken = self.used.saturating_add(self.reserved);
        if taken.saturating_add(need) > self.budget {
            self.stats.refused_full += 1;
            return Err(StoreError::Full {
                node: self.stats.node.clone(),
                what: what.to_string(),
                need,
                used: self.used,
                reserved: self.reserved,
                budget: self.budget,
            });
        }
        self.reserved += need;
        Ok(())
    }

    /// Gives back a reservation (a write that failed or was abandoned).
    pub fn unreserve(&mut self, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
    }

    /// Turns a reservation of `reserved` bytes into the complete object `entry`. If the id is
    /// already held (the same object fetched twice at once), the existing entry stays and the
    /// new one is handed back for its file to be removed.
    pub fn commit(&mut self, reserved: u64, entry: Entry) -> Result<&Entry, Box<Entry>> {
        self.unreserve(reserved);
        let id = entry.obj.id;
        if self.objects.contains_key(&id) {
            return Err(Box::new(entry));
        }
        self.used += entry.obj.size;
        Ok(self.objects.entry(id).or_insert(entry))
    }

    /// The object with this id, if held.
    pub fn get(&self, id: &ObjectId) -> Option<&Entry> {
        self.objects.get(id)
    }

    /// Removes an object (its file is the caller's to delete).
    pub fn remove(&mut self, id: &ObjectId) -> Option<Entry> {
        let e = self.objects.remove(id)?;
        self.used = self.used.saturating_sub(e.obj.size);
        Some(e)
    }

    /// Sets an object's lease to run out `ttl` after `now` (`None`: until deleted); returns the
    /// new deadline.
    pub fn renew(
        &mut self,
        id: &ObjectId,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<Option<Instant>, StoreError> {
        let node = self.stats.node.clone();
        let e = self
            .objects
            .get_mut(id)
            .ok_or(StoreError::NotFound { id: *id, node })?;
        e.expires = ttl.map(|t| now + t);
        Ok(e.expires)
    }

    /// Removes and returns every object whose lease ran out at or before `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<Entry> {
        let ids: Vec<ObjectId> = self
            .objects
            .values()
            .filter(|e| e.expires.is_some_and(|t| t <= now))
            .map(|e| e.obj.id)
            .collect();
        let gone: Vec<Entry> = ids.iter().filter_map(|id| self.remove(id)).collect();
        self.stats.expired += gone.len() as u64;
        gone
    }

    /// The earliest lease deadline, if any object has one.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.objects.values().filter_map(|e| e.expires).min()
    }

    /// Bytes held by complete objects.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Counters and levels now.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            objects: self.objects.len() as u64,
            bytes: self.used,
            reserved: self.reserved,
            budget: self.budget,
            ..self.stats.clone()
        }
    }

    /// Removes every object (the store is shutting down).
    pub fn drain(&mut self) -> Vec<Entry> {
        self.used = 0;
        self.objects.drain().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::object::Checksum;

    fn entry(size: u64, expires: Option<Instant>) -> Entry {
        let id = ObjectId::generate();
        Entry {
            obj: ObjectRef {
                id,
                name: "w".into(),
                size,
                checksum: Checksum(0),
                owner: "t".into(),
                node: "n#1".into(),
                url: "http://127.0.0.1:1".into(),
            },
            path: PathBuf::from(format!("/nonexistent/{id}")),
            expires,
            holder: "t".into(),
        }
    }

    #[test]
    fn a_put_past_the_budget_is_refused_with_the_budget_and_the_used_bytes() {
        let mut c = Catalog::new("n#1", 100);
        c.reserve("a", 60).unwrap();
        c.commit(60, entry(60, None)).unwrap();
        let err = c.reserve("object \"b\"", 41).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("100-byte budget")
                && text.contains("60 of")
                && text.contains("needs 41")
                && text.contains("delete objects"),
            "{text}"
        );
        assert_eq!(c.stats().refused_full, 1);
        c.reserve("b", 40).expect("exactly up to the budget fits");
    }

    #[test]
    fn writes_in_progress_count_against_the_budget_and_give_it_back_when_abandoned() {
        let mut c = Catalog::new("n#1", 100);
        c.reserve("a", 70).unwrap();
        assert!(c.reserve("b", 31).is_err(), "a reservation holds its bytes");
        c.unreserve(70);
        c.reserve("b", 100).unwrap();
        assert_eq!(c.stats().reserved, 100);
    }

    #[test]
    fn deleting_an_object_frees_its_bytes() {
        let mut c = Catalog::new("n#1", 100);
        c.reserve("a", 100).unwrap();
        let id = c.commit(100, entry(100, None)).unwrap().obj.id;
        assert!(c.reserve("b", 1).is_err());
        assert_eq!(c.remove(&id).map(|e| e.obj.size), Some(100));
        assert_eq!(c.used(), 0);
        c.reserve("b", 100).unwrap();
    }

    #[test]
    fn a_second_copy_of_the_same_id_is_handed_back_and_counted_once() {
        let mut c = Catalog::new("n#1", 100);
        let e = entry(10, None);
        c.reserve("a", 10).unwrap();
        c.reserve("a again", 10).unwrap();
        c.commit(10, e.clone()).unwrap();
        assert!(c.commit(10, e).is_err());
        let s = c.stats();
        assert_eq!((s.objects, s.bytes, s.reserved), (1, 10, 0));
    }

    #[test]
    fn only_objects_whose_lease_ran_out_expire_and_a_renewal_moves_the_deadline() {
        let t0 = Instant::now();
        let mut c = Catalog::new("n#1", 1000);
        let short = entry(1, Some(t0 + Duration::from_secs(1)));
        let long = entry(2, Some(t0 + Duration::from_secs(10)));
        let forever = entry(3, None);
        let (s, l) = (short.obj.id, long.obj.id);
        for e in [short, long, forever] {
            c.reserve("x", e.obj.size).unwrap();
            c.commit(e.obj.size, e).unwrap();
        }
        assert_eq!(c.next_expiry(), Some(t0 + Duration::from_secs(1)));
        c.renew(&s, Some(Duration::from_secs(20)), t0).unwrap();
        assert_eq!(c.next_expiry(), Some(t0 + Duration::from_secs(10)));
        assert!(c.expired(t0 + Duration::from_secs(5)).is_empty());
        let gone = c.expired(t0 + Duration::from_secs(10));
        assert_eq!(gone.iter().map(|e| e.obj.id).collect::<Vec<_>>(), vec![l]);
        assert_eq!(c.stats().expired, 1);
        assert_eq!(c.used(), 4);
        c.renew(&s, None, t0).unwrap();
        assert!(c.expired(t0 + Duration::from_secs(1000)).is_empty());
        assert_eq!(c.next_expiry(), None);
        assert!(matches!(
            c.renew(&l, None, t0),
            Err(StoreError::NotFound { .. })
        ));
    }
}
