//! Is a worker there: `ping`, `status`, and `get_workers`, which waits for a whole role.

use super::{Scheduler, WorkerInfo, WorkerState};
use crate::scheduler::calls::instant_after;
use fleet_actors::rpc_server::{Control, ControlOk, WorkerStatus};
use fleet_actors::{FleetError, WorkerId};
use std::time::{Duration, Instant};

impl Scheduler {
    /// Liveness of `worker`: answered by its actor at once, even while an engine call runs.
    pub async fn ping(&self, worker: &WorkerId, timeout: Duration) -> Result<(), FleetError> {
        self.control(worker, Control::Health, timeout)
            .await
            .map(|_| ())
    }

    /// Engines, call in flight, uptime of `worker`.
    pub async fn status(
        &self,
        worker: &WorkerId,
        timeout: Duration,
    ) -> Result<WorkerStatus, FleetError> {
        match self.control(worker, Control::Status, timeout).await? {
            ControlOk::Status(s) => Ok(s),
            other => Err(FleetError::internal(format!(
                "status answered with {other:?}"
            ))),
        }
    }

    /// Waits until every worker of `role` answers, or fails: the role does not exist, a worker
    /// failed (with its reason and last output), or `timeout` passed (naming the workers that
    /// are not ready).
    ///
    /// Only workers that have not answered yet are pinged again, with a backoff from 5 ms
    /// doubling to 250 ms, and a failure pushed by a node wakes the wait at once: waiting
    /// minutes for one slow inference server among 64 workers costs a few messages a second,
    /// not a ping of every worker every 5 ms.
    pub async fn get_workers(
        &self,
        role: &str,
        timeout: Duration,
    ) -> Result<Vec<WorkerInfo>, FleetError> {
        if let Some(r) = &self.remote {
            // The head waits (it sees failures pushed by the nodes); the request carries the
            // whole budget.
            let op = crate::attach::protocol::Op::GetWorkers(role.to_string());
            return r.workers(op, timeout).await;
        }
        const FIRST: Duration = Duration::from_millis(5);
        const CAP: Duration = Duration::from_millis(250);
        let deadline = instant_after(timeout);
        let mut failures = self.inner.failures.subscribe();
        // Workers (by incarnation) that answered a ping; a recreated worker is asked again.
        let mut answered: std::collections::HashSet<(WorkerId, u64)> = Default::default();
        let mut backoff = FIRST;
        loop {
            let workers = self.workers(role).await?;
            let mut not_ready = Vec::new();
            let mut to_ping = Vec::new();
            for w in &workers {
                match &w.state {
                    WorkerState::Failed(e) => return Err(e.clone()),
                    WorkerState::Starting => not_ready.push(w.id.to_string()),
                    WorkerState::Running if answered.contains(&(w.id.clone(), w.incarnation)) => {}
                    WorkerState::Running => to_ping.push(w),
                }
            }
            if not_ready.is_empty() {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let pings = to_ping.iter().map(|w| self.ping(&w.id, left));
                let results = futures::future::join_all(pings).await;
                for (w, r) in to_ping.iter().zip(results) {
                    match r {
                        Ok(()) => {
                            answered.insert((w.id.clone(), w.incarnation));
                        }
                        Err(e @ FleetError::WorkerFailed { .. }) => return Err(e),
                        Err(_) => not_ready.push(w.id.to_string()),
                    }
                }
                if not_ready.is_empty() {
                    return Ok(workers);
                }
            }
            if Instant::now() >= deadline {
                return Err(FleetError::timeout(
                    format!(
                        "workers of role {role:?} to become ready (not ready: {})",
                        not_ready.join(", ")
                    ),
                    timeout,
                ));
            }
            let nap = backoff.min(deadline.saturating_duration_since(Instant::now()));
            backoff = (backoff * 2).min(CAP);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                // A worker failed somewhere: look again now.
                _ = failures.changed() => {}
            }
        }
    }
}
