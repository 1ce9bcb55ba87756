//! The first act of fencing: SIGKILL every child process this node forked for its workers,
//! with everything in their process groups, synchronously and before anything else.
//!
//! A fenced node must run nothing the head has given up: stopping the agent gracefully (destroy
//! hooks, TERM, a grace period) takes seconds that the head does not wait for. So the join loop
//! calls [`kill_worker_children`] straight from `/proc`, without asking the agent (which may be
//! busy), and only then stops the agent. A worker's child is found by its parent (this process)
//! and its environment, which names its node (`FLEET_NODE`, set for every worker's process by
//! the agent): children of another node in the same process (tests, benchmarks) are left alone.

use fleet_actors::NodeId;

/// The live (not zombie) direct children of this process: pid and process group.
fn children() -> Vec<(u32, u32)> {
    let me = std::process::id();
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

fn belongs_to(pid: u32, node: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("FLEET_NODE={node}");
    env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// SIGKILLs every child process of `node`'s workers and their process groups; returns the
/// pids it signalled. Children in this process's own group get only their own signal.
pub fn kill_worker_children(node: &NodeId) -> Vec<u32> {
    let node = node.to_string();
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() } as u32;
    let mut killed = vec![];
    for (pid, pgrp) in children() {
        if !belongs_to(pid, &node) {
            continue;
        }
        // SAFETY: kill(2)/killpg(2) on a child of this process (or its own group); an error
        // (already gone) is harmless.
        unsafe {
            if pgrp == pid && pgrp != own_group {
                libc::killpg(pgrp as i32, libc::SIGKILL);
            } else {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        killed.push(pid);
    }
    killed
}
