//! The pid of a launcher's current child, shared with whoever started the launcher.
//!
//! The node agent reports every worker's child pid (`fleet status`). Asking each launcher would
//! make the agent wait on its workers, and scanning `/proc` from the agent reads every process
//! on the host inside a handler; the launcher already knows the pid, so it publishes it here
//! (set at every start, cleared when the child exits) and the agent reads it without waiting.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The pid of the launcher's live child, or none. Clones share one value.
#[derive(Clone, Debug, Default)]
pub struct ChildPid(Arc<AtomicU32>);

impl ChildPid {
    /// No child yet.
    pub fn new() -> ChildPid {
        ChildPid::default()
    }

    /// The live child's pid, if there is one.
    pub fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    pub(crate) fn set(&self, pid: u32) {
        self.0.store(pid, Ordering::Release);
    }

    /// Clears the pid if it is still `pid` (a newer child's pid stays).
    pub(crate) fn clear(&self, pid: u32) {
        let _ = self
            .0
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}
