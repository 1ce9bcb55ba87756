//! The head's web dashboard: `fleet head --dashboard HOST:PORT` (default `127.0.0.1:8265`,
//! the port Ray's dashboard taught people to open) serves one page with the cluster's nodes,
//! workers, jobs (progress, rate, policy version, a reward and version chart) and its recent
//! events, and the process's Prometheus `/metrics` on the same port.
//!
//! Why it is built this way:
//!
//! - **No internet needed.** Training clusters are often cut off from the internet, so nothing
//!   comes from a CDN: the page, its script and its style are compiled into the binary
//!   (`include_str!`), and the chart is SVG drawn by a few lines of hand-written script.
//! - **One JSON endpoint, polled.** The page fetches `GET /api/state` about once a second and
//!   redraws itself. The server keeps no per-client state and needs no websocket, and what
//!   the page shows is what `/api/state` answers, so tests and scripts can read the same.
//! - **The head stays answerable.** Each poll asks the head actor for its status with a
//!   deadline ([`crate::cluster::StatusSource`]); a head that does not answer shows as an
//!   error banner on the page, never as a request that hangs.
//! - **Events outlive a poll.** Membership events are a broadcast that a page would miss
//!   between two polls, and job state changes are only visible as a difference between two
//!   listings: [`events`] keeps the last few hundred of both in a ring buffer, fed by tasks of
//!   the dashboard's own.
//! - **No authentication**, like Ray's: anyone who can reach the port sees the cluster's
//!   state (never secrets: no cookie, no job file text, no environment). It binds to loopback
//!   by default and `fleet head` warns when it is given another address.
//!
//! The pieces: [`server`] (the routes and the accept loop on `fleet_http`'s skeleton),
//! [`snapshot`] (what `/api/state` answers, built from the status report and the job list),
//! [`events`] (the ring buffer and the tasks that feed it), and `page.html`, `page.js`,
//! `page.css` beside them (the page).

pub mod events;
pub mod server;
pub mod snapshot;

pub use events::{Event, EventLog};
pub use server::{serve, Dashboard, Sources};
pub use snapshot::Snapshot;

/// The address `fleet head` serves the dashboard on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8265";
