//! The mock's generation gate: pause/continue, the in-flight count, aborts, and the weights a
//! request generates with.
//!
//! One `tokio::sync::watch` channel holds `{paused, in_flight, abort_epoch}`. Admission is a
//! check-and-increment inside `send_if_modified` (atomic under the channel's lock), so a pause
//! can never miss a request that slipped in between "is it paused?" and "count me": once
//! `pause` has set the flag, the in-flight count only goes down, and `wait_idle` (a `wait_for`
//! on the same channel, no polling) answers when it reaches 0. A held request waits on the
//! same channel for `paused == false`, bounded by its own deadline. An abort bumps the epoch;
//! every generating request watches it and ends with `finish_reason: "abort"`.
//!
//! A request reads the current weights right after it is admitted and keeps that `Arc` to its
//! end: its version is fixed when it starts generating, whatever is loaded meanwhile.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::weights::Weights;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GateState {
    pub(crate) paused: bool,
    pub(crate) in_flight: usize,
    abort_epoch: u64,
}

/// Shared by the mock's handlers.
pub(crate) struct Gate {
    state: watch::Sender<GateState>,
    weights: RwLock<Arc<Weights>>,
    /// Serialises weight loads (the last one to finish wins).
    pub(crate) loading: tokio::sync::Mutex<()>,
}

/// The request waited its whole deadline while the mock was paused.
#[derive(Debug)]
pub(crate) struct Held(pub(crate) Duration);

/// A request that is generating: counted in flight until dropped.
pub(crate) struct Generating {
    gate: Arc<Gate>,
    /// The weights it generates with.
    pub(crate) weights: Arc<Weights>,
    epoch: u64,
    rx: watch::Receiver<GateState>,
}

impl Generating {
    /// Resolves when the request is aborted by a `pause_generation` in `abort` mode.
    pub(crate) async fn aborted(&mut self) {
        let epoch = self.epoch;
        if self.rx.wait_for(|s| s.abort_epoch != epoch).await.is_err() {
            // The gate is gone (the mock is stopping): never resolve.
            std::future::pending::<()>().await;
        }
    }

    /// Whether an abort already happened (without waiting).
    pub(crate) fn is_aborted(&self) -> bool {
        self.rx.borrow().abort_epoch != self.epoch
    }
}

impl Drop for Generating {
    fn drop(&mut self) {
        self.gate
            .state
            .send_modify(|s| s.in_flight = s.in_flight.saturating_sub(1));
    }
}

impl Gate {
    pub(crate) fn new(weights: Weights) -> Gate {
        Gate {
            state: watch::Sender::new(GateState::default()),
            weights: RwLock::new(Arc::new(weights)),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The state now.
    pub(crate) fn state(&self) -> GateState {
        *self.state.borrow()
    }

    /// The weights new requests generate with.
    pub(crate) fn weights(&self) -> Arc<Weights> {
        Arc::clone(&self.weights.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes `w` the weights of requests admitted from now on.
    pub(crate) fn set_weights(&self, w: Weights) {
        *self.weights.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(w);
    }

    /// Admits a request to generate, holding it while the mock is paused, for at most `hold`.
    pub(crate) async fn admit(self: &Arc<Self>, hold: Duration) -> Result<Generating, Held> {
        let deadline = tokio::time::Instant::now() + hold;
        let mut rx = self.state.subscribe();
        // Bounded: every turn either admits, or waits for a change of the pause flag within
        // the deadline.
        loop {
            let mut epoch = None;
            self.state.send_if_modified(|s| {
                if s.paused {
                    return false;
                }
                s.in_flight += 1;
                epoch = Some(s.abort_epoch);
                true
            });
            if let Some(epoch) = epoch {
                return Ok(Generating {
                    gate: Arc::clone(self),
                    weights: self.weights(),
                    epoch,
                    rx: self.state.subscribe(),
                });
            }
            match tokio::time::timeout_at(deadline, rx.wait_for(|s| !s.paused)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) | Err(_) => return Err(Held(hold)),
            }
        }
    }

    /// Pauses admission; with `abort`, ends every generating request at once. Returns how many
    /// requests were generating.
    pub(crate) fn pause(&self, abort: bool) -> usize {
        let mut n = 0;
        self.state.send_modify(|s| {
            s.paused = true;
            n = s.in_flight;
            if abort {
                s.abort_epoch += 1;
            }
        });
        n
    }

    /// Admits requests again; returns whether it was paused.
    pub(crate) fn resume(&self) -> bool {
        let mut was = false;
        self.state.send_modify(|s| {
            was = s.paused;
            s.paused = false;
        });
        was
    }

    /// Ends every generating request at once (without pausing).
    pub(crate) fn abort_all(&self) -> usize {
        let mut n = 0;
        self.state.send_modify(|s| {
            n = s.in_flight;
            s.abort_epoch += 1;
        });
        n
    }

    /// Waits until no request is generating, for at most `timeout`; `Err(n)` with the count
    /// still generating at the timeout.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> Result<(), usize> {
        let mut rx = self.state.subscribe();
        let idle = tokio::time::timeout(timeout, rx.wait_for(|s| s.in_flight == 0))
            .await
            .is_ok_and(|r| r.is_ok());
        if idle {
            Ok(())
        } else {
            Err(self.state().in_flight)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_gate_holds_until_continue_and_pause_waits_for_in_flight() {
        let gate = Arc::new(Gate::new(Weights::initial(0)));
        let first = gate.admit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(gate.pause(false), 1);
        assert_eq!(gate.wait_idle(Duration::from_millis(20)).await, Err(1));
        let g = Arc::clone(&gate);
        let held = tokio::spawn(async move { g.admit(Duration::from_secs(5)).await.is_ok() });
        drop(first);
        gate.wait_idle(Duration::from_secs(5)).await.unwrap();
        assert!(
            !held.is_finished(),
            "a held request is not admitted while paused"
        );
        gate.resume();
        assert!(held.await.unwrap());
    }

    #[tokio::test]
    async fn a_held_request_gives_up_at_its_deadline() {
        let gate = Arc::new(Gate::new(Weights::initial(0)));
        gate.pause(false);
        assert!(gate.admit(Duration::from_millis(20)).await.is_err());
        assert_eq!(gate.state().in_flight, 0);
    }

    #[tokio::test]
    async fn abort_wakes_generating_requests() {
        let gate = Arc::new(Gate::new(Weights::initial(0)));
        let mut g = gate.admit(Duration::from_secs(5)).await.unwrap();
        assert!(!g.is_aborted());
        gate.pause(true);
        tokio::time::timeout(Duration::from_secs(5), g.aborted())
            .await
            .unwrap();
    }
}
