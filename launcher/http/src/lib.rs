//! fleet-http: the one HTTP client and the one HTTP server skeleton that every HTTP surface of
//! fleet is built on (the launcher's forwards, the recording proxy, the mock inference server,
//! `fleet rpc-server`, `fleet infer`).
//!
//! - [`client`] (its items are re-exported here): one pooled keep-alive client and one retry
//!   policy, decided by a single pure function ([`classify`]) that retries only what is safe,
//!   with async, jittered, deadline-bounded backoff and an abort signal.
//! - [`server`]: binding with a real listen backlog ([`listen`]), the accept loop with
//!   connection limits and read/write-stall deadlines ([`listener`]), and one body reader and
//!   the response bodies every server sends ([`body`]).
//!
//! It depends on no other fleet crate, so the launcher, the proxy and the mock can share it
//! without depending on each other.

pub mod client;
pub mod server;

pub use client::*;
/// The response bodies every HTTP server of fleet's sends: JSON, and server-sent events fed by
/// a channel.
pub use server::body::{full, json_bytes_response, json_response, sse_response, Body};
pub use server::{body, listen, listener};
