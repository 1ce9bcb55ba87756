//! Time to create N RpcServer workers and have every one answer a ping.

use super::stats::{fmt, Samples};
use crate::Cluster;
use fleet_actors::{FleetError, Job};
use std::time::{Duration, Instant};

/// Creates and deletes `workers` workers `rounds` times; returns the table.
pub async fn run(workers: u32, rounds: usize) -> Result<String, FleetError> {
    let cluster = Cluster::local().start().await?;
    let s = cluster.scheduler().clone();
    let mut samples = Vec::new();
    for round in 0..rounds + 1 {
        let t = Instant::now();
        s.create_workers(Job::new("spawn", workers)).await?;
        s.get_workers("spawn", Duration::from_secs(30)).await?;
        let d = t.elapsed();
        s.delete_workers(Some("spawn"), false).await?;
        if round > 0 {
            samples.push(d);
        }
    }
    cluster.shutdown().await?;
    let s = Samples::new(
        format!("create {workers} RpcServer workers + all answer a ping"),
        samples,
    );
    Ok(format!(
        "| path | rounds | median | p90 | per worker (median) |\n| --- | ---: | ---: | ---: | ---: |\n| {} | {} | {} | {} | {} |\n",
        s.name,
        s.len(),
        fmt(s.p50()),
        fmt(s.pct(90.0)),
        fmt(s.p50() / workers.max(1)),
    ))
}
