//! A running child: its handle, its exit watcher, stop and kill.
//!
//! The handle is the child's owner: dropping it SIGKILLs the whole process group synchronously,
//! because an actor that is killed or panics gets no `post_stop`, only drops. Observers that
//! live in other tasks (a forwarding call that must abort when the child dies, an error message
//! that quotes the tail) take a cheap [`ChildWatch`] instead, which can never kill anything.
//!
//! When the group leader exits on its own, the watcher SIGKILLs what is left of its group too:
//! a supervised service must not daemonize, and helpers it leaves behind would be orphans.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::watch;

use super::error::{describe_exit, tail_excerpt, ProcessError};
use super::log_file::LogWriter;
use super::placeholders::fill_placeholders;
use super::pump::{self, SharedTail, Sinks, Stream, Tail};
use super::spec::ChildSpec;
use super::{guard, spawner};

/// After the leader exits, how long the watcher waits for the output pumps to reach end of
/// file before it publishes the exit (a bound for the case where something outside the group
/// still holds the pipes).
const PUMP_DRAIN_BOUND: Duration = Duration::from_secs(2);

/// How long [`ChildHandle::stop`] waits for the reaping after SIGKILL before it gives up.
const REAP_BOUND: Duration = Duration::from_secs(10);

/// How a child ended, with the last lines it printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
    /// The last output lines (stdout and stderr interleaved), oldest first.
    pub tail: Vec<String>,
}

impl ExitInfo {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit code 3" or "killed by signal 9 (SIGKILL)".
    pub fn describe(&self) -> String {
        describe_exit(self.code, self.signal)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; last output:\n{}",
            self.describe(),
            tail_excerpt(&self.tail)
        )
    }
}

/// A cheap, clonable view of a child: label, pid, tail and exit. It never kills the child.
#[derive(Debug, Clone)]
pub struct ChildWatch {
    label: Arc<str>,
    pid: u32,
    tail: SharedTail,
    exit: watch::Receiver<Option<ExitInfo>>,
    log_path: Option<PathBuf>,
}

impl ChildWatch {
    /// The worker label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last output lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        pump::snapshot(&self.tail)
    }

    /// The log file, if the spec asked for one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// How the child ended, or `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    /// Whether the child is still running (its exit has not been published).
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Resolves when the child has exited (at once if it already has). Owns what it needs, so
    /// it can be moved into another task, e.g. as the abort signal of an HTTP call.
    pub fn exited(&self) -> impl Future<Output = ExitInfo> + Send + 'static {
        let mut exit = self.exit.clone();
        let tail = self.tail.clone();
        async move {
            match exit.wait_for(Option::is_some).await {
                Ok(info) => match &*info {
                    Some(info) => info.clone(),
                    None => unknown_exit(&tail),
                },
                // The watcher task was dropped without publishing: its runtime shut down and
                // `kill_on_drop` killed the child.
                Err(_) => unknown_exit(&tail),
            }
        }
    }
}

impl ChildWatch {
    /// Resolves, when the child exits, with a message naming the worker, its pid, how it
    /// exited and its last output lines: the abort signal for HTTP calls to the child
    /// (`send_with_retry(.., child.exit_reason())`).
    pub fn exit_reason(&self) -> impl Future<Output = String> + Send + 'static {
        let exited = self.exited();
        let label = self.label.clone();
        let pid = self.pid;
        async move { format!("worker {label} (pid {pid}) exited: {}", exited.await) }
    }
}

fn unknown_exit(tail: &SharedTail) -> ExitInfo {
    ExitInfo {
        code: None,
        signal: None,
        tail: pump::snapshot(tail),
    }
}

/// The owner of a running child process. Dropping it SIGKILLs the child's process group.
///
/// Dereferences to [`ChildWatch`] for the read-only side (`pid`, `tail`, `exit_status`,
/// `exited`, ...); [`ChildHandle::watch`] hands out a clone of it.
#[derive(Debug)]
pub struct ChildHandle {
    watch: ChildWatch,
    /// The write end of the group guard's pipe: closing it (drop, or this process dying) makes
    /// the guard SIGKILL the group.
    _guard: Option<tokio::process::ChildStdin>,
}

impl Deref for ChildHandle {
    type Target = ChildWatch;

    fn deref(&self) -> &ChildWatch {
        &self.watch
    }
}

impl ChildHandle {
    /// Starts the child described by `spec` and its output pumps and exit watcher.
    ///
    /// Port placeholders must have been filled ([`ChildSpec::with_ports`]); one that is left is
    /// refused with [`ProcessError::Placeholder`].
    ///
    /// Must be called inside a tokio runtime; the child is reaped by that runtime. Fails at
    /// once, naming the program and the OS error, when the program is missing or not
    /// executable.
    pub async fn spawn(spec: ChildSpec) -> Result<ChildHandle, ProcessError> {
        // A `{portN}` left in the command would be passed literally; refuse it here.
        let texts = std::iter::once(&spec.program)
            .chain(&spec.args)
            .chain(spec.env.values());
        for text in texts {
            if let Err(source) = fill_placeholders(text, &[]) {
                return Err(ProcessError::Placeholder {
                    label: spec.label,
                    source,
                });
            }
        }
        let label: Arc<str> = Arc::from(spec.label.as_str());
        let log_path = spec.log_path();
        let log = match &log_path {
            Some(path) => Some(
                LogWriter::open(&spec.label, path, spec.log_max_bytes)
                    .await
                    .map_err(|source| ProcessError::LogFile {
                        label: spec.label.clone(),
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => None,
        };

        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(if spec.stdin_secret.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if spec.clear_env {
            cmd.env_clear();
        }
        // Secrets this process was started with never pass on through the environment, unless
        // the spec sets them explicitly.
        for name in super::spec::SECRET_ENV_VARS {
            if !spec.env.contains_key(*name) {
                cmd.env_remove(name);
            }
        }
        cmd.envs(&spec.env);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, getppid, _exit); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then no signal will come.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }

        let mut child = match spawner::spawn(cmd).await {
            Ok(Ok(child)) => child,
            Ok(Err(source)) => {
                return Err(ProcessError::Spawn {
                    label: spec.label,
                    program: spec.program,
                    source,
                })
            }
            Err(gone) => {
                return Err(ProcessError::SpawnerUnavailable {
                    label: spec.label,
                    reason: gone.0,
                })
            }
        };
        let Some(pid) = child.id() else {
            return Err(ProcessError::Spawn {
                label: spec.label,
                program: spec.program,
                source: std::io::Error::other("the child was reaped before its pid was read"),
            });
        };
        tracing::info!(worker = %label, pid, program = %spec.program, "child started");
        if let (Some(secret), Some(mut stdin)) = (spec.stdin_secret, child.stdin.take()) {
            // A pipe holds far more than one line, so this write does not wait for the child.
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut line = secret.expose().as_bytes().to_vec();
                line.push(b'\n');
                if let Err(e) = stdin.write_all(&line).await {
                    tracing::warn!(pid, error = %e, "cannot hand the child its secret on stdin");
                }
                let _ = stdin.shutdown().await;
            });
        }
        let guard = guard::spawn(&spec.label, pid).await;

        let tail: SharedTail = Arc::new(Mutex::new(Tail::new(spec.tail_lines)));
        let sinks = || Sinks {
            label: label.clone(),
            pid,
            tail: tail.clone(),
            log: log.clone(),
        };
        let mut pumps = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump::pump(out, Stream::Stdout, sinks())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump::pump(err, Stream::Stderr, sinks())));
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let watcher_label = label.clone();
        let watcher_tail = tail.clone();
        let watcher_log = log.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever the leader left in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            let drained =
                tokio::time::timeout(PUMP_DRAIN_BOUND, futures::future::join_all(pumps)).await;
            // The exit is published once the log file holds the output (or the bound passed).
            if let Some(log) = watcher_log {
                log.flushed(PUMP_DRAIN_BOUND).await;
            }
            let (code, signal) = match &status {
                Ok(s) => (s.code(), s.signal()),
                Err(_) => (None, None),
            };
            let info = ExitInfo {
                code,
                signal,
                tail: pump::snapshot(&watcher_tail),
            };
            match &status {
                Ok(_) => tracing::info!(
                    worker = %watcher_label,
                    pid,
                    exit = %info.describe(),
                    output_complete = drained.is_ok(),
                    "child exited"
                ),
                Err(e) => tracing::warn!(
                    worker = %watcher_label,
                    pid,
                    error = %e,
                    "waiting for the child failed; treating it as exited"
                ),
            }
            exit_tx.send_replace(Some(info));
        });

        Ok(ChildHandle {
            watch: ChildWatch {
                label,
                pid,
                tail,
                exit: exit_rx,
                log_path,
            },
            _guard: guard,
        })
    }

    /// A clonable read-only view of this child for other tasks.
    pub fn watch(&self) -> ChildWatch {
        self.watch.clone()
    }

    /// Stops the child: SIGTERM to its process group, up to `grace` for it to exit, then
    /// SIGKILL to the group, then waits for the reaping.
    ///
    /// Idempotent: on a child that has already exited it returns how it exited and sends
    /// nothing. Fails only when the child is still not reaped 10 s after SIGKILL.
    pub async fn stop(&self, grace: Duration) -> Result<ExitInfo, ProcessError> {
        if let Some(info) = self.exit_status() {
            return Ok(info);
        }
        tracing::info!(worker = %self.label, pid = self.pid, ?grace, "stopping child: SIGTERM");
        signal_group(self.pid, libc::SIGTERM);
        if let Ok(info) = tokio::time::timeout(grace, self.exited()).await {
            return Ok(info);
        }
        tracing::warn!(
            worker = %self.label,
            pid = self.pid,
            ?grace,
            "child ignored SIGTERM for the grace period: SIGKILL"
        );
        signal_group(self.pid, libc::SIGKILL);
        tokio::time::timeout(REAP_BOUND, self.exited())
            .await
            .map_err(|_| ProcessError::NotReaped {
                label: self.label.to_string(),
                pid: self.pid,
                waited: REAP_BOUND,
            })
    }

    /// SIGKILLs the child's process group now without waiting (what drop does).
    pub fn kill(&self) {
        if self.is_running() {
            tracing::info!(worker = %self.label, pid = self.pid, "killing child: SIGKILL");
            signal_group(self.pid, libc::SIGKILL);
        }
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to the process group `pgid`. Refuses pgid 0 and 1, which would mean our own
/// group or every process.
fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions; ESRCH (already gone) is fine.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn handles_can_live_in_actor_state_and_cross_tasks() {
        assert_send_sync::<ChildHandle>();
        assert_send_sync::<ChildWatch>();
        assert_send_sync::<ExitInfo>();
        assert_send_sync::<ProcessError>();
    }

    #[test]
    fn exit_info_describes_code_or_signal_and_quotes_the_tail() {
        let info = ExitInfo {
            code: None,
            signal: Some(libc::SIGTERM),
            tail: vec!["bye".into()],
        };
        assert_eq!(
            info.to_string(),
            "killed by signal 15 (SIGTERM); last output:\nbye"
        );
        assert!(!info.success());
    }
}
