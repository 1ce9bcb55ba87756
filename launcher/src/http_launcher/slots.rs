//! The launcher's forwards in flight: a bounded number of slots, a deadline on the wait for
//! one, and cancellation by request id.
//!
//! Every forward runs in a task of its own so that the actor keeps answering. Without a bound
//! on the wait for a slot, a flood of calls to a slow child parks one task per call, each
//! holding its request, long after its caller gave up (review C11, C18). Here a forward waits
//! for a slot at most until its deadline, and the time it waited is taken off the budget it
//! passes on. A caller that gives up sends `Control::Cancel` with its request id: the forward
//! of that id is aborted, whether it waits for a slot or is sending (dropping the HTTP request
//! closes the connection, and an rpc-server child then drops the call unrun if it was still
//! queued there).

use fleet_actors::{FleetError, RequestId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// The slots and the forwards that can be cancelled.
#[derive(Clone)]
pub(crate) struct Slots {
    limit: usize,
    permits: Arc<Semaphore>,
    /// Forwards holding a slot now.
    pub(crate) in_flight: Arc<AtomicU64>,
    /// Forwards waiting for a slot now.
    pub(crate) waiting: Arc<AtomicU64>,
    /// Forwards finished (answered, failed, timed out).
    pub(crate) done: Arc<AtomicU64>,
    /// Forwards that carry a request id, by id (a number tells a re-sent call's forward from
    /// the one it replaced).
    cancellable: Arc<Mutex<HashMap<RequestId, (u64, AbortHandle)>>>,
    next: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Slots {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            in_flight: Arc::new(AtomicU64::new(0)),
            waiting: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicU64::new(0)),
            cancellable: Arc::new(Mutex::new(HashMap::new())),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs `f` in a task once a slot is free, with what is left of `deadline`; `answer` gets
    /// its result, or a `Timeout` naming the slots when none came free in time. A forward with
    /// a request id can be cancelled ([`Slots::cancel`]); then `answer` is never called (its
    /// caller is gone).
    pub(crate) fn spawn<R, Fut>(
        &self,
        worker: String,
        deadline: Duration,
        request_id: Option<RequestId>,
        answer: impl FnOnce(Result<R, FleetError>) + Send + 'static,
        f: impl FnOnce(Duration) -> Fut + Send + 'static,
    ) where
        Fut: std::future::Future<Output = Result<R, FleetError>> + Send + 'static,
        R: Send + 'static,
    {
        let slots = self.clone();
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let id = request_id.clone();
        // Held while spawning, so the task cannot finish (and forget its entry) before the
        // entry is there.
        let mut cancellable = lock(&self.cancellable);
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let permit = {
                let _waiting = Count::up(&slots.waiting);
                tokio::time::timeout(deadline, slots.permits.clone().acquire_owned()).await
            };
            let r = match permit {
                Ok(Ok(_permit)) => {
                    let left = deadline
                        .saturating_sub(start.elapsed())
                        .max(Duration::from_millis(1));
                    let _in_flight = Count::up(&slots.in_flight);
                    let _gauge = InFlightGauge::up();
                    f(left).await
                }
                Ok(Err(_)) => Err(FleetError::internal(format!(
                    "worker {worker}: its forward slots were closed"
                ))),
                Err(_) => Err(FleetError::timeout(
                    format!(
                        "a forward slot on worker {worker} (all {} were busy for the whole deadline; the call was never sent)",
                        slots.limit
                    ),
                    deadline,
                )),
            };
            slots.done.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = &id {
                let mut c = lock(&slots.cancellable);
                if c.get(id).is_some_and(|(k, _)| *k == key) {
                    c.remove(id);
                }
            }
            answer(r);
        });
        if let Some(id) = request_id {
            cancellable.insert(id, (key, task.abort_handle()));
        }
    }

    /// Aborts the forward of `id`, if one is waiting or in flight; returns whether one was.
    pub(crate) fn cancel(&self, id: &RequestId) -> bool {
        match lock(&self.cancellable).remove(id) {
            Some((_, handle)) => {
                handle.abort();
                self.done.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// The process-wide gauge of forwards holding a slot, held up like [`Count`].
struct InFlightGauge;

impl InFlightGauge {
    fn up() -> Self {
        metrics::gauge!("fleet_forwards_in_flight").increment(1.0);
        InFlightGauge
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        metrics::gauge!("fleet_forwards_in_flight").decrement(1.0);
    }
}

/// A counter held up for as long as the value lives (also when its task is aborted).
struct Count<'a>(&'a AtomicU64);

impl<'a> Count<'a> {
    fn up(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Count(c)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_forward_waits_for_a_slot_only_until_its_deadline_and_says_so() {
        let slots = Slots::new(1);
        let (release, held) = oneshot::channel::<()>();
        let (tx1, rx1) = oneshot::channel();
        slots.spawn(
            "w/0".into(),
            Duration::from_secs(30),
            None,
            move |r| {
                let _ = tx1.send(r);
            },
            move |_| async move {
                let _ = held.await;
                Ok(1u32)
            },
        );
        let (tx2, rx2) = oneshot::channel();
        slots.spawn(
            "w/0".into(),
            Duration::from_millis(50),
            None,
            move |r| {
                let _ = tx2.send(r);
            },
            |_| async { Ok(2u32) },
        );
        let e = rx2.await.unwrap().unwrap_err();
        assert!(matches!(e, FleetError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("never sent"), "{e}");
        let _ = release.send(());
        assert_eq!(rx1.await.unwrap().unwrap(), 1);
    }

    #[tokio::test]
    async fn the_time_spent_waiting_for_a_slot_is_taken_off_the_budget() {
        let slots = Slots::new(1);
        let (release, held) = oneshot::channel::<()>();
        slots.spawn(
            "w/0".into(),
            Duration::from_secs(30),
            None,
            |_: Result<(), FleetError>| {},
            move |_| async move {
                let _ = held.await;
                Ok(())
            },
        );
        let (tx, rx) = oneshot::channel();
        slots.spawn(
            "w/0".into(),
            Duration::from_secs(10),
            None,
            |_: Result<(), FleetError>| {},
            move |left| async move {
                let _ = tx.send(left);
                Ok(())
            },
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = release.send(());
        let left = rx.await.unwrap();
        assert!(left <= Duration::from_millis(9_800), "{left:?}");
    }

    #[tokio::test]
    async fn a_cancelled_forward_is_aborted_and_frees_its_slot() {
        let slots = Slots::new(1);
        let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
        struct OnDrop(Option<oneshot::Sender<()>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if let Some(t) = self.0.take() {
                    let _ = t.send(());
                }
            }
        }
        let guard = OnDrop(Some(dropped_tx));
        let id = RequestId::from("step-1");
        slots.spawn(
            "w/0".into(),
            Duration::from_secs(30),
            Some(id.clone()),
            |_: Result<(), FleetError>| panic!("a cancelled forward is never answered"),
            move |_| async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            },
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while slots.in_flight.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert!(slots.cancel(&id));
        assert!(!slots.cancel(&id), "a second cancel finds nothing");
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .unwrap()
            .unwrap();
        // The slot is free again.
        let (tx, rx) = oneshot::channel();
        slots.spawn(
            "w/0".into(),
            Duration::from_secs(5),
            None,
            move |r| {
                let _ = tx.send(r);
            },
            |_| async { Ok(7u8) },
        );
        assert_eq!(rx.await.unwrap().unwrap(), 7);
    }
}
