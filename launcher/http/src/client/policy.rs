//! The retry policy: what an attempt's outcome means, and how long to wait before the next.
//!
//! [`classify`] is the only place that decides whether to retry. It is pure (no clock, no
//! I/O), so the whole decision table is a unit test. Which transport failures count as "not
//! sent" is decided where hyper's errors are inspected (`client.rs`); this file only sees the
//! resulting [`Outcome`].

use std::time::{Duration, SystemTime};

/// What one attempt ended with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status (and maybe a parsed `Retry-After`).
    Status {
        /// Status code.
        status: u16,
        /// The server's `Retry-After`, if it sent a valid one.
        retry_after: Option<Duration>,
    },
    /// Opening the connection failed (refused, unreachable, connect error): nothing was sent.
    ConnectFailed,
    /// The connection closed before the request was written: nothing was sent.
    NotSent,
    /// The connection failed after the request may have been written (reset, closed before
    /// the response, body read error): the server may have acted on it.
    MaybeSent,
    /// The per-attempt timeout fired: the server may be acting on it right now.
    AttemptTimeout,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again, after at least `after` when the server said so (`Retry-After`).
    Retry {
        /// The server's minimum wait, if any; backoff applies on top of it.
        after: Option<Duration>,
    },
    /// Stop: this outcome is the answer (success or an error).
    Final,
}

/// How safe it is to send a request again once it may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    /// Running the request twice is harmless (GET, PUT of the same value, ...).
    pub idempotent: bool,
    /// The request carries a request id (`X-Request-Id`) that the server deduplicates, so a
    /// repeat is answered from its record instead of running again.
    pub has_request_id: bool,
}

impl Resend {
    /// Whether a repeat of a request that may have run is harmless.
    pub fn safe(self) -> bool {
        self.idempotent || self.has_request_id
    }
}

/// Decides whether an outcome is retried.
///
/// * Nothing was sent (connect failed, closed before the request was written): always retried.
/// * 502 and 504: a gateway may well have forwarded the request before it failed, so only a
///   request that is safe to repeat ([`Resend::safe`]) is sent again.
/// * 503 and 429: retried when safe; for any other request only when the server sent
///   `Retry-After`, which says it refused the request before acting on it.
/// * Failure after sending, or an attempt timeout: retried only when `idempotent` (the
///   caller's declaration; a caller whose server deduplicates by request id declares it so).
/// * Anything else (1xx-4xx, 500, other 5xx) is final.
pub fn classify(outcome: &Outcome, resend: Resend) -> Decision {
    match *outcome {
        Outcome::Status {
            status: 502 | 504,
            retry_after,
        } if resend.safe() => Decision::Retry { after: retry_after },
        Outcome::Status {
            status: 429 | 503,
            retry_after,
        } if resend.safe() || retry_after.is_some() => Decision::Retry { after: retry_after },
        Outcome::Status { .. } => Decision::Final,
        Outcome::ConnectFailed | Outcome::NotSent => Decision::Retry { after: None },
        Outcome::MaybeSent | Outcome::AttemptTimeout => {
            if resend.idempotent {
                Decision::Retry { after: None }
            } else {
                Decision::Final
            }
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date (`"Wed, 21 Oct 2015
/// 07:28:00 GMT"`, measured from `now`; a date in the past means no wait). Anything else is
/// `None`, and the caller falls back to its own backoff. Waits are capped at one day.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        let at = httpdate::parse_http_date(value).ok()?;
        let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
        return Some(wait.min(Duration::from_secs(86_400)));
    }
    // Anything past a day is as good as "not within this call's deadline".
    let secs = value.parse::<u64>().unwrap_or(u64::MAX).min(86_400);
    Some(Duration::from_secs(secs))
}

/// How a call retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1 is used).
    pub max_attempts: u32,
    /// Backoff cap before the first retry; doubles per retry.
    pub base_backoff: Duration,
    /// Largest backoff cap.
    pub max_backoff: Duration,
    /// Overall deadline of the call, from its start, covering attempts and sleeps.
    pub deadline: Duration,
    /// Bound on one attempt: connect, send, and read the whole response.
    pub per_attempt_timeout: Duration,
    /// Whether the request may safely run twice; decides whether timeouts and failures after
    /// sending are retried.
    pub idempotent: bool,
}

impl RetryPolicy {
    /// Defaults for an idempotent call: 5 attempts, 100 ms base, 5 s cap, 60 s deadline, 30 s
    /// per attempt.
    pub fn idempotent() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            per_attempt_timeout: Duration::from_secs(30),
            idempotent: true,
        }
    }

    /// The same defaults for a call that must not run twice.
    pub fn non_idempotent() -> RetryPolicy {
        RetryPolicy {
            idempotent: false,
            ..RetryPolicy::idempotent()
        }
    }

    /// Sets `max_attempts`.
    pub fn max_attempts(mut self, n: u32) -> RetryPolicy {
        self.max_attempts = n;
        self
    }

    /// Sets `base_backoff` and `max_backoff`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> RetryPolicy {
        self.base_backoff = base;
        self.max_backoff = max;
        self
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, deadline: Duration) -> RetryPolicy {
        self.deadline = deadline;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn per_attempt_timeout(mut self, timeout: Duration) -> RetryPolicy {
        self.per_attempt_timeout = timeout;
        self
    }
}

/// The backoff cap before retry number `retry` (0 for the first retry):
/// `min(max_backoff, base_backoff * 2^retry)`. The actual sleep is uniform in `[0, cap]`
/// (full jitter), and at least the server's `Retry-After`.
pub fn backoff_cap(policy: &RetryPolicy, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    policy
        .base_backoff
        .checked_mul(factor)
        .unwrap_or(policy.max_backoff)
        .min(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Decision = Decision::Retry { after: None };

    fn status(status: u16) -> Outcome {
        Outcome::Status {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn classify_table() {
        let one = Some(Duration::from_secs(1));
        let with_ra = |status| Outcome::Status {
            status,
            retry_after: one,
        };
        const F: Decision = Decision::Final;
        let ra = Decision::Retry { after: one };
        // (outcome, idempotent, non-idempotent with a request id, non-idempotent without)
        let table: Vec<(Outcome, Decision, Decision, Decision)> = vec![
            (status(200), F, F, F),
            (status(201), F, F, F),
            (status(204), F, F, F),
            (status(101), F, F, F),
            (status(301), F, F, F),
            (status(304), F, F, F),
            (status(400), F, F, F),
            (status(401), F, F, F),
            (status(403), F, F, F),
            (status(404), F, F, F),
            (status(408), F, F, F),
            (status(409), F, F, F),
            (status(410), F, F, F),
            (status(422), F, F, F),
            (status(500), F, F, F),
            (status(501), F, F, F),
            (status(505), F, F, F),
            // A gateway may have forwarded it: never re-sent unless safe to repeat.
            (status(502), RETRY, RETRY, F),
            (status(504), RETRY, RETRY, F),
            (with_ra(502), ra, ra, F),
            (with_ra(504), ra, ra, F),
            // Refused: re-sent when safe, or when the server said when (it did not act).
            (status(503), RETRY, RETRY, F),
            (status(429), RETRY, RETRY, F),
            (with_ra(503), ra, ra, ra),
            (with_ra(429), ra, ra, ra),
            (with_ra(404), F, F, F),
            (with_ra(500), F, F, F),
            // Nothing was sent: always safe.
            (Outcome::ConnectFailed, RETRY, RETRY, RETRY),
            (Outcome::NotSent, RETRY, RETRY, RETRY),
            // It may have run: only an idempotent call is re-sent.
            (Outcome::MaybeSent, RETRY, F, F),
            (Outcome::AttemptTimeout, RETRY, F, F),
        ];
        let idem = Resend {
            idempotent: true,
            has_request_id: false,
        };
        let with_id = Resend {
            idempotent: false,
            has_request_id: true,
        };
        let bare = Resend {
            idempotent: false,
            has_request_id: false,
        };
        for (outcome, a, b, c) in table {
            assert_eq!(classify(&outcome, idem), a, "{outcome:?} idempotent");
            assert_eq!(
                classify(&outcome, with_id),
                b,
                "{outcome:?} with a request id"
            );
            assert_eq!(classify(&outcome, bare), c, "{outcome:?} non-idempotent");
        }
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        // 1445412480 = Wed, 21 Oct 2015 07:28:00 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 - 30);
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(30)));
        let later = now + Duration::from_secs(60);
        assert_eq!(parse_retry_after(date, later), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_accepts_delta_seconds() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(86_400))
        );
        for bad in ["", "-1", "1.5", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_cap_doubles_and_saturates() {
        let p =
            RetryPolicy::idempotent().backoff(Duration::from_millis(100), Duration::from_secs(1));
        let caps: Vec<u128> = (0..6).map(|r| backoff_cap(&p, r).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_cap(&p, u32::MAX), Duration::from_secs(1));
    }
}
