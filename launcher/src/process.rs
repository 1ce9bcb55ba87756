//! Supervised child processes: spawn, capture output, notice exit, stop, never orphan.
//!
//! A worker that is an external program (an inference server, an OpenAI-compatible proxy) is a
//! child process owned by an actor. The actor must be able to tell, at any time, whether the
//! child is alive, why it died and what it last printed; and when the actor stops, panics or its
//! whole node is killed, the child (and anything it forked) must go too.
//!
//! How each of those is achieved:
//!
//! - **Own process group** (`process_group(0)`): stop and drop signal the whole group, so a
//!   shell wrapper's grandchildren go with it.
//! - **Parent-death signal** (`PR_SET_PDEATHSIG(SIGKILL)` in `pre_exec`, then a `getppid` check
//!   for a parent that died before the `prctl`): a SIGKILLed node takes its children along. Linux
//!   fires this signal when the *thread* that forked the child exits, not the process. A fork
//!   from tokio's `spawn_blocking` pool (whose idle threads exit after ten seconds) or from a
//!   short-lived runtime worker thread would therefore kill a healthy child some time later. All
//!   forks here happen on one dedicated, never-exiting spawner thread (see `spawner.rs`).
//! - **Output capture**: stdin is null (or carries one secret line, [`StdinSecret`]) and stdout/stderr are pipes, never the parent's own
//!   stdout (an actor's stdout may be closed or shared). A pump reads them line by line into
//!   `tracing` at DEBUG (tagged with the worker label and stream), a log file written by a
//!   thread of its own and rotated by size (`log_file.rs`: 64 MiB × 2 by default), and a ring
//!   buffer tail that error messages quote. Nothing of this blocks a runtime thread.
//! - **Exit watcher**: a task awaits the child, so an exit is published at once on a
//!   `tokio::sync::watch` channel ([`ChildHandle::exited`]); readiness waits and HTTP calls
//!   select on it instead of discovering the death on their next poll.
//! - **Stop** ([`ChildHandle::stop`]): SIGTERM to the group, a grace period, SIGKILL, reap.
//!   **Drop** SIGKILLs the group synchronously, and `kill_on_drop` backs that up.
//! - **Group guard** (see `guard.rs`): the parent-death signal is not inherited by what the
//!   child forks, so a small guard process in the child's group kills the whole group when the
//!   pipe from this process closes, i.e. when this process dies however it dies.
//!
//! Ports: commands carry `{port}` / `{port0}`, `{port1}`, ... placeholders filled from the ports
//! allocated to the worker ([`fill_placeholders`], [`ChildSpec::with_ports`]). Readiness:
//! [`wait_ready`] polls an HTTP path on loopback until the expected status, failing at once when
//! the child exits first.

mod child;
mod error;
mod guard;
mod liveness;
mod log_file;
mod placeholders;
mod pump;
mod readiness;
mod spawner;
mod spec;

pub use child::{ChildHandle, ChildWatch, ExitInfo};
pub use error::ProcessError;
pub use guard::watch_lease;
pub use liveness::{watch_liveness, LivenessProbe};
pub use log_file::{
    log_max_bytes_from_env, rotated_path, DEFAULT_LOG_MAX_BYTES, LOG_MAX_BYTES_ENV,
};
pub use placeholders::{fill_placeholders, PlaceholderError};
pub use readiness::{wait_ready, ReadinessProbe};
pub use spec::{ChildSpec, StdinSecret, DEFAULT_TAIL_LINES, MAX_LINE_BYTES, SECRET_ENV_VARS};

/// The `fleet` executable of this node: `FLEET_BIN` if set, else this process's own executable
/// if it is named `fleet`.
///
/// A command whose program is the bare word `fleet` runs this, so a job written on one machine
/// (`["fleet", "mock-llm", "--port", "{port}"]`) runs the right binary on every node.
pub fn fleet_executable() -> Option<String> {
    if let Ok(p) = std::env::var("FLEET_BIN") {
        if !p.is_empty() {
            return Some(p);
        }
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()?.to_str()? == "fleet").then(|| exe.to_string_lossy().into_owned())
}
