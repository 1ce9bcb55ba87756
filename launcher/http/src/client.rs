//! A pooled HTTP client with one correct retry policy.
//!
//! The HTTP launcher forwards calls to a child service over HTTP. AReaL's first version of that
//! retried 4xx answers, gave up on some transient 5xx, slept with a blocking `sleep` inside its
//! actor and could run a timed-out `train_batch` twice. Here every retry decision goes through
//! one pure function, [`classify`], tested as a table:
//!
//! | outcome | idempotent | with a request id | neither |
//! | --- | --- | --- | --- |
//! | connect failed (refused, unreachable) | retry | retry | retry |
//! | connection closed before the request was written | retry | retry | retry |
//! | 502, 504 (a gateway may have forwarded it) | retry | retry | final |
//! | 503, 429 | retry (honour `Retry-After`) | retry (honour `Retry-After`) | retry only with `Retry-After` (the server refused it before acting) |
//! | per-attempt timeout | retry | final (it may be running) | final |
//! | error after the request may have been written | retry | final | final |
//! | 1xx, 2xx, 3xx, other 4xx, 500, other 5xx | final | final | final |
//!
//! Backoff ([`RetryPolicy`]) is exponential with full jitter, capped, and never sleeps past the
//! call's overall deadline; it is a `tokio::time::sleep`, so an actor that runs the call in a
//! task keeps answering. An `abort` future (typically "the child exited") ends a call at once,
//! mid-attempt or mid-sleep. A caller-provided request id goes out as `X-Request-Id` on every
//! attempt, so a server can answer a repeat from its record instead of running it twice.
//!
//! Two entry points: [`send_with_retry`] maps a final non-2xx answer to an [`HttpError`] (for
//! callers that want a result or an error), [`send_with_retry_raw`] returns it as an
//! [`HttpResponse`] (for proxies that pass answers through unchanged).
//!
//! [`HttpRequest`], [`HttpResponse`] and [`HttpError`] are serde types so they can travel in
//! actor messages.

mod error;
mod policy;
mod pool;
mod retry;
mod types;

pub use error::{HttpError, HttpErrorKind, BODY_PREFIX_BYTES};
pub use policy::{
    backoff_cap, classify, parse_retry_after, Decision, Outcome, Resend, RetryPolicy,
};
pub use pool::{Client, ClientConfig};
pub use retry::{send_with_retry, send_with_retry_raw};
pub use types::{HttpRequest, HttpResponse, REQUEST_ID_HEADER};
