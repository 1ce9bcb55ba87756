//! The group guard: makes a SIGKILLed supervisor take a child's whole process group along.
//!
//! `PR_SET_PDEATHSIG` covers only the direct child: the kernel clears it in anything the child
//! forks, so when the supervising process is SIGKILLed, a shell wrapper's or a server's own
//! worker processes would be orphaned even though they sit in the child's process group. The
//! guard closes that gap with the one signal every process death produces, a closed pipe: a
//! tiny `/bin/sh` joins the child's group and blocks reading a pipe whose only write end this
//! process holds (in the [`super::ChildHandle`]; tokio's pipes are close-on-exec, so no other
//! child inherits it). When this process dies for any reason, or the handle is dropped, the read
//! sees end-of-file and the guard SIGKILLs the group, itself included. Because it is a member
//! of the group, every normal stop or kill of the group also ends the guard, so it never
//! outlives what it guards.

use std::process::Stdio;

use tokio::process::{ChildStdin, Command};

use super::spawner;

/// Reads until end of file, then kills the process group named by `$1`.
const GUARD_SCRIPT: &str = r#"read _; kill -9 -"$1" 2>/dev/null"#;

/// Starts the guard of process group `pgid` and returns the write end of its pipe. `None` (and
/// a warning) if it cannot be started; the child then relies on its parent-death signal alone.
pub(crate) async fn spawn(label: &str, pgid: u32) -> Option<ChildStdin> {
    let Ok(pgid_i32) = i32::try_from(pgid) else {
        return None;
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", GUARD_SCRIPT, "fleet-group-guard", &pgid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(pgid_i32)
        // If this Child is dropped the guard must live on: its pipe decides when it acts.
        .kill_on_drop(false);
    let failure = match spawner::spawn(cmd).await {
        Ok(Ok(mut guard)) => {
            let stdin = guard.stdin.take();
            // Reap it when the group goes.
            tokio::spawn(async move {
                let _ = guard.wait().await;
            });
            return stdin;
        }
        Ok(Err(e)) => e.to_string(),
        Err(gone) => gone.0,
    };
    tracing::warn!(
        worker = label,
        pid = pgid,
        error = %failure,
        "cannot start the process-group guard; if this process is SIGKILLed, only the direct \
         child is killed (by its parent-death signal), not what it forked"
    );
    None
}
