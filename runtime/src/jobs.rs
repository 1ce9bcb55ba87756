//! Jobs on a long-lived head: `fleet submit`, `fleet job list/status/logs/stop`, and
//! `fleet run --head`.
//!
//! Before this, the process that drove a job was the cluster's head, so a head could never
//! run a job, and a driver that crashed fenced every node. Now `fleet head` stays up and hosts
//! a job service ([`service`]): clients on any machine with the cookie hand it a job file over
//! the cluster transport ([`client`], [`protocol`]); the head runs the job's driver
//! ([`driver`]) on its own scheduler, writes the job's run directory ([`log`]) and deletes the
//! job's workers when it ends. A client that dies costs nothing but its view.

pub mod client;
mod driver;
pub mod log;
pub mod protocol;
mod restore;
pub mod service;

pub use client::JobClient;
pub use protocol::{JobPoint, JobProgress, JobRow, JobState, LogChunk, SubmitRequest};
pub use service::{JobService, JobServiceConfig};
