//! The connections that are still authenticating, oldest first, each with a [`Gate`] that
//! says whether it is still pending, authenticated, or closed by fleet.
//!
//! The accept loop admits a connection ([`Pending::admit`]); the node server's session
//! subscription opens its gate when ractor_cluster reports it authenticated
//! ([`Pending::authenticated`], called synchronously from the subscription, so no event can be
//! lost to a lagging channel); the connection's [`Ticket`] removes it when the stream is
//! dropped. The list never holds more than `max` entries: admitting one more closes the oldest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

const PENDING: u8 = 0;
const AUTHENTICATED: u8 = 1;
const EVICTED: u8 = 2;
const SHED: u8 = 3;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateState {
    /// Still authenticating.
    Pending,
    /// Authenticated: no more limits.
    Authenticated,
    /// Closed because `max` other handshakes arrived after it.
    Evicted,
    /// Closed to free a file descriptor while the process had none left.
    Shed,
}

/// One connection's state, shared by the accept side, the session subscription and the
/// stream.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    pub(crate) fn state(&self) -> GateState {
        match self.state.load(Ordering::Acquire) {
            PENDING => GateState::Pending,
            AUTHENTICATED => GateState::Authenticated,
            EVICTED => GateState::Evicted,
            _ => GateState::Shed,
        }
    }

    /// Wakes the stream's reader on the next change (one reader at a time).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut w = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match &*w {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }

    /// Ready once fleet closed the connection.
    pub(crate) fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.register(cx.waker());
        match self.state() {
            GateState::Evicted | GateState::Shed => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    fn set(&self, to: u8) -> bool {
        let changed = self
            .state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                w.wake();
            }
        }
        changed
    }
}

struct Entry {
    seq: u64,
    label: String,
    gate: Arc<Gate>,
}

struct Inner {
    next: u64,
    entries: VecDeque<Entry>,
}

/// Why recently closed connections were closed, for the refusal log (bounded).
const RECENT: usize = 256;

/// The pending handshakes of one listener.
pub(crate) struct Pending {
    max: usize,
    inner: Mutex<Inner>,
    recent: Mutex<VecDeque<(String, String)>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("max", &self.max)
            .field("len", &self.len())
            .finish()
    }
}

/// A connection's place in [`Pending`]; dropping it (with the stream) removes the entry.
#[derive(Debug)]
pub(crate) struct Ticket {
    pending: Arc<Pending>,
    seq: u64,
    /// The connection's gate.
    pub(crate) gate: Arc<Gate>,
}

impl Ticket {
    /// Records that fleet closed this connection, and why (see [`Pending::close_reason`]).
    pub(crate) fn record_close(&self, label: String, why: String) {
        let mut r = self
            .pending
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back((label, why));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pending.remove(self.seq);
    }
}

impl Pending {
    /// At most `max` (at least 1) pending handshakes.
    pub(crate) fn new(max: usize) -> Arc<Pending> {
        Arc::new(Pending {
            max: max.max(1),
            inner: Mutex::new(Inner {
                next: 0,
                entries: VecDeque::new(),
            }),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// How many are pending now.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Admits a connection from `label` (its peer address); returns its ticket and, when the
    /// list was full, the label of the oldest one, which is closed to make room.
    pub(crate) fn admit(self: &Arc<Self>, label: String) -> (Ticket, Option<String>) {
        let gate = Arc::new(Gate::default());
        let mut inner = self.lock();
        let evicted = if inner.entries.len() >= self.max {
            inner.entries.pop_front().map(|old| {
                old.gate.set(EVICTED);
                old.label
            })
        } else {
            None
        };
        let seq = inner.next;
        inner.next += 1;
        inner.entries.push_back(Entry {
            seq,
            label,
            gate: gate.clone(),
        });
        drop(inner);
        (
            Ticket {
                pending: self.clone(),
                seq,
                gate,
            },
            evicted,
        )
    }

    /// Closes the oldest pending connection (to free a file descriptor); its label, if any.
    pub(crate) fn shed_oldest(&self) -> Option<String> {
        let old = self.lock().entries.pop_front()?;
        old.gate.set(SHED);
        Some(old.label)
    }

    /// The incoming session from `label` authenticated: lift its limits.
    pub(crate) fn authenticated(&self, label: &str) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| e.label == label) {
            if let Some(e) = inner.entries.remove(i) {
                e.gate.set(AUTHENTICATED);
            }
        }
    }

    /// Why fleet closed the connection from `label`, if it did (taken: asked once).
    pub(crate) fn close_reason(&self, label: &str) -> Option<String> {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let i = r.iter().position(|(l, _)| l == label)?;
        r.remove(i).map(|(_, why)| why)
    }

    fn remove(&self, seq: u64) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| e.seq == seq) {
            inner.entries.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitting_one_more_than_the_limit_closes_the_oldest() {
        let p = Pending::new(2);
        let (a, none) = p.admit("a".into());
        assert!(none.is_none());
        let (b, _) = p.admit("b".into());
        let (c, evicted) = p.admit("c".into());
        assert_eq!(evicted.as_deref(), Some("a"));
        assert_eq!(a.gate.state(), GateState::Evicted);
        assert_eq!(p.len(), 2);
        p.authenticated("b");
        assert_eq!(b.gate.state(), GateState::Authenticated);
        assert_eq!(p.len(), 1);
        assert_eq!(p.shed_oldest().as_deref(), Some("c"));
        assert_eq!(c.gate.state(), GateState::Shed);
        drop((a, b, c));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_dropped_ticket_leaves_the_list() {
        let p = Pending::new(4);
        let (t, _) = p.admit("x".into());
        assert_eq!(p.len(), 1);
        drop(t);
        assert_eq!(p.len(), 0);
    }
}
