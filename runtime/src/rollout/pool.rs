//! The rollout controller's view of its workers: who may get an episode now.
//!
//! A worker gets episodes only while it is healthy. The pool follows the role's membership in
//! the scheduler (a worker the scheduler reports `Failed` leaves the pool; a worker that is
//! recreated under the same id, or added, joins it) and keeps a circuit breaker per worker: an
//! infrastructure failure (worker failed, node lost, backend down, proxy unreachable) opens the
//! breaker for a cool-down that doubles with every consecutive failure (capped); after it, one
//! probe episode is let through (half-open), and a success closes the breaker again. This is the
//! routing rule of ractor's factory (`routing.rs`: skip workers that are not available) with the
//! failure memory a real backend needs.
//!
//! A worker whose proxy missed a `set_version` push is held back as well (it would record turns
//! under the old version) until a later push reaches it.
//!
//! Picking is least-loaded among the available workers, round-robin among equals.

use fleet_actors::WorkerId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// First cool-down after an infrastructure failure.
pub const BREAKER_BASE: Duration = Duration::from_millis(500);
/// Longest cool-down.
pub const BREAKER_CAP: Duration = Duration::from_secs(10);

/// Why a worker gets no episodes.
#[derive(Clone, Debug, PartialEq)]
pub enum Held {
    /// The scheduler reports it failed (for good, until it is recreated).
    Failed(String),
    /// Its breaker is open until the instant, after this many consecutive failures.
    Open {
        /// When it half-opens.
        until: Instant,
        /// Consecutive infrastructure failures.
        failures: u32,
        /// The last one.
        last: String,
    },
    /// Its proxy does not have the current policy version yet.
    VersionBehind(u64),
}

#[derive(Clone, Debug)]
struct Slot {
    load: u64,
    failures: u32,
    open_until: Option<Instant>,
    last_error: String,
    failed: Option<String>,
    /// The version its proxy confirmed.
    version: u64,
    /// Episodes it accepted (for reports).
    done: u64,
}

/// The workers of one role and their availability.
#[derive(Debug, Default)]
pub struct Pool {
    slots: BTreeMap<WorkerId, Slot>,
    rr: usize,
}

/// What the pool says when nothing is available.
#[derive(Clone, Debug, PartialEq)]
pub enum Unavailable {
    /// Every worker failed for good: the job cannot go on.
    AllFailed(Vec<(WorkerId, String)>),
    /// Some will be available again (breakers, versions): wait.
    Wait(Option<Instant>),
}

impl Pool {
    /// A pool of `workers`, all healthy, at `version`.
    pub fn new(workers: impl IntoIterator<Item = WorkerId>, version: u64) -> Pool {
        let mut p = Pool::default();
        for w in workers {
            p.add(w, version);
        }
        p
    }

    fn add(&mut self, w: WorkerId, version: u64) {
        self.slots.insert(
            w,
            Slot {
                load: 0,
                failures: 0,
                open_until: None,
                last_error: String::new(),
                failed: None,
                version,
                done: 0,
            },
        );
    }

    /// Applies the scheduler's view of the role: `(worker, failed reason if failed)`. Workers not
    /// seen before join (at `version`, healthy); a failed one is held; one that was failed and
    /// now runs again (recreated) is healthy again. Returns whether anything changed.
    pub fn sync(&mut self, seen: &[(WorkerId, Option<String>)], version: u64) -> bool {
        let mut changed = false;
        for (w, failed) in seen {
            match self.slots.get_mut(w) {
                None => {
                    if failed.is_none() {
                        self.add(w.clone(), version);
                        changed = true;
                    }
                }
                Some(s) => match (failed, &s.failed) {
                    (Some(why), None) => {
                        s.failed = Some(why.clone());
                        changed = true;
                    }
                    (None, Some(_)) => {
                        // Recreated: a new incarnation under the same id.
                        *s = Slot {
                            load: s.load,
                            failures: 0,
                            open_until: None,
                            last_error: String::new(),
                            failed: None,
                            version,
                            done: s.done,
                        };
                        changed = true;
                    }
                    _ => {}
                },
            }
        }
        // A worker the role no longer has (deleted) is failed for good.
        for (w, s) in self.slots.iter_mut() {
            if s.failed.is_none() && !seen.iter().any(|(x, _)| x == w) {
                s.failed = Some("it is no longer a worker of the role".into());
                changed = true;
            }
        }
        changed
    }

    fn available(s: &Slot, now: Instant, version: u64) -> bool {
        s.failed.is_none()
            && s.version >= version
            && match s.open_until {
                None => true,
                // Half-open: one probe at a time.
                Some(t) => now >= t && s.load == 0,
            }
    }

    /// Picks the least-loaded available worker and counts the episode on it, or says why none is.
    pub fn pick(&mut self, now: Instant, version: u64) -> Result<WorkerId, Unavailable> {
        let ids: Vec<WorkerId> = self.slots.keys().cloned().collect();
        let n = ids.len();
        let start = if n == 0 { 0 } else { self.rr % n };
        let best = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| Self::available(&self.slots[&ids[*i]], now, version))
            .min_by_key(|i| self.slots[&ids[*i]].load);
        match best {
            Some(i) => {
                self.rr = i + 1;
                let w = ids[i].clone();
                if let Some(s) = self.slots.get_mut(&w) {
                    s.load += 1;
                }
                Ok(w)
            }
            None => {
                if self.slots.values().all(|s| s.failed.is_some()) {
                    return Err(Unavailable::AllFailed(
                        self.slots
                            .iter()
                            .map(|(w, s)| (w.clone(), s.failed.clone().unwrap_or_default()))
                            .collect(),
                    ));
                }
                let next = self
                    .slots
                    .values()
                    .filter(|s| s.failed.is_none())
                    .filter_map(|s| s.open_until)
                    .min();
                Err(Unavailable::Wait(next))
            }
        }
    }

    /// An episode on `w` ended: `Ok(())` closes its breaker, `Err(why)` (an infrastructure
    /// failure) opens it for a doubling cool-down.
    pub fn finished(&mut self, w: &WorkerId, outcome: Result<bool, String>, now: Instant) {
        let Some(s) = self.slots.get_mut(w) else {
            return;
        };
        s.load = s.load.saturating_sub(1);
        match outcome {
            Ok(accepted) => {
                s.failures = 0;
                s.open_until = None;
                if accepted {
                    s.done += 1;
                }
            }
            Err(why) => {
                s.failures = s.failures.saturating_add(1);
                let factor = 1u32 << (s.failures - 1).min(8);
                let wait = BREAKER_BASE.saturating_mul(factor).min(BREAKER_CAP);
                s.open_until = Some(now + wait);
                s.last_error = why;
            }
        }
    }

    /// Records the version `w`'s proxy confirmed (or did not: `ok == false` holds it back).
    pub fn set_version(&mut self, w: &WorkerId, version: u64, ok: bool) {
        if let Some(s) = self.slots.get_mut(w) {
            if ok {
                s.version = s.version.max(version);
            }
        }
    }

    /// Workers that should get the current version pushed (alive, behind).
    pub fn behind(&self, version: u64) -> Vec<WorkerId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.failed.is_none() && s.version < version)
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// Workers not failed for good.
    pub fn alive(&self) -> Vec<WorkerId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.failed.is_none())
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// Every worker the pool knows.
    pub fn all(&self) -> Vec<WorkerId> {
        self.slots.keys().cloned().collect()
    }

    /// Why `w` gets no episodes now, if it does not.
    pub fn held(&self, w: &WorkerId, now: Instant, version: u64) -> Option<Held> {
        let s = self.slots.get(w)?;
        if let Some(f) = &s.failed {
            return Some(Held::Failed(f.clone()));
        }
        if let Some(t) = s.open_until {
            if now < t {
                return Some(Held::Open {
                    until: t,
                    failures: s.failures,
                    last: s.last_error.clone(),
                });
            }
        }
        if s.version < version {
            return Some(Held::VersionBehind(s.version));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(i: u32) -> WorkerId {
        WorkerId::new("r", i)
    }

    #[test]
    fn a_failed_worker_gets_no_episodes() {
        let mut p = Pool::new([w(0), w(1)], 0);
        p.sync(&[(w(0), Some("dead".into())), (w(1), None)], 0);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(p.pick(now, 0), Ok(w(1)));
        }
    }

    #[test]
    fn an_open_breaker_half_opens_for_one_probe_and_a_success_closes_it() {
        let mut p = Pool::new([w(0)], 0);
        let t0 = Instant::now();
        assert_eq!(p.pick(t0, 0), Ok(w(0)));
        p.finished(&w(0), Err("backend down".into()), t0);
        assert!(matches!(p.pick(t0, 0), Err(Unavailable::Wait(Some(_)))));
        let later = t0 + BREAKER_BASE;
        assert_eq!(p.pick(later, 0), Ok(w(0)));
        // One probe at a time while half-open.
        assert!(matches!(p.pick(later, 0), Err(Unavailable::Wait(_))));
        p.finished(&w(0), Ok(true), later);
        assert_eq!(p.pick(later, 0), Ok(w(0)));
        assert_eq!(p.pick(later, 0), Ok(w(0)));
    }

    #[test]
    fn cool_downs_double_and_are_capped() {
        let mut p = Pool::new([w(0)], 0);
        let mut now = Instant::now();
        let mut waits = vec![];
        for _ in 0..8 {
            let _ = p.pick(now, 0).unwrap();
            p.finished(&w(0), Err("x".into()), now);
            let Some(Held::Open { until, .. }) = p.held(&w(0), now, 0) else {
                panic!("open")
            };
            waits.push(until - now);
            now = until;
        }
        assert_eq!(waits[0], BREAKER_BASE);
        assert_eq!(waits[1], BREAKER_BASE * 2);
        assert_eq!(*waits.last().unwrap(), BREAKER_CAP);
    }

    #[test]
    fn all_failed_is_reported_with_every_reason() {
        let mut p = Pool::new([w(0), w(1)], 0);
        p.sync(&[(w(0), Some("a".into())), (w(1), Some("b".into()))], 0);
        assert_eq!(
            p.pick(Instant::now(), 0),
            Err(Unavailable::AllFailed(vec![
                (w(0), "a".into()),
                (w(1), "b".into())
            ]))
        );
    }

    #[test]
    fn a_recreated_or_added_worker_joins_the_pool() {
        let mut p = Pool::new([w(0)], 0);
        p.sync(&[(w(0), Some("dead".into()))], 0);
        assert!(p.pick(Instant::now(), 0).is_err());
        p.sync(&[(w(0), None), (w(1), None)], 0);
        let now = Instant::now();
        let a = p.pick(now, 0).unwrap();
        let b = p.pick(now, 0).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_worker_behind_on_the_version_waits_until_a_push_reaches_it() {
        let mut p = Pool::new([w(0), w(1)], 0);
        p.set_version(&w(0), 1, true);
        p.set_version(&w(1), 1, false);
        let now = Instant::now();
        assert_eq!(p.pick(now, 1), Ok(w(0)));
        assert_eq!(p.pick(now, 1), Ok(w(0)));
        assert_eq!(p.behind(1), vec![w(1)]);
        p.set_version(&w(1), 1, true);
        assert_eq!(p.pick(now, 1), Ok(w(1)));
    }
}
