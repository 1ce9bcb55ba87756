//! The process-local map from worker id to worker actor, shared by the node agent (which fills
//! it) and an in-process scheduler (which reads it to call local workers directly, one hop
//! instead of two).

use fleet_actors::rpc_server::WorkerMsg;
use fleet_actors::WorkerId;
use ractor::ActorRef;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Local workers by id. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct LocalDirectory {
    inner: Arc<RwLock<HashMap<WorkerId, ActorRef<WorkerMsg>>>>,
}

impl LocalDirectory {
    /// The actor of `worker`, if it runs in this process.
    pub fn get(&self, worker: &WorkerId) -> Option<ActorRef<WorkerMsg>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
            .cloned()
    }

    pub(crate) fn insert(&self, worker: WorkerId, actor: ActorRef<WorkerMsg>) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker, actor);
    }

    pub(crate) fn remove(&self, worker: &WorkerId) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker);
    }

    /// How many local workers are registered.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
