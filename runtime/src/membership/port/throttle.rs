//! At most one log line per interval for events a peer can make happen as often as it likes
//! (failed accepts, evicted or timed-out handshakes): the first is logged at once, later ones
//! are counted and reported with the next line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of event's log budget.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A budget of one line per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; `Some(n)` when a line should be logged now, `n` being the events
    /// not logged since the last line.
    pub(crate) fn hit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let skipped = s.1;
                *s = (Some(now), 0);
                Some(skipped)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_events_logs_one_line_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.hit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.hit(), None);
        }
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.hit(), Some(0));
        assert_eq!(t.hit(), Some(0));
    }
}
