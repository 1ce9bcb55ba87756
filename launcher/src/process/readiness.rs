//! Waiting until a freshly started child answers HTTP.
//!
//! A server is ready when a probe path answers the expected status, not when its process
//! exists. Probes back off (the interval doubles up to a cap) so a slow starter is not hammered.
//! The wait races every probe and every sleep against the child's exit, so a child that dies
//! during start-up fails the wait at once with its exit code and last output, instead of
//! after the next probe or, worse, at the deadline.

use std::time::Duration;

use tokio::time::Instant;

use super::child::ChildWatch;
use super::error::ProcessError;
use fleet_http::{Client, HttpRequest};

/// How to tell that a child's HTTP server is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessProbe {
    /// Loopback port to probe.
    pub port: u16,
    /// Path (and query) to GET, e.g. `/health`.
    pub path: String,
    /// Status that means ready.
    pub expected_status: u16,
    /// First wait between probes; doubles after each probe up to `max_interval`.
    pub interval: Duration,
    /// Longest wait between probes.
    pub max_interval: Duration,
    /// How long to wait in all before giving up.
    pub deadline: Duration,
}

impl ReadinessProbe {
    /// `GET http://127.0.0.1:{port}{path}` expecting 200, probing from every 20 ms up to every
    /// second, for at most 60 s.
    pub fn http(port: u16, path: impl Into<String>) -> ReadinessProbe {
        ReadinessProbe {
            port,
            path: path.into(),
            expected_status: 200,
            interval: Duration::from_millis(20),
            max_interval: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
        }
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, deadline: Duration) -> ReadinessProbe {
        self.deadline = deadline;
        self
    }

    /// The probed URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }
}

/// Longest single probe; a server that accepts but does not answer is probed again.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls `probe` until it answers `expected_status`, the child exits, or the deadline passes.
pub async fn wait_ready(probe: &ReadinessProbe, child: &ChildWatch) -> Result<(), ProcessError> {
    let client = Client::new();
    let start = Instant::now();
    let deadline_at = start + probe.deadline;
    let url = probe.url();
    let request = HttpRequest::get(probe.path.clone());
    let single = fleet_http::RetryPolicy::idempotent().max_attempts(1);
    let exited = child.exited();
    tokio::pin!(exited);
    let mut interval = probe.interval;
    let mut last = "no probe finished".to_string();

    let exited_error = |info: crate::process::ExitInfo| ProcessError::ExitedBeforeReady {
        label: child.label().to_string(),
        pid: child.pid(),
        code: info.code,
        signal: info.signal,
        tail: info.tail,
    };

    loop {
        let remaining = deadline_at.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ProcessError::NotReady {
                label: child.label().to_string(),
                pid: child.pid(),
                url,
                waited: start.elapsed(),
                last,
                tail: child.tail(),
            });
        }
        let policy = single
            .clone()
            .deadline(remaining)
            .per_attempt_timeout(PROBE_TIMEOUT.min(remaining));
        let base = format!("http://127.0.0.1:{}", probe.port);
        tokio::select! {
            biased;
            info = &mut exited => return Err(exited_error(info)),
            r = fleet_http::send_with_retry_raw(&client, &base, &request, &policy, std::future::pending()) => {
                match r {
                    Ok(resp) if resp.status == probe.expected_status => {
                        tracing::info!(
                            worker = child.label(),
                            pid = child.pid(),
                            url = %url,
                            waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                            "child ready"
                        );
                        return Ok(());
                    }
                    Ok(resp) => last = format!("status {}", resp.status),
                    Err(e) => last = e.last_error.clone().unwrap_or_else(|| e.to_string()),
                }
            }
        }
        let pause = interval.min(deadline_at.saturating_duration_since(Instant::now()));
        tokio::select! {
            biased;
            info = &mut exited => return Err(exited_error(info)),
            () = tokio::time::sleep(pause) => {}
        }
        interval = (interval * 2).min(probe.max_interval.max(probe.interval));
    }
}
