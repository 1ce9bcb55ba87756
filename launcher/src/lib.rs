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
//! - [`http_launcher`]: the actor that owns one such child as a worker and forwards the worker
//!   protocol and plain HTTP to it over `fleet_http`'s pooled client and its one retry policy.
//!
//! The HTTP client and server skeleton live in `fleet-http`, the recording proxy and its router
//! in `fleet-proxy`, the mock inference server in `fleet-mock-llm`: each its own crate, so that
//! the launcher does not carry them and they do not depend on each other.

pub mod http_launcher;
pub mod process;
