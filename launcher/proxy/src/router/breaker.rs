//! A per-server circuit breaker: no traffic to a server that keeps failing, and one probe at a
//! time to find out whether it is back.
//!
//! Closed → `threshold` consecutive failures (connect errors, timeouts, 5xx answers) → open
//! for a backoff (0.5 s, doubled after each failed probe, at most 10 s) → half-open: the next
//! pick sends exactly one probe request; its success closes the breaker and resets the
//! backoff, its failure opens it again for twice as long. Time is passed in, so the state
//! machine is tested without sleeping.

use std::time::{Duration, Instant};

/// Backoff before the first probe.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// No traffic until `until`; then one probe.
    Open {
        until: Instant,
    },
    /// The probe is in flight.
    Probing,
}

/// Whether a server may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Yes (the breaker is closed).
    Yes,
    /// Yes, as the one probe.
    Probe,
    /// No; maybe from this instant on (`None`: when the probe in flight ends).
    No(Option<Instant>),
}

/// One server's breaker.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    state: State,
    consecutive: u32,
    backoff: Duration,
    threshold: u32,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures (at least 1).
    pub(crate) fn new(threshold: u32) -> Breaker {
        Breaker {
            state: State::Closed,
            consecutive: 0,
            backoff: INITIAL_BACKOFF,
            threshold: threshold.max(1),
        }
    }

    /// Whether a request may go to the server at `now`.
    pub(crate) fn admit(&self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open { until } if now >= until => Admit::Probe,
            State::Open { until } => Admit::No(Some(until)),
            State::Probing => Admit::No(None),
        }
    }

    /// Whether it is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// A probe was sent.
    pub(crate) fn probe_started(&mut self) {
        self.state = State::Probing;
    }

    /// A probe ended without a verdict (the client went away first): another may go now.
    pub(crate) fn probe_abandoned(&mut self, now: Instant) {
        if self.state == State::Probing {
            self.state = State::Open { until: now };
        }
    }

    /// The server answered (below 500).
    pub(crate) fn success(&mut self) {
        self.state = State::Closed;
        self.consecutive = 0;
        self.backoff = INITIAL_BACKOFF;
    }

    /// The server failed a request at `now`; returns true if this opened the breaker.
    pub(crate) fn failure(&mut self, now: Instant) -> bool {
        match self.state {
            State::Probing => {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.state = State::Open {
                    until: now + self.backoff,
                };
                true
            }
            State::Closed => {
                self.consecutive += 1;
                if self.consecutive >= self.threshold {
                    self.state = State::Open {
                        until: now + self.backoff,
                    };
                    true
                } else {
                    false
                }
            }
            // A request sent before the breaker opened failed too: nothing new.
            State::Open { .. } => false,
        }
    }

    /// Closed again with the initial backoff (an operator restored the server).
    pub(crate) fn reset(&mut self) {
        self.success();
    }

    /// `closed`, `open` or `half_open` (open with its backoff over, or probing).
    pub(crate) fn label(&self, now: Instant) -> &'static str {
        match self.admit(now) {
            Admit::Yes => "closed",
            Admit::Probe | Admit::No(None) => "half_open",
            Admit::No(Some(_)) => "open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_open_it_and_a_probe_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3);
        b.failure(t0);
        b.success();
        assert!(
            !b.failure(t0) && !b.failure(t0),
            "a success resets the count"
        );
        assert!(b.failure(t0), "the third consecutive failure opens it");
        assert_eq!(b.admit(t0), Admit::No(Some(t0 + INITIAL_BACKOFF)));
        assert_eq!(b.label(t0), "open");
        let t1 = t0 + INITIAL_BACKOFF;
        assert_eq!(b.admit(t1), Admit::Probe);
        b.probe_started();
        assert_eq!(b.admit(t1), Admit::No(None), "one probe at a time");
        b.success();
        assert_eq!(b.admit(t1), Admit::Yes);
    }

    #[test]
    fn a_failed_probe_doubles_the_backoff_up_to_ten_seconds() {
        let mut now = Instant::now();
        let mut b = Breaker::new(1);
        b.failure(now);
        let mut waits = Vec::new();
        for _ in 0..8 {
            let Admit::No(Some(until)) = b.admit(now) else {
                panic!("not open")
            };
            waits.push(until - now);
            now = until;
            assert_eq!(b.admit(now), Admit::Probe);
            b.probe_started();
            b.failure(now);
        }
        let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
    }
}
