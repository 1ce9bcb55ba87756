//! The HTTP launcher actor: an external command as a worker.
//!
//! This is AReaL's `RayHTTPLauncher` done right. The actor owns one child process (see
//! [`crate::process`]) and speaks the same worker protocol as an in-process RpcServer
//! ([`WorkerMsg`](fleet_actors::rpc_server::WorkerMsg)), so the scheduler and the node agent
//! treat both alike:
//!
//! - **Start**: the command is spawned in `pre_start` (a missing or non-executable program fails
//!   worker creation at once, with the OS error); readiness is then polled by a task, so the
//!   node agent is never blocked. Until the probe passes, `health` answers "starting"; if the
//!   child exits first, the worker fails at once with its exit status and last output lines.
//! - **Forwarding**: every call (`engine.method` over fleet's RPC or AReaL's JSON `/call`, or a
//!   plain HTTP request) runs in a task of its own over one pooled keep-alive client, with the
//!   retry policy of `fleet_http`. The actor keeps answering `health`, `status` and `destroy`
//!   within milliseconds while any number of forwards are in flight or backing off (bounded by a
//!   semaphore). A forward in flight when the child dies fails at once with "worker failed" and
//!   the child's last lines.
//! - **Liveness**: a task awaits the child; its exit is a [`Lifecycle`] message to the actor,
//!   which applies the restart policy or reports the worker failed to its node (a hook the agent
//!   gives), which pushes it to the scheduler.
//! - **Environment**: `set_env` on a service that speaks fleet's RPC reaches its engines; on a
//!   plain service it is kept for the next (re)start and the answer says so
//!   ([`ControlOk::Deferred`]). The launcher never changes its own process environment.
//! - **Stop**: `destroy` runs engine destroy hooks (fleet RPC services), then TERM to the
//!   process group, the grace period, KILL. Dropping the actor's state kills the group too, so a
//!   killed or panicked actor leaves no process behind.

mod actor;
mod child_pid;
mod control;
mod forward;
mod lifecycle;
mod slots;

pub use actor::{FailureHook, HttpLauncher, HttpLauncherArgs, WorkerFailure};
pub use child_pid::ChildPid;
pub use fleet_actors::rpc_server::ControlOk;
pub use fleet_actors::rpc_server::Lifecycle;
