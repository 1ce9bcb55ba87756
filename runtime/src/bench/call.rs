//! A call through the scheduler handle to an RpcServer engine, against a raw ractor
//! request-reply to an actor doing the same work, in the same process and run.

use super::baseline::{RawCounter, RawMsg};
use super::stats::{header, row, Samples};
use crate::Cluster;
use fleet_actors::{CallOptions, FleetError, Job, WorkerId};
use ractor::{Actor, ActorRef};
use std::time::{Duration, Instant};

/// Runs `iters` sequential calls of each kind (after a warm-up) and returns the table.
pub async fn run(iters: usize) -> Result<String, FleetError> {
    let cluster = Cluster::local().start().await?;
    let s = cluster.scheduler().clone();
    s.create_workers(Job::new("bench", 1)).await?;
    let w = WorkerId::new("bench", 0);
    let engine = s.create_engine(&w, "c", "counter", &()).await?;
    let (raw, _) = Actor::spawn(None, RawCounter, ())
        .await
        .map_err(FleetError::internal)?;

    let idem = CallOptions::default()
        .idempotent(true)
        .timeout(Duration::from_secs(5));
    let non_idem = CallOptions::default().timeout(Duration::from_secs(5));
    // From the thread that blocks on main (where `#[tokio::main]` runs a driver's code), then
    // from a task on a runtime worker thread.
    let main_thread = measure(&raw, &engine, &idem, &non_idem, iters).await?;
    let on_worker = {
        let (raw, engine, idem, non_idem) =
            (raw.clone(), engine.clone(), idem.clone(), non_idem.clone());
        tokio::spawn(async move { measure(&raw, &engine, &idem, &non_idem, iters).await })
            .await
            .map_err(FleetError::internal)??
    };
    raw.stop(None);
    cluster.shutdown().await?;
    Ok(format!(
        "Caller on the main thread (like a `#[tokio::main]` driver):\n\n{main_thread}\nCaller in a task on a runtime worker thread:\n\n{on_worker}"
    ))
}

async fn measure(
    raw: &ActorRef<RawMsg>,
    engine: &crate::EngineHandle,
    idem: &CallOptions,
    non_idem: &CallOptions,
    iters: usize,
) -> Result<String, FleetError> {
    let warm = iters / 10 + 100;
    let mut raw_s = Vec::with_capacity(iters);
    let mut idem_s = Vec::with_capacity(iters);
    let mut dedupe_s = Vec::with_capacity(iters);
    // Interleave the three so that drift in machine load hits them alike.
    for i in 0..(warm + iters) {
        let t = Instant::now();
        let _ = raw
            .call(|p| RawMsg::Incr(1, p), Some(Duration::from_secs(5)))
            .await
            .map_err(FleetError::internal)?;
        let d_raw = t.elapsed();
        let t = Instant::now();
        let _: u64 = engine.call("incr", &1u64, idem).await?;
        let d_idem = t.elapsed();
        let t = Instant::now();
        let _: u64 = engine.call("incr", &1u64, non_idem).await?;
        let d_dedupe = t.elapsed();
        if i >= warm {
            raw_s.push(d_raw);
            idem_s.push(d_idem);
            dedupe_s.push(d_dedupe);
        }
    }
    let raw_s = Samples::new("raw ractor call (actor adds and replies)", raw_s);
    let idem_s = Samples::new("scheduler handle → RpcServer engine, idempotent", idem_s);
    let dedupe_s = Samples::new(
        "scheduler handle → RpcServer engine, non-idempotent (request id recorded)",
        dedupe_s,
    );
    Ok(format!(
        "{}\n{}\n{}\n{}\n",
        header(),
        row(&raw_s, None),
        row(&idem_s, Some(&raw_s)),
        row(&dedupe_s, Some(&raw_s))
    ))
}
