//! A Rust program attached to a running `fleet head`: [`crate::Cluster::connect`].
//!
//! Before this, a Rust driver had to *be* the head (`Cluster::head()...start()`), so a crashed
//! driver took the whole cluster with it, and a long-lived `fleet head` could only run job
//! files. Now the head also runs a scheduler service ([`service`]) and a program anywhere with
//! the cookie connects to it ([`connect`]) and gets a [`crate::Scheduler`] with the same
//! methods as an embedded one; each method becomes one request to the head ([`protocol`],
//! [`link`]), which runs it on the head's own scheduler.
//!
//! What it costs: a call goes program -> head -> worker's node (one hop more than from the
//! head itself; the head is on this program's data path). What it guarantees: a program that
//! ends, crashes or is killed costs only the roles it created: the head deletes them when the
//! program's session closes, and the nodes, other programs' roles and submitted jobs stay.
//! Request ids work through the head as they do locally (the worker answers a repeat from its
//! record), and a call with a request id that the program gives up on (timed out, or its
//! future dropped) is cancelled on the worker through the head.

pub mod connect;
pub mod link;
pub mod protocol;
pub mod service;

pub use connect::{ConnectBuilder, ConnectedCluster};
pub use link::RemoteLink;
pub use service::SchedulerService;
