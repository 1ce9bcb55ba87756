//! What to start: the description of one child process.
//!
//! The environment is an explicit map because a worker's environment is part of its spec (device
//! ids, ports, API keys) and must not depend on whatever the launching process happens to have
//! set. `clear_env` decides whether the inherited environment is the base or nothing is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::placeholders::{fill_placeholders, PlaceholderError};

/// Environment variables that hold fleet's secrets (the cluster cookie, the proxy's admin key,
/// an rpc-server's token). A child never inherits them from this process; a spec that needs
/// one sets it explicitly (better: hands it over with [`StdinSecret`]).
pub const SECRET_ENV_VARS: &[&str] = &["FLEET_COOKIE", "FLEET_ADMIN_KEY", "FLEET_RPC_TOKEN"];

/// How many output lines a child keeps in memory by default for error messages.
pub const DEFAULT_TAIL_LINES: usize = 200;

/// Longest output line kept, in bytes; the rest of a longer line is dropped and marked.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Everything needed to start one supervised child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The worker label used in logs, errors and the log file name, e.g. `"rollout/0"`.
    pub label: String,
    /// Program to run: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Arguments, without the program name.
    pub args: Vec<String>,
    /// Working directory; `None` keeps the parent's.
    pub cwd: Option<PathBuf>,
    /// Environment variables set for the child (on top of the inherited ones unless
    /// `clear_env`).
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the parent's.
    pub clear_env: bool,
    /// Directory for the append-mode log file `<label with '/' replaced by '_'>.log`; `None`
    /// writes no file.
    pub log_dir: Option<PathBuf>,
    /// Size cap of the log file, in bytes: past it the file is rotated to `NAME.log.1` (see
    /// `log_file.rs`). Defaults to [`super::log_file::log_max_bytes_from_env`].
    pub log_max_bytes: u64,
    /// How many of the last output lines (stdout and stderr interleaved) to keep in memory.
    pub tail_lines: usize,
    /// A secret written to the child's stdin as one line, after which stdin is closed (see
    /// [`StdinSecret`]); `None` gives the child a null stdin.
    pub stdin_secret: Option<StdinSecret>,
}

/// A secret (a token, an admin key) handed to a child on its stdin instead of its environment
/// or arguments.
///
/// Why stdin: a process's environment (`/proc/PID/environ`) is readable by every process of the
/// same user and is inherited by everything the child forks (agents, tool code); its arguments
/// (`/proc/PID/cmdline`) are readable by every user; a file lingers on disk. A line on a pipe is
/// read once by the child at start, and what the child forks later inherits only a stdin at
/// end of file. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct StdinSecret(String);

impl StdinSecret {
    /// Wraps a secret (one line: a newline in it would end it early).
    pub fn new(secret: impl Into<String>) -> StdinSecret {
        StdinSecret(secret.into())
    }

    /// The secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StdinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdinSecret(<redacted>)")
    }
}

impl ChildSpec {
    /// A spec for `program` with no arguments, the inherited environment, no log file and the
    /// default tail length.
    pub fn new(label: impl Into<String>, program: impl Into<String>) -> ChildSpec {
        ChildSpec {
            label: label.into(),
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            clear_env: false,
            log_dir: None,
            log_max_bytes: super::log_file::log_max_bytes_from_env(),
            tail_lines: DEFAULT_TAIL_LINES,
            stdin_secret: None,
        }
    }

    /// Hands `secret` to the child on its stdin (one line, then end of file).
    pub fn stdin_secret(mut self, secret: StdinSecret) -> ChildSpec {
        self.stdin_secret = Some(secret);
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> ChildSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> ChildSpec {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> ChildSpec {
        self.cwd = Some(dir.into());
        self
    }

    /// Starts the child from an empty environment (plus [`ChildSpec::env`]) when `clear` is
    /// true.
    pub fn clear_env(mut self, clear: bool) -> ChildSpec {
        self.clear_env = clear;
        self
    }

    /// Writes the child's output to a log file in `dir`.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> ChildSpec {
        self.log_dir = Some(dir.into());
        self
    }

    /// Caps the log file at `bytes` (then it is rotated).
    pub fn log_max_bytes(mut self, bytes: u64) -> ChildSpec {
        self.log_max_bytes = bytes.max(1);
        self
    }

    /// Keeps the last `lines` output lines in memory.
    pub fn tail_lines(mut self, lines: usize) -> ChildSpec {
        self.tail_lines = lines;
        self
    }

    /// Replaces port placeholders (`{port}`, `{port0}`, `{port1}`, ...) in the program, the
    /// arguments and the environment values with `ports` (see [`fill_placeholders`]).
    pub fn with_ports(mut self, ports: &[u16]) -> Result<ChildSpec, PlaceholderError> {
        self.program = fill_placeholders(&self.program, ports)?;
        for arg in &mut self.args {
            *arg = fill_placeholders(arg, ports)?;
        }
        for value in self.env.values_mut() {
            *value = fill_placeholders(value, ports)?;
        }
        Ok(self)
    }

    /// The log file this spec writes to, if any: `<log_dir>/<label>.log` with every `/` in
    /// the label replaced by `_` (so `rollout/0` becomes `rollout_0.log`).
    pub fn log_path(&self) -> Option<PathBuf> {
        self.log_dir
            .as_deref()
            .map(|dir| log_path_in(dir, &self.label))
    }
}

fn log_path_in(dir: &Path, label: &str) -> PathBuf {
    let mut name: String = label
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        name = format!("child{name}");
    }
    dir.join(format!("{name}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_path_replaces_slashes_in_the_label() {
        let spec = ChildSpec::new("rollout/0", "x").log_dir("/tmp/logs");
        assert_eq!(
            spec.log_path(),
            Some(PathBuf::from("/tmp/logs/rollout_0.log"))
        );
        let spec = ChildSpec::new("..", "x").log_dir("/tmp/logs");
        assert_eq!(
            spec.log_path(),
            Some(PathBuf::from("/tmp/logs/child...log"))
        );
        assert_eq!(ChildSpec::new("a", "x").log_path(), None);
    }

    #[test]
    fn with_ports_fills_program_args_and_env() {
        let spec = ChildSpec::new("w/0", "server")
            .args(["--port", "{port}", "--metrics={port1}"])
            .env("PORT", "{port0}")
            .with_ports(&[8000, 8001])
            .expect("two ports suffice");
        assert_eq!(spec.args, vec!["--port", "8000", "--metrics=8001"]);
        assert_eq!(spec.env.get("PORT").map(String::as_str), Some("8000"));
        let err = ChildSpec::new("w/0", "server")
            .args(["{port2}"])
            .with_ports(&[1, 2])
            .expect_err("index 2 has no port");
        assert_eq!(err.index, 2);
    }
}
