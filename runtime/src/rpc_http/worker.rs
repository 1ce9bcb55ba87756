//! Asking the RpcServer actor, with a deadline, and naming the worker in every failure.
//!
//! The HTTP handlers never touch engines: they build a [`WorkerMsg`], hand it to the one
//! RpcServer actor with a reply port, and wait for the reply up to a deadline. The actor
//! replies to control messages at once and passes engine calls to its engine thread with the
//! port, so a long call on one connection never delays `/health` on another.

use fleet_actors::rpc_server::WorkerMsg;
use fleet_actors::{FleetError, WorkerId};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use std::time::Duration;

/// The actor and who it is.
#[derive(Debug, Clone)]
pub(super) struct WorkerHandle {
    pub(super) actor: ActorRef<WorkerMsg>,
    pub(super) worker: WorkerId,
}

impl WorkerHandle {
    /// Sends the message `build` makes and waits up to `timeout` for its reply. A timeout is
    /// [`FleetError::Timeout`] naming `what`; an actor that is gone (destroyed) is
    /// [`FleetError::Unavailable`] (503: this worker will not come back, but a retry elsewhere
    /// may work).
    pub(super) async fn ask<T: Send + 'static>(
        &self,
        what: &str,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<T>) -> WorkerMsg,
    ) -> Result<T, FleetError> {
        match self.actor.call(build, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(FleetError::timeout(
                format!("{what} on worker {}", self.worker),
                timeout,
            )),
            Ok(CallResult::SenderError) => Err(FleetError::Unavailable {
                what: format!("worker {}", self.worker),
                detail: format!("it stopped while handling {what}"),
            }),
            Err(_) => Err(self.gone()),
        }
    }

    /// The error for a worker whose actor has stopped.
    pub(super) fn gone(&self) -> FleetError {
        FleetError::Unavailable {
            what: format!("worker {}", self.worker),
            detail: "it has been destroyed; start a new one".into(),
        }
    }
}
