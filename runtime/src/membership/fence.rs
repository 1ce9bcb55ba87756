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

use super::child_pids::{env_value, live_children_of};

fn belongs_to(pid: u32, node: &str) -> bool {
    env_value(pid, "FLEET_NODE").as_deref() == Some(node)
}

/// SIGKILLs every child process of `node`'s workers and their process groups; returns the
/// pids it signalled. Children in this process's own group get only their own signal.
pub fn kill_worker_children(node: &NodeId) -> Vec<u32> {
    let node = node.to_string();
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() } as u32;
    let mut killed = vec![];
    for (pid, pgrp) in live_children_of(std::process::id()) {
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
