//! fleet-launcher: the pieces fleet needs to run an external HTTP service as a worker.
//!
//! AReaL's Ray HTTP launcher (pull request #1161) forked a command with `Popen`, let its output
//! go to a stdout that might not exist, retried 4xx codes with a blocking `sleep` inside a
//! one-at-a-time actor, and left children behind when it died. This crate is the same job done
//! so that none of that can happen:
//!
//! - [`process`]: supervised child processes. Each child gets its own process group, a
//!   parent-death signal (forked from one long-lived thread so the signal means what it says),
//!   its output pumped line by line into `tracing`, a log file and an in-memory tail, an exit
//!   watcher that notices an exit at once, and a TERM -> grace -> KILL stop. Dropping the
//!   handle kills the group, so a panicking or killed actor leaves nothing behind.
//! - [`http`]: one pooled keep-alive HTTP client and one retry policy, decided by a single pure
//!   function ([`http::classify`]) that retries only what is safe, with async, jittered,
//!   deadline-bounded backoff and an abort signal (the child died) that ends a call at once.
//!
//! - [`proxy`]: the OpenAI-compatible proxy (`fleet proxy`) forked next to each rollout
//!   worker, which records every turn for training; [`mock_llm`]: a test double of an
//!   inference server (`fleet mock-llm`).
//! - [`http_launcher`]: the actor that owns one such child as a worker and forwards the worker
//!   protocol and plain HTTP to it, built on the two modules above.

pub mod http;
pub mod http_launcher;
pub mod listen;
pub mod mock_llm;
pub mod process;
pub mod proxy;
pub mod router;

/// The response bodies every HTTP server of fleet's sends (the proxy, the mock, `fleet infer`):
/// JSON and server-sent events fed by a channel.
pub use proxy::body::{full, json_bytes_response, json_response, sse_response, Body};
