//! Engine threads that outlive their node agent.
//!
//! An in-process engine cannot be killed: when an agent stops (a fenced node), the engine thread
//! of each RpcServer worker finishes the call it is running (its caller is answered with an
//! error at once, and queued calls never run), then ends. Until it ends it may still use the
//! worker's GPUs, CPU and memory. The agent hands each such thread here, with what its worker
//! held, and the node's next agent offers the node's resources minus what running leftovers
//! hold ([`Leftovers::withhold`]), so nothing is placed on a GPU an old engine still uses.

use super::resources::{Allocation, NodeResources};
use fleet_actors::WorkerId;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One engine thread of a stopped agent.
#[derive(Debug)]
struct Leftover {
    worker: WorkerId,
    alloc: Allocation,
    exit: oneshot::Receiver<()>,
}

/// Engine threads of stopped agents that may still run, shared by a node's successive agents.
#[derive(Clone, Debug, Default)]
pub struct Leftovers(Arc<Mutex<Vec<Leftover>>>);

impl Leftovers {
    /// Records the engine thread of `worker`, which holds `alloc`, until `exit` resolves.
    pub fn push(&self, worker: WorkerId, alloc: Allocation, exit: oneshot::Receiver<()>) {
        self.lock().push(Leftover {
            worker,
            alloc,
            exit,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Leftover>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the threads that have ended; returns the workers of those still running.
    pub fn running(&self) -> Vec<WorkerId> {
        let mut l = self.lock();
        l.retain_mut(|x| matches!(x.exit.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        l.iter().map(|x| x.worker.clone()).collect()
    }

    /// Waits up to `grace` for every recorded thread to end; returns the workers still running.
    pub async fn settle(&self, grace: std::time::Duration) -> Vec<WorkerId> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left = self.running();
            if left.is_empty() || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `total` minus what the still-running threads hold.
    pub fn withhold(&self, total: &NodeResources) -> NodeResources {
        self.running();
        let mut r = total.clone();
        for x in self.lock().iter() {
            r.cpu_millis = r.cpu_millis.saturating_sub(x.alloc.cpu_millis);
            r.mem_mib = r.mem_mib.saturating_sub(x.alloc.mem_mib);
            r.gpus.retain(|g| !x.alloc.gpus.contains(g));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total() -> NodeResources {
        NodeResources {
            cpu_millis: 8000,
            mem_mib: 1024,
            gpus: vec![0, 1],
            port_range: (1, 2),
            labels: Default::default(),
        }
    }

    #[test]
    fn a_running_leftover_engine_withholds_what_its_worker_held_until_it_ends() {
        let l = Leftovers::default();
        let (tx, rx) = oneshot::channel::<()>();
        let alloc = Allocation {
            cpu_millis: 1000,
            mem_mib: 24,
            gpus: vec![1],
        };
        l.push(WorkerId::new("w", 0), alloc, rx);
        let r = l.withhold(&total());
        assert_eq!((r.cpu_millis, r.mem_mib, r.gpus), (7000, 1000, vec![0]));
        drop(tx);
        assert!(l.running().is_empty());
        assert_eq!(l.withhold(&total()), total());
    }
}
