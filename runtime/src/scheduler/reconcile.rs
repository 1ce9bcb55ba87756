//! Reconciling the scheduler's view of a node with the node's own roster.
//!
//! Every heartbeat carries the node's roster, `(worker, incarnation, state)` for each worker its
//! agent runs. Events alone (a worker died, a worker was released) can be lost or can race a
//! create or a delete (C5); comparing the two views on every beat means they cannot drift for
//! long:
//!
//! * a worker the scheduler counts as running on the node that the node does not run (that
//!   incarnation) is marked failed, "node N no longer runs it";
//! * a worker the node runs that the scheduler does not know on that node (a create that was
//!   rolled back or cancelled while its spawn was in flight) is stopped on the node.
//!
//! Either needs [`MISSES`] beats in a row that disagree, so that a spawn whose reply and the beat
//! that first shows it cross on the way never counts.

use crate::node::messages::{RosterEntry, RosterState};
use fleet_actors::WorkerId;
use std::collections::{HashMap, HashSet};

/// Consecutive disagreeing beats before the scheduler acts.
pub(crate) const MISSES: u32 = 3;

/// One worker as the scheduler records it on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) worker: WorkerId,
    pub(crate) incarnation: u64,
    /// Running (not starting, not failed): only these can be found missing.
    pub(crate) running: bool,
}

/// Disagreements seen so far on one node.
#[derive(Debug, Default)]
pub(crate) struct Misses {
    gone: HashMap<(WorkerId, u64), u32>,
    leaked: HashMap<(WorkerId, u64), u32>,
}

/// What to do after a beat.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    /// Mark these instances failed: the node no longer runs them.
    pub(crate) fail: Vec<(WorkerId, u64)>,
    /// Stop these on the node: the scheduler does not know them.
    pub(crate) stop: Vec<(WorkerId, u64)>,
}

/// Compares the scheduler's `known` workers on a node with the node's `roster`.
pub(crate) fn reconcile(known: &[Known], roster: &[RosterEntry], misses: &mut Misses) -> Actions {
    let on_node: HashSet<(WorkerId, u64)> = roster
        .iter()
        .map(|e| (e.worker.clone(), e.incarnation))
        .collect();
    let recorded: HashSet<(WorkerId, u64)> = known
        .iter()
        .map(|k| (k.worker.clone(), k.incarnation))
        .collect();
    let mut out = Actions::default();
    for k in known.iter().filter(|k| k.running) {
        let key = (k.worker.clone(), k.incarnation);
        if on_node.contains(&key) {
            misses.gone.remove(&key);
            continue;
        }
        let n = misses.gone.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n >= MISSES {
            misses.gone.remove(&key);
            out.fail.push(key);
        }
    }
    misses.gone.retain(|k, _| recorded.contains(k));
    for e in roster.iter().filter(|e| e.state == RosterState::Running) {
        let key = (e.worker.clone(), e.incarnation);
        if recorded.contains(&key) {
            misses.leaked.remove(&key);
            continue;
        }
        let n = misses.leaked.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n >= MISSES {
            misses.leaked.remove(&key);
            out.stop.push(key);
        }
    }
    misses.leaked.retain(|k, _| on_node.contains(k));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(i: u32) -> WorkerId {
        WorkerId::new("r", i)
    }
    fn known(i: u32, inc: u64, running: bool) -> Known {
        Known {
            worker: w(i),
            incarnation: inc,
            running,
        }
    }
    fn entry(i: u32, inc: u64, state: RosterState) -> RosterEntry {
        RosterEntry {
            worker: w(i),
            incarnation: inc,
            state,
        }
    }

    #[test]
    fn a_running_worker_the_node_no_longer_runs_fails_after_three_disagreeing_beats() {
        let mut m = Misses::default();
        let k = [known(0, 7, true), known(1, 8, true)];
        let roster = [entry(1, 8, RosterState::Running)];
        assert_eq!(reconcile(&k, &roster, &mut m), Actions::default());
        assert_eq!(reconcile(&k, &roster, &mut m), Actions::default());
        let a = reconcile(&k, &roster, &mut m);
        assert_eq!(a.fail, vec![(w(0), 7)]);
        assert!(a.stop.is_empty());
    }

    #[test]
    fn one_agreeing_beat_resets_the_count() {
        let mut m = Misses::default();
        let k = [known(0, 7, true)];
        let with = [entry(0, 7, RosterState::Running)];
        reconcile(&k, &[], &mut m);
        reconcile(&k, &[], &mut m);
        reconcile(&k, &with, &mut m);
        reconcile(&k, &[], &mut m);
        assert_eq!(reconcile(&k, &[], &mut m), Actions::default());
    }

    #[test]
    fn another_incarnation_on_the_node_does_not_count_as_the_recorded_one() {
        let mut m = Misses::default();
        let k = [known(0, 7, true)];
        let roster = [entry(0, 6, RosterState::Running)];
        let mut last = Actions::default();
        for _ in 0..MISSES {
            last = reconcile(&k, &roster, &mut m);
        }
        assert_eq!(last.fail, vec![(w(0), 7)]);
        assert_eq!(last.stop, vec![(w(0), 6)]);
    }

    #[test]
    fn a_starting_worker_is_never_failed_and_never_counts_as_leaked() {
        let mut m = Misses::default();
        let k = [known(0, 7, false)];
        for _ in 0..5 {
            assert_eq!(reconcile(&k, &[], &mut m), Actions::default());
            let roster = [entry(0, 7, RosterState::Running)];
            assert_eq!(reconcile(&k, &roster, &mut m), Actions::default());
        }
    }

    #[test]
    fn a_worker_the_scheduler_does_not_know_is_stopped_unless_already_stopping() {
        let mut m = Misses::default();
        let roster = [
            entry(3, 9, RosterState::Running),
            entry(4, 10, RosterState::Stopping),
        ];
        let mut stops = vec![];
        for _ in 0..MISSES {
            stops.extend(reconcile(&[], &roster, &mut m).stop);
        }
        assert_eq!(stops, vec![(w(3), 9)]);
    }
}
