//! The retry loop: attempts, async backoff, the overall deadline and the abort signal.
//!
//! The loop is written once, over an abstract "attempt" function, so that its schedule can be
//! tested under `tokio::time::pause` with scripted outcomes; [`send_with_retry`] plugs in a
//! real HTTP attempt. Every wait is a `tokio::time::sleep` raced against the abort future, and
//! every attempt is bounded by `min(per_attempt_timeout, time left before the deadline)`, so a
//! call never outlives its deadline and stops at once when the caller says so.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::error::{body_prefix, HttpError, HttpErrorKind};
use super::policy::{backoff_cap, classify, Decision, Outcome, Resend, RetryPolicy};
use super::pool::{full_url, AttemptError, Client, Prepared};
use super::types::{HttpRequest, HttpResponse};

/// Sends `req` to `base_url` (e.g. `http://127.0.0.1:8000`) under `policy`; a final 2xx is
/// `Ok`, anything else is an [`HttpError`] (a final non-2xx answer is
/// [`HttpErrorKind::Status`] with its status and body prefix).
///
/// `abort` resolves (with a reason) when the caller must stop, e.g. the child serving the
/// request died; the call then fails at once with [`HttpErrorKind::Aborted`]. Pass
/// `std::future::pending()` for none.
pub async fn send_with_retry(
    client: &Client,
    base_url: &str,
    req: &HttpRequest,
    policy: &RetryPolicy,
    abort: impl Future<Output = String>,
) -> Result<HttpResponse, HttpError> {
    send(client, base_url, req, policy, abort, false).await
}

/// Like [`send_with_retry`], but passes answers through: a final non-2xx response is returned
/// as `Ok`, and so is the last response when retries or the deadline run out after a
/// retryable status (e.g. the last 503). Errors are left for calls that ended without a
/// response to return (transport failure, timeout, abort, invalid request).
pub async fn send_with_retry_raw(
    client: &Client,
    base_url: &str,
    req: &HttpRequest,
    policy: &RetryPolicy,
    abort: impl Future<Output = String>,
) -> Result<HttpResponse, HttpError> {
    send(client, base_url, req, policy, abort, true).await
}

async fn send(
    client: &Client,
    base_url: &str,
    req: &HttpRequest,
    policy: &RetryPolicy,
    abort: impl Future<Output = String>,
    raw: bool,
) -> Result<HttpResponse, HttpError> {
    let call = Call {
        method: req.method.clone(),
        url: full_url(base_url, &req.path_and_query),
        request_id: req.request_id.clone(),
    };
    let prepared = match Prepared::new(base_url, req) {
        Ok(p) => p,
        Err(reason) => {
            return Err(State::default().error(&call, HttpErrorKind::InvalidRequest { reason }))
        }
    };
    run(&call, policy, raw, abort, full_jitter, |_| {
        client.attempt(&prepared)
    })
    .await
}

/// Uniform in `[0, cap]`.
fn full_jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// Which call, for errors and logs.
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) request_id: Option<String>,
}

#[derive(Default)]
struct State {
    attempts: u32,
    last_status: Option<u16>,
    last_body: Option<String>,
    last_error: Option<String>,
    /// The response of the latest attempt, if that attempt got one.
    latest_response: Option<HttpResponse>,
}

impl State {
    fn error(&self, call: &Call, kind: HttpErrorKind) -> HttpError {
        HttpError {
            kind,
            method: call.method.clone(),
            url: call.url.clone(),
            request_id: call.request_id.clone(),
            attempts: self.attempts,
            last_status: self.last_status,
            last_body: self.last_body.clone(),
            last_error: self.last_error.clone(),
        }
    }

    /// Ends a call that ran out of attempts or time: the latest response in raw mode, else
    /// the error.
    // The error is as large as the public API's; boxing it here alone would buy nothing.
    #[allow(clippy::result_large_err)]
    fn give_up(
        &mut self,
        call: &Call,
        raw: bool,
        kind: HttpErrorKind,
    ) -> Result<HttpResponse, HttpError> {
        match self.latest_response.take() {
            Some(mut resp) if raw => {
                resp.attempts = self.attempts;
                Ok(resp)
            }
            _ => Err(self.error(call, kind)),
        }
    }
}

/// `now + d`, or a moment ~30 years away when that overflows the clock.
fn far_future_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(now)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The retry loop over `attempt` (called with the 1-based attempt number).
pub(crate) async fn run<F, Fut, J>(
    call: &Call,
    policy: &RetryPolicy,
    raw: bool,
    abort: impl Future<Output = String>,
    mut jitter: J,
    mut attempt: F,
) -> Result<HttpResponse, HttpError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<HttpResponse, AttemptError>>,
    J: FnMut(Duration) -> Duration,
{
    let max_attempts = policy.max_attempts.max(1);
    // Saturating: a caller's `Duration::MAX` means "no deadline", not a panic.
    let deadline_at = far_future_after(policy.deadline);
    let deadline_kind = || HttpErrorKind::Deadline {
        deadline_ms: millis(policy.deadline),
    };
    let mut state = State::default();
    tokio::pin!(abort);

    loop {
        let remaining = deadline_at.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return state.give_up(call, raw, deadline_kind());
        }
        // An abort that has already fired starts no attempt at all.
        if let Some(reason) = futures::FutureExt::now_or_never(&mut abort) {
            return Err(state.error(call, HttpErrorKind::Aborted { reason }));
        }
        state.attempts += 1;
        state.latest_response = None;
        let bound = policy.per_attempt_timeout.min(remaining);
        let bounded_by_deadline = remaining < policy.per_attempt_timeout;
        let result = tokio::select! {
            biased;
            reason = &mut abort => {
                return Err(state.error(call, HttpErrorKind::Aborted { reason }));
            }
            r = tokio::time::timeout(bound, attempt(state.attempts)) => r,
        };
        let outcome = match result {
            Err(_elapsed) if bounded_by_deadline => {
                state.last_error = Some(format!("attempt cut off by the deadline after {bound:?}"));
                // A call that is not safe to repeat may be running right now: that is an
                // attempt timeout (outcome unknown), not a plain deadline.
                if !policy.idempotent {
                    return Err(state.error(
                        call,
                        HttpErrorKind::AttemptTimeout {
                            timeout_ms: millis(bound),
                        },
                    ));
                }
                return Err(state.error(call, deadline_kind()));
            }
            Err(_elapsed) => {
                state.last_error = Some(format!("attempt timed out after {bound:?}"));
                Outcome::AttemptTimeout
            }
            Ok(Ok(resp)) => {
                let outcome = resp.outcome();
                state.last_status = Some(resp.status);
                state.last_body = Some(body_prefix(&resp.body));
                state.latest_response = Some(resp);
                outcome
            }
            Ok(Err(AttemptError::Transport { outcome, message })) => {
                state.last_error = Some(message);
                outcome
            }
            Ok(Err(AttemptError::TooLarge { limit })) => {
                return Err(state.error(call, HttpErrorKind::ResponseTooLarge { limit }));
            }
            Ok(Err(AttemptError::Invalid(reason))) => {
                return Err(state.error(call, HttpErrorKind::InvalidRequest { reason }));
            }
        };

        let resend = Resend {
            idempotent: policy.idempotent,
            has_request_id: call.request_id.is_some(),
        };
        let after = match classify(&outcome, resend) {
            Decision::Final => {
                return match (outcome, state.latest_response.take()) {
                    (_, Some(mut resp)) if raw || resp.is_success() => {
                        resp.attempts = state.attempts;
                        Ok(resp)
                    }
                    (_, Some(_)) => Err(state.error(call, HttpErrorKind::Status)),
                    (Outcome::AttemptTimeout, None) => Err(state.error(
                        call,
                        HttpErrorKind::AttemptTimeout {
                            timeout_ms: millis(policy.per_attempt_timeout),
                        },
                    )),
                    (_, None) => Err(state.error(call, HttpErrorKind::Transport)),
                };
            }
            Decision::Retry { after } => after,
        };

        if state.attempts >= max_attempts {
            return state.give_up(call, raw, HttpErrorKind::RetriesExhausted);
        }
        let sleep = jitter(backoff_cap(policy, state.attempts - 1)).max(after.unwrap_or_default());
        if Instant::now()
            .checked_add(sleep)
            .is_none_or(|t| t >= deadline_at)
        {
            return state.give_up(call, raw, deadline_kind());
        }
        tracing::debug!(
            method = %call.method,
            url = %call.url,
            request_id = call.request_id.as_deref().unwrap_or(""),
            attempt = state.attempts,
            ?outcome,
            sleep_ms = millis(sleep),
            "retrying"
        );
        tokio::select! {
            biased;
            reason = &mut abort => {
                return Err(state.error(call, HttpErrorKind::Aborted { reason }));
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;

    fn call() -> Call {
        Call {
            method: "POST".into(),
            url: "http://test/x".into(),
            request_id: Some("r".into()),
        }
    }

    fn resp(status: u16, retry_after: Option<&str>) -> Result<HttpResponse, AttemptError> {
        Ok(HttpResponse {
            status,
            headers: retry_after
                .map(|v| vec![("retry-after".to_string(), v.to_string())])
                .unwrap_or_default(),
            body: Bytes::from(format!("status {status}")),
            attempts: 1,
        })
    }

    enum Step {
        Answer(Result<HttpResponse, AttemptError>),
        Hang,
    }

    /// Runs the loop over a script of steps (the last one repeats), recording each attempt's
    /// start as an offset from the call's start. The jitter is the identity (the cap itself),
    /// so the schedule is exact.
    async fn script(
        policy: RetryPolicy,
        raw: bool,
        steps: Vec<Step>,
        abort: impl Future<Output = String>,
    ) -> (Result<HttpResponse, HttpError>, Vec<Duration>) {
        let start = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(Mutex::new(VecDeque::from(steps)));
        let result = run(
            &call(),
            &policy,
            raw,
            abort,
            |cap| cap,
            |_| {
                times.lock().unwrap().push(start.elapsed());
                let step = {
                    let mut s = steps.lock().unwrap();
                    if s.len() > 1 {
                        s.pop_front()
                    } else {
                        s.front().map(|st| match st {
                            Step::Hang => Step::Hang,
                            Step::Answer(Ok(r)) => Step::Answer(Ok(r.clone())),
                            Step::Answer(Err(AttemptError::Transport { outcome, message })) => {
                                Step::Answer(Err(AttemptError::Transport {
                                    outcome: *outcome,
                                    message: message.clone(),
                                }))
                            }
                            Step::Answer(Err(_)) => unreachable!("not used in scripts"),
                        })
                    }
                };
                async move {
                    match step {
                        Some(Step::Answer(a)) => a,
                        Some(Step::Hang) | None => std::future::pending().await,
                    }
                }
            },
        )
        .await;
        let times = times.lock().unwrap().clone();
        (result, times)
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::non_idempotent()
            .max_attempts(5)
            .backoff(Duration::from_millis(100), Duration::from_millis(500))
            .deadline(Duration::from_secs(60))
            .per_attempt_timeout(Duration::from_secs(10))
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_between_attempts() {
        let (r, times) = script(
            policy().max_attempts(6),
            false,
            vec![Step::Answer(resp(503, None))],
            std::future::pending(),
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, HttpErrorKind::RetriesExhausted);
        assert_eq!(e.attempts, 6);
        assert_eq!(e.last_status, Some(503));
        // Sleeps 100, 200, 400, 500 (cap), 500.
        assert_eq!(times, ms(&[0, 100, 300, 700, 1200, 1700]));
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_retries_returns_the_response() {
        let (r, times) = script(
            policy(),
            false,
            vec![
                Step::Answer(resp(502, None)),
                Step::Answer(Err(AttemptError::Transport {
                    outcome: Outcome::ConnectFailed,
                    message: "refused".into(),
                })),
                Step::Answer(resp(200, None)),
            ],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap().status, 200);
        assert_eq!(times, ms(&[0, 100, 300]));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_with_a_deadline_error_instead_of_sleeping_past_it() {
        let p = policy()
            .max_attempts(100)
            .backoff(Duration::from_secs(1), Duration::from_secs(10))
            .deadline(Duration::from_millis(2500));
        let start = Instant::now();
        let (r, times) = script(
            p,
            false,
            vec![Step::Answer(resp(503, None))],
            std::future::pending(),
        )
        .await;
        let e = r.unwrap_err();
        assert!(
            matches!(e.kind, HttpErrorKind::Deadline { deadline_ms: 2500 }),
            "{e}"
        );
        // Attempt at 0, sleep 1 s, attempt at 1 s; the next sleep (2 s) would end at 3 s > 2.5 s.
        assert_eq!(times, ms(&[0, 1000]));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(e.retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_is_cut_off_by_the_deadline() {
        let p = RetryPolicy {
            idempotent: true,
            ..policy().deadline(Duration::from_millis(300))
        };
        let start = Instant::now();
        let (r, _) = script(p.clone(), false, vec![Step::Hang], std::future::pending()).await;
        assert!(matches!(
            r.unwrap_err().kind,
            HttpErrorKind::Deadline { .. }
        ));
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        // Not safe to repeat: it may be running, so it is an attempt timeout.
        let p = RetryPolicy {
            idempotent: false,
            ..p
        };
        let (r, _) = script(p, false, vec![Step::Hang], std::future::pending()).await;
        assert_eq!(
            r.unwrap_err().kind,
            HttpErrorKind::AttemptTimeout { timeout_ms: 300 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_idempotent_post_is_not_resent_after_a_502_or_504() {
        let bare = Call {
            request_id: None,
            ..call()
        };
        for status in [502, 504] {
            let mut attempts = 0;
            let r = run(
                &bare,
                &policy(),
                false,
                std::future::pending(),
                |cap| cap,
                |_| {
                    attempts += 1;
                    async move { resp(status, None) }
                },
            )
            .await;
            let e = r.unwrap_err();
            assert_eq!(
                (e.kind.clone(), e.attempts),
                (HttpErrorKind::Status, 1),
                "{e}"
            );
            assert_eq!(attempts, 1);
        }
        // With a request id (the server deduplicates), a 504 is re-sent.
        let (r, times) = script(
            policy(),
            false,
            vec![Step::Answer(resp(504, None)), Step::Answer(resp(200, None))],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap().status, 200);
        assert_eq!(times.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_deadline_does_not_overflow_the_clock() {
        let p = policy().deadline(Duration::MAX);
        let (r, times) = script(
            p,
            false,
            vec![Step::Answer(resp(503, None)), Step::Answer(resp(200, None))],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap().status, 200);
        assert_eq!(times.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_on_the_sleep() {
        let (r, times) = script(
            policy(),
            false,
            vec![
                Step::Answer(resp(429, Some("3"))),
                Step::Answer(resp(200, None)),
            ],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap().status, 200);
        assert_eq!(times, ms(&[0, 3000]));
    }

    #[tokio::test(start_paused = true)]
    async fn abort_during_backoff_fails_at_once_with_the_reason() {
        let p = policy().backoff(Duration::from_secs(10), Duration::from_secs(10));
        let start = Instant::now();
        let abort = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "child exited with code 3".to_string()
        };
        let (r, times) = script(p, false, vec![Step::Answer(resp(503, None))], abort).await;
        let e = r.unwrap_err();
        assert_eq!(
            e.kind,
            HttpErrorKind::Aborted {
                reason: "child exited with code 3".into()
            }
        );
        assert_eq!(e.attempts, 1);
        assert_eq!(times.len(), 1);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_that_already_fired_sends_nothing() {
        let (r, times) = script(
            policy(),
            false,
            vec![Step::Answer(resp(200, None))],
            async { "dead already".to_string() },
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(
            e.kind,
            HttpErrorKind::Aborted {
                reason: "dead already".into()
            }
        );
        assert_eq!((e.attempts, times.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn abort_during_an_attempt_fails_at_once() {
        let abort = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "gone".to_string()
        };
        let (r, _) = script(policy(), false, vec![Step::Hang], abort).await;
        assert!(matches!(r.unwrap_err().kind, HttpErrorKind::Aborted { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_is_final_unless_idempotent() {
        let p = policy().per_attempt_timeout(Duration::from_millis(300));
        let (r, times) = script(p.clone(), false, vec![Step::Hang], std::future::pending()).await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, HttpErrorKind::AttemptTimeout { timeout_ms: 300 });
        assert_eq!((e.attempts, times.len()), (1, 1));

        let p = RetryPolicy {
            idempotent: true,
            ..p
        };
        let (r, times) = script(p, false, vec![Step::Hang], std::future::pending()).await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, HttpErrorKind::RetriesExhausted);
        assert_eq!((e.attempts, times.len()), (5, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_after_sending_is_final_unless_idempotent() {
        let maybe_sent = || {
            Step::Answer(Err(AttemptError::Transport {
                outcome: Outcome::MaybeSent,
                message: "connection reset".into(),
            }))
        };
        let (r, _) = script(policy(), false, vec![maybe_sent()], std::future::pending()).await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, HttpErrorKind::Transport);
        assert_eq!(e.attempts, 1);
        assert_eq!(e.last_error.as_deref(), Some("connection reset"));

        let p = RetryPolicy {
            idempotent: true,
            ..policy()
        };
        let (r, _) = script(p, false, vec![maybe_sent()], std::future::pending()).await;
        assert_eq!(r.unwrap_err().attempts, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn final_status_is_an_error_or_passed_through_in_raw_mode() {
        let (r, times) = script(
            policy(),
            false,
            vec![Step::Answer(resp(404, None))],
            std::future::pending(),
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, HttpErrorKind::Status);
        assert_eq!(
            (e.last_status, e.last_body.as_deref()),
            (Some(404), Some("status 404"))
        );
        assert_eq!(times.len(), 1);

        let (r, _) = script(
            policy(),
            true,
            vec![Step::Answer(resp(404, None))],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap().status, 404);

        // Raw mode also returns the last retryable answer when attempts run out.
        let (r, times) = script(
            policy(),
            true,
            vec![Step::Answer(resp(503, None))],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap().status, 503);
        assert_eq!(times.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_attempts_still_makes_one_attempt() {
        let (r, times) = script(
            policy().max_attempts(0),
            false,
            vec![Step::Answer(resp(503, None))],
            std::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap_err().attempts, 1);
        assert_eq!(times.len(), 1);
    }

    #[test]
    fn full_jitter_stays_within_the_cap() {
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
        let cap = Duration::from_millis(10);
        assert!((0..1000).all(|_| full_jitter(cap) <= cap));
    }
}
