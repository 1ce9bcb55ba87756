//! Generation throughput while weights move, against steady state, in the same run.
//!
//! The same rollout job three ways over a pool of 4 `fleet mock-llm` servers that generate at a
//! fixed token rate: *steady* (no weight updates), *rolling* (k = 1 of 4: one server at a time
//! drains, loads a weights file of `size` bytes and comes back), and *stop-the-world* (every
//! router holds requests while all servers load). The simulated trainer steps take no time, so
//! updates run back to back through the whole job: its throughput is the throughput *during*
//! updates. The staleness bound is lifted so admission never waits for a version (otherwise
//! the rate measured is the update rate, not the servers' capacity during updates). Reported: output tokens/s (what the agents' generations got), episodes/s, the update
//! latency per version (p50, max), and each mode's tokens/s over steady's.

use crate::rollout::job::{InferenceSection, RolloutJob, WeightsSection};
use crate::rollout::run::RunOptions;
use crate::Cluster;
use fleet_actors::FleetError;
use std::time::Duration;

/// The knobs of one comparison.
#[derive(Clone, Debug)]
pub struct Params {
    /// Episodes per run.
    pub episodes: u64,
    /// Accepted episodes per version.
    pub batch: u64,
    /// Episodes at once.
    pub concurrent: u64,
    /// Tokens per second per request of the mock servers.
    pub tokens_per_s: u64,
    /// Tokens per turn.
    pub max_tokens: u64,
    /// Weights file per version, bytes.
    pub size: u64,
    /// Runs of each mode (interleaved).
    pub rounds: usize,
}

struct Measured {
    tokens_per_s: f64,
    episodes_per_s: f64,
    updates: Vec<Duration>,
}

async fn one(fleet: &str, p: &Params, mode: Option<&str>) -> Result<Measured, FleetError> {
    let cluster = Cluster::local().start().await?;
    let mut job = RolloutJob::demo();
    job.episodes = p.episodes;
    job.batch_size = p.batch;
    // Admission must not wait for the trainer: with a tight staleness bound the job's rate is
    // the version rate (one update per step), and the comparison would measure the bound, not
    // what the servers can generate while they update.
    job.max_staleness = 1_000_000;
    job.max_concurrent = p.concurrent;
    job.workers.replicas = 2;
    job.workers.max_concurrent = p.concurrent as usize;
    job.tasks.turns = Some(2);
    job.trainer.step_time = Some("0ms".into());
    let dir = std::env::temp_dir().join(format!("fleet-bench-weights-{}", std::process::id()));
    job.inference = Some(InferenceSection {
        servers: 4,
        command: Some(
            [
                "fleet",
                "mock-llm",
                "--port",
                "{port}",
                "--tokens-per-s",
                &p.tokens_per_s.to_string(),
                "--max-tokens",
                &p.max_tokens.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        api: None,
        ready_path: None,
        ready_timeout: None,
        max_restarts: None,
        cpu: 0.0,
        gpu: 0,
    });
    job.weights = mode.map(|m| WeightsSection {
        update: Some(m.to_string()),
        k: Some(1),
        size: Some(p.size.to_string()),
        dir: Some(dir.join("weights")),
        ..Default::default()
    });
    job.output = dir.join(format!("out-{}.jsonl", mode.unwrap_or("steady")));
    let _ = std::fs::create_dir_all(&dir);
    let report = job
        .run(cluster.scheduler(), fleet, RunOptions::default())
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    cluster.shutdown().await?;
    let report = report?;
    let wall = report.elapsed.as_secs_f64().max(1e-9);
    let tokens = report.stats.as_ref().map_or(0, |s| s.output_tokens) as f64;
    let mut updates: Vec<Duration> = report.updates.iter().filter_map(|u| u.update).collect();
    updates.sort();
    Ok(Measured {
        tokens_per_s: tokens / wall,
        episodes_per_s: report.accepted as f64 / wall,
        updates,
    })
}

/// Runs steady, rolling and stop-the-world interleaved, `rounds` times each; a table.
pub async fn run(fleet: &str, p: &Params) -> Result<String, FleetError> {
    let modes: [(&str, Option<&str>); 3] = [
        ("steady (no updates)", None),
        ("rolling, k = 1 of 4", Some("rolling")),
        ("stop-the-world", Some("stop_the_world")),
    ];
    let mut out = format!(
        "{} episodes of 2 turns, 2 rollout workers routing over 4 mock servers at {} tokens/s per request ({} tokens per turn), {} at once, a version every {} episodes with back-to-back updates of {} MiB; {} round(s) interleaved\n\n| mode | round | output tokens/s | episodes/s | updates | update p50 | update max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        p.episodes,
        p.tokens_per_s,
        p.max_tokens,
        p.concurrent,
        p.batch,
        p.size >> 20,
        p.rounds
    );
    let mut sums = [0.0f64; 3];
    for r in 0..p.rounds.max(1) {
        for (i, (name, mode)) in modes.iter().enumerate() {
            let m = one(fleet, p, *mode).await?;
            let (p50, max) = match m.updates.len() {
                0 => ("-".to_string(), "-".to_string()),
                n => (
                    format!("{:.0?}", m.updates[n / 2]),
                    format!("{:.0?}", m.updates[n - 1]),
                ),
            };
            out.push_str(&format!(
                "| {name} | {} | {:.0} | {:.1} | {} | {p50} | {max} |\n",
                r + 1,
                m.tokens_per_s,
                m.episodes_per_s,
                m.updates.len()
            ));
            sums[i] += m.tokens_per_s;
        }
    }
    out.push_str(&format!(
        "\nmean output tokens/s over steady: rolling **{:.2}×**, stop-the-world **{:.2}×**\n",
        sums[1] / sums[0].max(1e-9),
        sums[2] / sums[0].max(1e-9)
    ));
    Ok(out)
}
