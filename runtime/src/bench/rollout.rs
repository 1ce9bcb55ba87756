//! Episodes per second and the controller's overhead per episode, with a zero-latency mock
//! backend, for 1 and 2 rollout workers.

use super::stats::{fmt, Samples};
use crate::rollout::job::RolloutJob;
use crate::Cluster;
use fleet_actors::FleetError;
use std::time::Duration;

/// Runs `episodes` episodes (one turn each) on 1 and then 2 workers.
pub async fn run(fleet: &str, episodes: u64) -> Result<String, FleetError> {
    let mut out = String::from(
        "| workers | episodes | episodes/s | episode latency p50 (controller) | controller overhead p50 | p90 |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for workers in [1u32, 2] {
        let cluster = Cluster::local().start().await?;
        let mut job = RolloutJob::demo();
        job.episodes = episodes;
        job.batch_size = episodes;
        job.max_concurrent = 8 * workers as u64;
        job.workers.replicas = workers;
        job.tasks.turns = Some(1);
        job.output =
            std::env::temp_dir().join(format!("fleet-bench-rollout-{}.jsonl", std::process::id()));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let opts = crate::rollout::run::RunOptions {
            observe: Some({
                let seen = seen.clone();
                std::sync::Arc::new(move |_, e: &crate::rollout::Episode| {
                    if let Ok(mut v) = seen.lock() {
                        v.push((e.latency_us, e.overhead_us));
                    }
                })
            }),
            ..Default::default()
        };
        let report = job.run(cluster.scheduler(), fleet, opts).await?;
        let eps = seen.lock().map(|v| v.clone()).unwrap_or_default();
        let _ = std::fs::remove_file(&job.output);
        cluster.shutdown().await?;
        let lat = Samples::new(
            "latency",
            eps.iter().map(|e| Duration::from_micros(e.0)).collect(),
        );
        let over = Samples::new(
            "overhead",
            eps.iter().map(|e| Duration::from_micros(e.1)).collect(),
        );
        out.push_str(&format!(
            "| {workers} | {} | {:.0} | {} | {} | {} |\n",
            report.accepted,
            report.accepted as f64 / report.elapsed.as_secs_f64(),
            fmt(lat.p50()),
            fmt(over.p50()),
            fmt(over.pct(90.0)),
        ));
    }
    Ok(out)
}
