//! Watching a ready child: is it still answering?
//!
//! A process that is alive is not necessarily serving: a frozen (SIGSTOPped, deadlocked,
//! swapping) inference server keeps its pid and its port while every request to it hangs.
//! Readiness says nothing about that once it has passed. The liveness loop probes the readiness
//! path at a fixed interval with a short timeout and reports each outcome (consecutive failures)
//! to its owner, which fails the service at the threshold. The loop ends when the child exits.

use std::time::Duration;

use super::child::ChildWatch;
use fleet_http::{Client, HttpRequest, RetryPolicy};

/// One probe's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessProbe {
    /// Loopback port to probe.
    pub port: u16,
    /// Path to GET.
    pub path: String,
    /// Status that means alive.
    pub expected_status: u16,
    /// Between probes.
    pub interval: Duration,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// Probes `probe` every interval until `child` exits, calling `report(failures, detail)` after
/// each probe (`failures` consecutive failed probes; 0 after a success). Returns when the child
/// exits or `report` returns `false` (the owner has seen enough).
pub async fn watch_liveness(
    probe: &LivenessProbe,
    child: &ChildWatch,
    mut report: impl FnMut(u32, String) -> bool,
) {
    let client = Client::new();
    let request = HttpRequest::get(probe.path.clone());
    let policy = RetryPolicy::idempotent()
        .max_attempts(1)
        .deadline(probe.timeout)
        .per_attempt_timeout(probe.timeout);
    let base = format!("http://127.0.0.1:{}", probe.port);
    let exited = child.exited();
    tokio::pin!(exited);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = &mut exited => return,
            () = tokio::time::sleep(probe.interval) => {}
        }
        let outcome = tokio::select! {
            biased;
            _ = &mut exited => return,
            r = fleet_http::send_with_retry_raw(&client, &base, &request, &policy, std::future::pending()) => r,
        };
        let detail = match outcome {
            Ok(resp) if resp.status == probe.expected_status => {
                failures = 0;
                "answered".to_string()
            }
            Ok(resp) => {
                failures += 1;
                format!("GET {} answered {}", probe.path, resp.status)
            }
            Err(e) => {
                failures += 1;
                format!(
                    "GET {} got no answer within {:?}: {}",
                    probe.path,
                    probe.timeout,
                    e.last_error.clone().unwrap_or_else(|| e.to_string())
                )
            }
        };
        if !report(failures, detail) {
            return;
        }
    }
}
