//! Counters a test reads from `GET /stats` to observe what reached the backend, for example
//! that a client's disconnect really cancelled the generation upstream.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters.
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    completed: AtomicU64,
    abandoned: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    failed_503: AtomicU64,
    failed_drop: AtomicU64,
}

/// A copy of the counters, as `GET /stats` returns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Completion requests received (chat and legacy, streamed or not).
    pub requests: u64,
    /// Non-streamed completions answered.
    pub completed: u64,
    /// Non-streamed completions whose client left before the answer.
    pub abandoned: u64,
    /// Streams begun.
    pub streams_started: u64,
    /// Streams that sent `data: [DONE]`.
    pub streams_completed: u64,
    /// Streams stopped because the client went away.
    pub streams_cancelled: u64,
    /// Injected 503 answers.
    pub failed_503: u64,
    /// Injected connection drops.
    pub failed_drop: u64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Requests,
    Completed,
    Abandoned,
    StreamsStarted,
    StreamsCompleted,
    StreamsCancelled,
    Failed503,
    FailedDrop,
}

impl MockStats {
    pub(crate) fn bump(&self, c: Counter) {
        let a = match c {
            Counter::Requests => &self.requests,
            Counter::Completed => &self.completed,
            Counter::Abandoned => &self.abandoned,
            Counter::StreamsStarted => &self.streams_started,
            Counter::StreamsCompleted => &self.streams_completed,
            Counter::StreamsCancelled => &self.streams_cancelled,
            Counter::Failed503 => &self.failed_503,
            Counter::FailedDrop => &self.failed_drop,
        };
        a.fetch_add(1, Ordering::SeqCst);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        StatsSnapshot {
            requests: g(&self.requests),
            completed: g(&self.completed),
            abandoned: g(&self.abandoned),
            streams_started: g(&self.streams_started),
            streams_completed: g(&self.streams_completed),
            streams_cancelled: g(&self.streams_cancelled),
            failed_503: g(&self.failed_503),
            failed_drop: g(&self.failed_drop),
        }
    }
}
