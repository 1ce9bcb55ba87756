//! Secrets that arrive through the environment are taken out of it at process start, and the
//! process's file-descriptor limit is raised: what `fleet` does before anything else.
//!
//! Why the secrets: a process's environment is inherited by everything it forks, and agents
//! run LLM-chosen tool code (review finding C12). `FLEET_COOKIE` in a node's environment would
//! let an agent join the cluster and ask any node to spawn commands; `FLEET_ADMIN_KEY` in a
//! proxy's would let it grant capacity and export other sessions. So [`take_from_env`] copies
//! each such variable ([`SECRET_ENV_VARS`]) into this module, removes it from the environment,
//! and also overwrites its value in the process's initial environment block, which is what
//! `/proc/PID/environ` shows to every process of the same user (removing a variable alone
//! leaves that block unchanged). Code that needs the secret reads it with [`take`].
//!
//! Why the limit: every connection is a file descriptor, and the common soft limit is 1,024
//! while the hard limit is far higher; at 1,024, 5,000 agents on one proxy fail with `accept`
//! errors (502s at the client). [`raise_nofile_limit`] lifts the soft limit to the hard one.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

pub use fleet_launcher::process::SECRET_ENV_VARS;

static TAKEN: OnceLock<Mutex<HashMap<&'static str, String>>> = OnceLock::new();

fn taken() -> &'static Mutex<HashMap<&'static str, String>> {
    TAKEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Moves every variable of [`SECRET_ENV_VARS`] from the environment into this module and
/// blanks its value in `/proc/self/environ`.
///
/// Call it first thing in `main`, while the process has one thread: changing the environment
/// while other threads may read it is undefined behaviour in C.
pub fn take_from_env() {
    let mut found = Vec::new();
    for name in SECRET_ENV_VARS {
        if let Some(v) = std::env::var_os(name) {
            found.push((*name, v.to_string_lossy().into_owned()));
        }
    }
    if found.is_empty() {
        return;
    }
    blank_initial_environment(&found.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    let mut map = taken().lock().unwrap_or_else(|p| p.into_inner());
    for (name, value) in found {
        std::env::remove_var(name);
        map.insert(name, value);
    }
}

/// A secret taken from the environment at start, or (in a program that did not call
/// [`take_from_env`], e.g. a test) the environment variable itself.
pub fn take(name: &'static str) -> Option<String> {
    let map = taken().lock().unwrap_or_else(|p| p.into_inner());
    map.get(name).cloned().or_else(|| std::env::var(name).ok())
}

/// Overwrites the values of `names` in the strings `environ` points to, with NUL bytes.
fn blank_initial_environment(names: &[&str]) {
    // SAFETY: called while the process is single-threaded (see `take_from_env`); `environ` is a
    // NULL-terminated array of NUL-terminated strings, and at this point its strings are the
    // exec-time block (writable stack memory). Only bytes inside each string are written.
    unsafe {
        let mut p = libc::environ;
        if p.is_null() {
            return;
        }
        while !(*p).is_null() {
            let s = *p as *mut u8;
            let len = libc::strlen(*p);
            let bytes = std::slice::from_raw_parts(s, len);
            for name in names {
                let n = name.len();
                if len > n && &bytes[..n] == name.as_bytes() && bytes[n] == b'=' {
                    std::ptr::write_bytes(s.add(n + 1), 0, len - n - 1);
                }
            }
            p = p.add(1);
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after), or the error.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((before, lim.rlim_cur))
    }
}
