//! A test child whose stdout and stderr are captured line by line, for servers that announce
//! their port on stdout (`listening on 127.0.0.1:PORT`, python's `Serving HTTP on ... port N`)
//! and log requests on stderr, so a test can both find the server and count what it saw.
//!
//! Like [`crate::ChildGuard`], it runs in its own process group and kills the group on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wait::wait_until;

type Lines = Arc<Mutex<Vec<String>>>;

/// A child process with captured output lines, killed (whole group) on drop.
#[derive(Debug)]
pub struct PipedChild {
    child: Child,
    name: String,
    stdout: Lines,
    stderr: Lines,
}

fn collect(name: String, stream: &'static str, reader: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{name} {stream}] {line}");
            lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
}

impl PipedChild {
    /// Starts `cmd` in its own process group with stdin null and stdout/stderr captured
    /// (each line is also echoed to the test's stderr, prefixed with `name`).
    pub fn spawn(name: &str, cmd: &mut Command) -> std::io::Result<PipedChild> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        if let Some(out) = child.stdout.take() {
            collect(name.to_string(), "stdout", out, stdout.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(name.to_string(), "stderr", err, stderr.clone());
        }
        Ok(PipedChild {
            child,
            name: name.to_string(),
            stdout,
            stderr,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `parse` accepts a stdout line, and returns what it returned.
    pub async fn wait_for_stdout<T>(
        &self,
        deadline: Duration,
        mut parse: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let what = format!("a matching stdout line from {}", self.name);
        wait_until(&what, deadline, || {
            let found = self.stdout_lines().iter().find_map(|l| parse(l));
            async move { found }
        })
        .await
    }

    /// Returns the exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for PipedChild {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            if pgid > 1 {
                // SAFETY: killpg of the group we created; ESRCH (gone) is fine.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server that prints `listening on HOST:PORT` (fleet-test-server) and returns it
/// with its port.
pub async fn start_listening_server(
    name: &str,
    cmd: &mut Command,
) -> Result<(PipedChild, u16), String> {
    let child = PipedChild::spawn(name, cmd).map_err(|e| format!("cannot start {name}: {e}"))?;
    let port = child
        .wait_for_stdout(Duration::from_secs(20), |line| {
            line.strip_prefix("listening on ")
                .and_then(|addr| addr.rsplit_once(':'))
                .and_then(|(_, port)| port.trim().parse::<u16>().ok())
        })
        .await?;
    Ok((child, port))
}
