//! Real processes for tests: locating the `fleet` binary, free loopback ports, and a guard that
//! kills a child's process group when the test ends or panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Path of the `fleet` binary built by this workspace.
///
/// `FLEET_BIN` overrides it; otherwise it is `target/<profile>/fleet` beside the running test
/// executable (`target/<profile>/deps/<test>`). `cargo test --workspace` builds it because
/// `fleet-runtime` has integration tests of its own.
pub fn fleet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("fleet");
    assert!(
        bin.exists(),
        "fleet binary not found at {}: run `cargo build --bin fleet` or set FLEET_BIN",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1, found by binding port 0 and releasing it.
///
/// Racy by nature (another process may take it); good enough for tests on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Owns a child process started by a test and kills its whole process group on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Starts `cmd` in a process group of its own with stdout and stderr inherited, so its
    /// output shows up in the test's captured output.
    pub fn spawn(name: &str, cmd: &mut Command) -> std::io::Result<ChildGuard> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0).stdin(Stdio::null());
        let child = cmd.spawn()?;
        Ok(ChildGuard {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` to the child's process group.
    pub fn signal_group(&self, signal: i32) {
        let pid = self.pid() as i32;
        if pid > 0 {
            // SAFETY: killpg with a pid we started; errors (already gone) are ignored.
            unsafe {
                libc::killpg(pid, signal);
            }
        }
    }

    /// Returns the exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal_group_raw(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ChildGuard {
    fn signal_group_raw(&self, pid: i32) {
        // SAFETY: see signal_group.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

/// Whether a process with this pid exists and is not a zombie (`Z` in `/proc/PID/stat`).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the field after the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
        Err(_) => false,
    }
}

/// Every descendant of `pid` (children, their children, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: std::collections::BTreeMap<u32, u32> = Default::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                if let Some((_, rest)) = stat.rsplit_once(')') {
                    if let Some(pp) = rest.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
                        parent_of.insert(p, pp);
                    }
                }
            }
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}
