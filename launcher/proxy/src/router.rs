//! The router over a role's inference servers, used by `fleet proxy` when it has more than one
//! `--backend` (or `--router`).
//!
//! Each server has an id (its root URL), a state (`serving`, `draining`, `paused`, `failed`),
//! the weights version it serves, an in-flight count and a circuit breaker (`breaker`). A
//! request is placed like this (`pool`):
//!
//! 1. **Sticky**: the session's last server, while it is `serving`, its breaker is closed,
//!    and its version is at least the version the session last saw and the `min_version`
//!    floor. A session's turns stay on one server so its prefix cache is reused.
//! 2. Otherwise **least in flight** among the `serving` servers whose breaker lets a request
//!    through and whose version is at least `max(session's last version, min_version)`; ties
//!    go round-robin. A half-open breaker takes exactly one probe.
//! 3. No server: the request **waits**, woken by any change of the set (a restore, a resume, a
//!    lease released, a breaker turning half-open) and bounded by the proxy's
//!    `router_wait_timeout`; then a 503 that says which server is in which state.
//!
//! The turn records the version of the server picked for it, read at pick time. A request
//! that failed before any byte was sent (connect refused, DNS, connect timeout) goes to
//! another server at once if one is available; after bytes were sent it is never sent again
//! (chat completions are not idempotent): the agent gets the error. The weight-update
//! coordinator drives the states through the admin routes in `admin`.
//!
//! Why in the proxy and not a separate hop: the proxy already is one HTTP hop per turn and
//! already knows the session; a router process would add a second hop (~180 µs on loopback)
//! and have to learn sessions from headers.

mod admin;
mod breaker;
mod pool;

pub(crate) use admin::route as admin_route;
pub(crate) use pool::{Lease, Reach};
pub use pool::{Router, ServerState};
