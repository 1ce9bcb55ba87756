//! The head's own tokio runtime: membership does not share the driver's threads.
//!
//! A driver program embeds the head ([`crate::Cluster::head`]). If the head's failure detector,
//! its heartbeat handling and the ractor_cluster sessions that carry heartbeats ran on the
//! driver's runtime, a driver that blocks its runtime threads (synchronous tokenization, a CPU
//! loop, a blocking file write) for longer than the timeout would stop beats from being read
//! and answered, mark every healthy node down, and every node would fence. So a head starts its
//! node server (every session, fleet's accept loop) and its head actor on a runtime of its own
//! with two threads named `fleet-membership`; everything they spawn stays there. Calls from the
//! driver to remote workers still work across the two runtimes (ractor messages and tokio
//! channels do not care which runtime awaits them).

use fleet_actors::FleetError;
use std::time::Duration;

/// A dedicated runtime, shut down (after a grace for actors to finish stopping) when dropped.
#[derive(Debug)]
pub(crate) struct MembershipRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl MembershipRuntime {
    /// Starts the runtime's threads.
    pub(crate) fn start() -> Result<Self, FleetError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fleet-membership")
            .enable_all()
            .build()
            .map_err(|e| FleetError::internal(format!("starting the membership runtime: {e}")))?;
        Ok(MembershipRuntime { rt: Some(rt) })
    }

    /// Runs `fut` on the membership runtime and waits for its output.
    pub(crate) async fn run<F>(&self, fut: F) -> Result<F::Output, FleetError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| FleetError::internal("the membership runtime is shut down"))?;
        rt.spawn(fut)
            .await
            .map_err(|e| FleetError::internal(format!("membership task failed: {e}")))
    }
}

impl Drop for MembershipRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Stops sent just before (head, node server) are processed meanwhile; dropping a
            // runtime is not allowed on an async thread, so a short-lived thread does it.
            let _ = std::thread::Builder::new()
                .name("fleet-membership-stop".into())
                .spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    rt.shutdown_timeout(Duration::from_secs(1));
                });
        }
    }
}
