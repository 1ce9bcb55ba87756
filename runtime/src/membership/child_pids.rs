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
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
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
        // Fields after the parenthesised command: state, ppid, ...
        let mut rest = match stat.rsplit_once(')') {
            Some((_, rest)) => rest.split_whitespace(),
            None => continue,
        };
        let state = rest.next();
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) || matches!(state, Some("Z") | Some("X")) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if let Some(worker) = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"FLEET_WORKER="))
        {
            out.insert(String::from_utf8_lossy(worker).into_owned(), pid);
        }
    }
    out
}
