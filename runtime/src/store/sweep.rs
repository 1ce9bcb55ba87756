//! The TTL sweeper: one task per store that sleeps until the earliest lease deadline (or until
//! a put or renewal with a TTL wakes it to look again), removes what has run out and deletes
//! its files. With no TTL in the store it sleeps until woken: nothing polls.

use super::Inner;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn spawn(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    tokio::spawn(async move {
        loop {
            let next = inner.catalog().next_expiry();
            let wait = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = inner.sweep_wake.notified() => continue,
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
            }
            let gone = inner.catalog().expired(Instant::now());
            for e in gone {
                tracing::info!(object = %e.obj.id, name = %e.obj.name, holder = %e.holder, node = %inner.node, "object lease ran out; removed");
                inner.remove_file(&e.path);
            }
        }
    });
}
