//! Telling a worker that a caller gave up on a call, so that it does not run it for nobody.
//!
//! A remote caller that times out, or whose future is dropped (a task aborted, a `select!`
//! that took another branch), sends nothing on its own: ractor_cluster has no cancellation,
//! and the worker would run the call when its turn comes. The worker's queue already drops a
//! call whose deadline passed; a caller that gives up *before* that sends `Control::Cancel`
//! with its request id. Only calls with a request id can be cancelled: an id is what the
//! worker knows the call by (calls without one still expire with their deadline).

use super::Scheduler;
use fleet_actors::rpc_server::Control;
use fleet_actors::{FleetError, RequestId, WorkerId};
use std::time::Duration;

/// How long the cancel itself may take; it is sent from a task nobody waits for.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Armed while a call with a request id is outstanding: dropped armed (the caller timed out,
/// or its future was dropped), it sends the worker a cancel for that id.
pub(super) struct GiveUp {
    armed: Option<(Scheduler, WorkerId, RequestId)>,
}

impl GiveUp {
    /// A guard for a call to `worker` with `id` (none without an id).
    pub(super) fn new(s: &Scheduler, worker: &WorkerId, id: Option<&RequestId>) -> Self {
        GiveUp {
            armed: id.map(|id| (s.clone(), worker.clone(), id.clone())),
        }
    }

    /// The call ended with `r`: only a timeout leaves the guard armed (the worker may still
    /// hold the call); an answer, or a failure of the worker or its node, disarms it.
    pub(super) fn settle<T>(mut self, r: &Result<T, FleetError>) {
        if !matches!(r, Err(FleetError::Timeout { .. })) {
            self.armed = None;
        }
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        let Some((s, worker, request_id)) = self.armed.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::debug!(worker = %worker, request_id = %request_id, "caller gave up: cancelling the call");
        rt.spawn(async move {
            let _ = s
                .control(&worker, Control::Cancel { request_id }, CANCEL_TIMEOUT)
                .await;
        });
    }
}
