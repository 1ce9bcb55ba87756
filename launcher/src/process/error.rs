//! What can go wrong with a child process, said so that an operator can act on it.
//!
//! Every variant names the worker label; those about a running child name its pid; those about
//! a dead child carry its exit code or signal and the last lines it printed, because "exited
//! with code 1" alone never explains anything.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::placeholders::PlaceholderError;

/// Why starting, readying or stopping a child process failed.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The program could not be started (missing, not executable, bad working directory).
    #[error(
        "worker {label}: cannot start `{program}`: {source}; check that the program exists, is \
         executable and that the working directory exists"
    )]
    Spawn {
        /// Worker label.
        label: String,
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The log directory or file could not be created or opened.
    #[error(
        "worker {label}: cannot open log file {}: {source}; check the log directory and its \
         permissions",
        path.display()
    )]
    LogFile {
        /// Worker label.
        label: String,
        /// The log file path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command names a port that was not allocated.
    #[error("worker {label}: {source}")]
    Placeholder {
        /// Worker label.
        label: String,
        /// Which placeholder.
        #[source]
        source: PlaceholderError,
    },
    /// The dedicated spawner thread is gone (it never exits on its own; this means it could
    /// not be started or panicked).
    #[error("worker {label}: the process spawner thread is unavailable: {reason}")]
    SpawnerUnavailable {
        /// Worker label.
        label: String,
        /// What happened to it.
        reason: String,
    },
    /// The child exited before it answered its readiness probe.
    #[error(
        "worker {label} (pid {pid}) exited before it was ready: {}; last output:\n{}",
        describe_exit(*code, *signal),
        tail_excerpt(tail)
    )]
    ExitedBeforeReady {
        /// Worker label.
        label: String,
        /// The child's pid.
        pid: u32,
        /// Exit code, when it exited normally.
        code: Option<i32>,
        /// Signal that killed it, when it was killed.
        signal: Option<i32>,
        /// Its last output lines.
        tail: Vec<String>,
    },
    /// The child did not answer its readiness probe with the expected status in time.
    #[error(
        "worker {label} (pid {pid}) not ready after {waited:?} ({url}, last probe: {last}); \
         raise the readiness deadline or check the last output:\n{}",
        tail_excerpt(tail)
    )]
    NotReady {
        /// Worker label.
        label: String,
        /// The child's pid.
        pid: u32,
        /// The probed URL.
        url: String,
        /// How long it waited.
        waited: Duration,
        /// What the last probe saw (a status or a connection error).
        last: String,
        /// Its last output lines.
        tail: Vec<String>,
    },
    /// The child was sent SIGKILL but was not reaped in time (stuck in the kernel).
    #[error(
        "worker {label} (pid {pid}) still not reaped {waited:?} after SIGKILL; the process may \
         be stuck in uninterruptible I/O"
    )]
    NotReaped {
        /// Worker label.
        label: String,
        /// The child's pid.
        pid: u32,
        /// How long it waited after SIGKILL.
        waited: Duration,
    },
}

impl ProcessError {
    /// Whether trying the same thing again may succeed: a child that exited or was not ready may
    /// do better on a fresh start; a missing program or a bad placeholder will not.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProcessError::ExitedBeforeReady { .. } | ProcessError::NotReady { .. }
        )
    }

    /// The worker label the error is about.
    pub fn label(&self) -> &str {
        match self {
            ProcessError::Spawn { label, .. }
            | ProcessError::LogFile { label, .. }
            | ProcessError::Placeholder { label, .. }
            | ProcessError::SpawnerUnavailable { label, .. }
            | ProcessError::ExitedBeforeReady { label, .. }
            | ProcessError::NotReady { label, .. }
            | ProcessError::NotReaped { label, .. } => label,
        }
    }
}

/// How many tail lines a message quotes; the error's `tail` field keeps them all.
const MESSAGE_TAIL_LINES: usize = 20;

/// The last lines of `tail` for a message, noting how many earlier ones were left out.
pub(crate) fn tail_excerpt(tail: &[String]) -> String {
    if tail.is_empty() {
        return "(no output)".to_string();
    }
    let skip = tail.len().saturating_sub(MESSAGE_TAIL_LINES);
    let mut text = String::new();
    if skip > 0 {
        text.push_str(&format!("({skip} earlier lines not shown)\n"));
    }
    text.push_str(&tail[skip..].join("\n"));
    text
}

/// "exit code 3", "killed by signal 9 (SIGKILL)", for messages.
pub(crate) fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (None, None) => "unknown exit status".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGPIPE => " (SIGPIPE)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_only_the_last_lines_of_the_tail() {
        let tail: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
        let err = ProcessError::ExitedBeforeReady {
            label: "w/0".into(),
            pid: 42,
            code: Some(1),
            signal: None,
            tail,
        };
        let msg = err.to_string();
        assert!(
            msg.contains("w/0 (pid 42)") && msg.contains("exit code 1"),
            "{msg}"
        );
        assert!(msg.contains("(30 earlier lines not shown)"), "{msg}");
        assert!(msg.contains("line 49") && msg.contains("line 30"), "{msg}");
        assert!(!msg.contains("line 29\n"), "{msg}");
        assert_eq!(tail_excerpt(&[]), "(no output)");
        assert_eq!(describe_exit(None, Some(9)), "killed by signal 9 (SIGKILL)");
    }
}
