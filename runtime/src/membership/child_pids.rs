//! The child processes of a node's workers, found in `/proc`: every process whose parent is
//! the node process and whose environment names its worker (`FLEET_WORKER`, set by the HTTP
//! launcher).
//!
//! Not used by the node agent: it reads every launcher's pid from its own state (a scan reads
//! every process on the host). Tests use this as the independent account of which children a
//! node really has.

use std::collections::HashMap;

/// Worker id → pid of its live child process, for this process's workers. Empty where `/proc`
/// is not readable.
pub fn by_worker() -> HashMap<String, u32> {
    by_worker_of(std::process::id())
}

/// Worker id → pid of its live child process, for the workers of process `me`.
pub fn by_worker_of(me: u32) -> HashMap<String, u32> {
    live_children_of(me)
        .into_iter()
        .filter_map(|(pid, _)| Some((env_value(pid, "FLEET_WORKER")?, pid)))
        .collect()
}

/// The live (not zombie) direct children of process `me`: pid and process group. Empty where
/// `/proc` is not readable.
pub(crate) fn live_children_of(me: u32) -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut out = vec![];
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the parenthesised command: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|p| p.parse::<u32>().ok());
        let pgrp = f.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) || matches!(state, Some("Z") | Some("X")) {
            continue;
        }
        out.push((pid, pgrp.unwrap_or(0)));
    }
    out
}

/// The value of `key` in process `pid`'s initial environment, if it is set there.
pub(crate) fn env_value(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
