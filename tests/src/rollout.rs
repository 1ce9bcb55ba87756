//! Helpers for rollout tests: counting accepted episodes as a job runs, reading a job's output
//! back, and the mock backend command.

use fleet_runtime::rollout::output::EpisodeKey;
use fleet_runtime::rollout::run::Observer;
use fleet_runtime::rollout::Episode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A counter of accepted episodes, and the observer (for `RunOptions::observe`) that feeds it.
pub fn count_accepted() -> (Arc<AtomicU64>, Observer) {
    let n = Arc::new(AtomicU64::new(0));
    let seen = n.clone();
    let observer: Observer = Arc::new(move |_: EpisodeKey, e: &Episode| {
        if e.trajectory.is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (n, observer)
}

/// The lines of a job's output (none if it does not exist); panics on a line that is not JSON.
pub fn output_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// `(task_index, sample)` of every line, asserting that none appears twice.
pub fn keys_once(lines: &[Value]) -> BTreeSet<(u64, u64)> {
    let mut seen = BTreeSet::new();
    for l in lines {
        let k = (
            l["task_index"].as_u64().expect("task_index"),
            l["sample"].as_u64().expect("sample"),
        );
        assert!(seen.insert(k), "episode {k:?} is in the output twice");
    }
    seen
}

/// `fleet mock-llm` as a backend command (with `fleet` resolved per node) answering after
/// `latency_ms`.
pub fn mock_backend(latency_ms: u64) -> Vec<String> {
    [
        "fleet",
        "mock-llm",
        "--port",
        "{port}",
        "--seed",
        "{index}",
        "--latency-ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([latency_ms.to_string()])
    .collect()
}

/// Starts `job` on `scheduler` in a task (with the `fleet` binary under test), counting its
/// accepted episodes as it runs.
pub fn spawn_job(
    scheduler: &fleet_runtime::Scheduler,
    job: &fleet_runtime::rollout::job::RolloutJob,
) -> (
    Arc<AtomicU64>,
    tokio::task::JoinHandle<
        Result<fleet_runtime::rollout::run::JobReport, fleet_actors::FleetError>,
    >,
) {
    let (accepted, observer) = count_accepted();
    let opts = fleet_runtime::rollout::run::RunOptions {
        observe: Some(observer),
        ..Default::default()
    };
    let fleet = crate::fleet_bin().to_string_lossy().into_owned();
    let (s, job) = (scheduler.clone(), job.clone());
    (
        accepted,
        tokio::spawn(async move { job.run(&s, &fleet, opts).await }),
    )
}
