//! `fleet bench`: measurements of fleet's paths against the raw hops they are made of, taken in
//! the same run so the ratio means something on any machine.
//!
//! Each benchmark prints a Markdown table (p50/p90/p99 and the ratio to its baseline) that goes
//! into `BENCHMARKS.md` together with the command that produced it. Timings live here and in
//! that file, never in test assertions.

pub mod agents;
pub mod baseline;
pub mod call;
pub mod calls;
pub mod cluster;
pub mod cpu;
pub mod idle;
pub mod launcher;
pub mod placement;
pub mod policy;
pub mod proxy;
pub mod rollout;
pub mod rollout_async;
pub mod router;
pub mod spawn;
pub mod stats;
pub mod store;
pub mod weights;
