//! The asynchronous rollout loop against the lock-step one, in the same run: a mock backend
//! whose latency varies per request and a simulated trainer that takes a fixed time per step.
//!
//! Lock-step is the same job at `max_staleness = 0`: admission stops at each batch until the
//! trainer has stepped, so workers idle through the batch's tail and the training step (what
//! `fleet run` did before the loop became asynchronous). The asynchronous loop at
//! `max_staleness = 1` keeps admitting while the trainer steps. Utilisation is the episodes'
//! busy time over `wall time × max_concurrent`.

use crate::rollout::job::RolloutJob;
use crate::rollout::run::RunOptions;
use crate::Cluster;
use fleet_actors::FleetError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one run measured.
struct Measured {
    episodes_per_s: f64,
    utilisation: f64,
    wall: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn one(
    fleet: &str,
    staleness: u64,
    episodes: u64,
    batch: u64,
    concurrent: u64,
    lat: (u64, u64),
    step_ms: u64,
    turns: u64,
) -> Result<Measured, FleetError> {
    let cluster = Cluster::local().start().await?;
    let mut job = RolloutJob::demo();
    job.episodes = episodes;
    job.batch_size = batch;
    job.max_staleness = staleness;
    job.max_concurrent = concurrent;
    job.workers.replicas = 2;
    job.workers.max_concurrent = concurrent as usize;
    job.tasks.turns = Some(turns);
    job.trainer.step_time = Some(format!("{step_ms}ms"));
    job.backend.command = Some(
        [
            "fleet",
            "mock-llm",
            "--port",
            "{port}",
            "--seed",
            "{index}",
            "--latency-ms",
            &lat.0.to_string(),
            "--latency-max-ms",
            &lat.1.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    job.output = std::env::temp_dir().join(format!(
        "fleet-bench-rollout-async-{}-{staleness}.jsonl",
        std::process::id()
    ));
    let busy = Arc::new(AtomicU64::new(0));
    let opts = RunOptions {
        observe: Some({
            let busy = busy.clone();
            Arc::new(move |_, e: &crate::rollout::Episode| {
                busy.fetch_add(e.latency_us, Ordering::Relaxed);
            })
        }),
        ..Default::default()
    };
    let report = job.run(cluster.scheduler(), fleet, opts).await;
    let _ = std::fs::remove_file(&job.output);
    cluster.shutdown().await?;
    let report = report?;
    let wall = report.elapsed.as_secs_f64().max(1e-9);
    Ok(Measured {
        episodes_per_s: report.accepted as f64 / wall,
        utilisation: busy.load(Ordering::Relaxed) as f64 / 1e6 / (wall * concurrent as f64),
        wall: report.elapsed,
    })
}

/// Runs lock-step and asynchronous alternately, `rounds` times each, and prints a table.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    fleet: &str,
    episodes: u64,
    batch: u64,
    concurrent: u64,
    lat: (u64, u64),
    step_ms: u64,
    turns: u64,
    rounds: usize,
) -> Result<String, FleetError> {
    let mut out = format!(
        "{episodes} episodes of {turns} turns, 2 workers, batch {batch}, {concurrent} at once, backend latency {}–{} ms per request, trainer step {step_ms} ms; runs interleaved, {rounds} of each\n\n| loop | round | wall | episodes/s | utilisation |\n| --- | ---: | ---: | ---: | ---: |\n",
        lat.0, lat.1
    );
    let mut sums = [(0.0, 0.0), (0.0, 0.0)];
    for r in 0..rounds.max(1) {
        for (i, staleness) in [0u64, 1].into_iter().enumerate() {
            let m = one(
                fleet, staleness, episodes, batch, concurrent, lat, step_ms, turns,
            )
            .await?;
            let name = if staleness == 0 {
                "lock-step (staleness 0)"
            } else {
                "asynchronous (staleness 1)"
            };
            out.push_str(&format!(
                "| {name} | {} | {:.2} s | {:.1} | {:.0}% |\n",
                r + 1,
                m.wall.as_secs_f64(),
                m.episodes_per_s,
                m.utilisation * 100.0
            ));
            sums[i].0 += m.episodes_per_s;
            sums[i].1 += m.utilisation;
        }
    }
    let n = rounds.max(1) as f64;
    out.push_str(&format!(
        "\nmean episodes/s: lock-step {:.1}, asynchronous {:.1}: **{:.2}×**; mean utilisation {:.0}% vs {:.0}%\n",
        sums[0].0 / n,
        sums[1].0 / n,
        (sums[1].0 / n) / (sums[0].0 / n).max(1e-9),
        sums[0].1 / n * 100.0,
        sums[1].1 / n * 100.0
    ));
    Ok(out)
}
