//! `fleet rpc-server`: the RpcServer worker's HTTP face, so that a worker can run in a process
//! of its own behind the launcher as well as in-process on a node.
//!
//! Why: AReaL's maintainers closed the Ray HTTP-launcher pull request for a design in which the
//! cluster layer only *launches* workers and every call goes over one HTTP path. The RpcServer
//! actor (named engines, calls run one at a time on an engine thread, health answered at once,
//! request-id deduplication) stays exactly the same; this module puts one such actor in a
//! process behind hyper, with routes shaped like AReaL's worker server, so the same engine
//! tests pass against an in-process and an isolated worker.
//!
//! Each request becomes one [`WorkerMsg`](fleet_actors::rpc_server::WorkerMsg) to the actor and
//! waits for its reply with a deadline; the handlers hold no state of their own.
//!
//! # The protocol
//!
//! ## Authentication and limits
//!
//! Every route but `GET /health` needs the server's token, `Authorization: Bearer <token>`
//! (401 `unauthorized` without it; see [`auth`] for where the token comes from). A `POST`
//! must say what it sends, `Content-Type: application/json` or `application/x-fleet-bincode`
//! (415 otherwise: a browser's no-cors request, `text/plain` or none, never runs anything). A
//! body must fit in [`RpcHttpConfig::max_body_bytes`] (413) and arrive within
//! [`RpcHttpConfig::body_read_timeout`] (408); request heads within
//! [`RpcHttpConfig::header_read_timeout`]. `X-Fleet-Timeout-Ms` above
//! [`MAX_TIMEOUT_MS`] (30 days) is a 400.
//!
//! ## JSON routes (`Content-Type: application/json`) — for people, curl and AReaL
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `GET /health` | – | 200 `{"status":"ok","worker":"role/i","engines":[names]}`; 503 while destroying |
//! | `GET /status` | – | 200 [`WorkerStatus`](fleet_actors::rpc_server::WorkerStatus) as JSON |
//! | `POST /create_engine` | `{"engine": TYPE, "engine_name": NAME, "init_args": JSON}` | 200 `{"ok":true}` |
//! | `POST /call` | `{"engine_name", "method", "args": JSON, "rpc_meta": {str: str}, "request_id"?: str}` | 200 `{"result": JSON}` |
//! | `POST /configure` | `{"role"?, "rank"?, "config": JSON}` (role and rank default to the worker's) | 200 `{"ok":true}` |
//! | `POST /set_env` | `{"env": {str: str}}` | 200 `{"ok":true}` |
//! | `POST /destroy` | empty, or `{"timeout_ms": N}` | 200 `{"ok":true}` after the destroy hooks; then the server stops (`fleet rpc-server` exits 0) |
//!
//! A destroy hook that fails turns the `/destroy` answer into a 500 `engine_failed` naming
//! it; the server stops all the same.
//!
//! Arguments (`args`, `init_args`, `config`) reach the engine as a JSON-codec
//! [`Payload`](fleet_actors::Payload); engines reply in the request's codec, so the result is
//! JSON. Unknown fields are refused (a typo such as `"engine"` for `"engine_name"` in `/call`
//! is a 400, not a silently ignored field).
//!
//! Every error is `{"error": {"kind": K, "message": M}}` where `K` is
//! [`FleetError::kind`](fleet_actors::FleetError::kind) and the status is
//! [`FleetError::http_status`](fleet_actors::FleetError::http_status): 400 bad JSON, bad
//! arguments, unknown engine type or unknown method; 404 unknown engine; 409 duplicate engine
//! name; 413 a body over the limit (refused before it is read); 500 the method failed or
//! panicked; 503 the worker is being destroyed; 504 the deadline passed. The HTTP layer adds
//! 404 `route_not_found`, 405 `method_not_allowed` (with `Allow`) and 415
//! `unsupported_media_type`.
//!
//! ## Binary path (`Content-Type: application/x-fleet-bincode`) — for fleet's own launcher
//!
//! | route | body | answer (200) |
//! | --- | --- | --- |
//! | `POST /call` | bincode [`CallRequest`](fleet_actors::rpc_server::CallRequest) (its `args` keep their codec) | bincode [`CallReply`](fleet_actors::rpc_server::CallReply) |
//! | `POST /control` | bincode [`Control`](fleet_actors::rpc_server::Control) | bincode [`ControlReply`](fleet_actors::rpc_server::ControlReply) |
//!
//! The answer is 200 whenever the request reached the worker, *including* engine and worker
//! errors: the typed [`FleetError`](fleet_actors::FleetError) is inside the reply, so a fleet
//! caller gets exactly what an in-process caller would (decide retries with
//! `FleetError::retryable`). A request the server refuses before the worker sees it (body over
//! the limit, undecodable bytes) gets that error's status with the same bincode reply type
//! holding the typed error. [`wire::decode_reply`] reads any of these answers.
//! `Control::Destroy` on `/control` stops the server like `/destroy`.
//!
//! ## Headers (both paths)
//!
//! * `X-Request-Id`: makes a call run at most once; a repeat (even concurrent) is answered
//!   from the worker's record. On JSON `/call` it may also be the body's `request_id` (they
//!   must agree); on bincode `/call` it fills in a `CallRequest` without one.
//! * `X-Fleet-Timeout-Ms`: the caller's deadline for engine work (calls, create, configure);
//!   default [`RpcHttpConfig::call_timeout`]. Past it the answer is a `timeout` error (504 on
//!   JSON); the engine call itself is not interrupted.
//!
//! # Use
//!
//! `fleet rpc-server --port 0` prints `fleet rpc-server listening on HOST:PORT` as its first
//! stdout line. A program with engines of its own runs the same server with
//! [`serve`] (a handle, for embedding) or [`run_until_stopped`] (a whole process: the port
//! line, signals, graceful shutdown), passing its own
//! [`EngineRegistry`](fleet_actors::EngineRegistry).

pub mod auth;
mod body;
mod config;
mod errors;
mod routes;
mod run;
mod server;
pub mod wire;
mod worker;

pub use auth::token_from_stdin;
pub use config::{
    RpcHttpConfig, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_LISTEN_BACKLOG, DEFAULT_MAX_BODY_BYTES,
    MAX_TIMEOUT_MS,
};
pub use errors::ApiError;
pub use run::run_until_stopped;
pub use server::{serve, RpcHttpServer, ServeError};
