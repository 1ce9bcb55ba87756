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
//!
//! **Lease watch.** A node process that is stopped (SIGSTOP, a debugger, a frozen VM) cannot
//! fence, and its pipe stays open. A node that joined a head therefore names a lease file with
//! [`watch_lease`]: it rewrites the file (a counter) while its lease from the head holds, from
//! a thread of its own. Every guard started afterwards also reads the file every half lease and
//! SIGKILLs its group when the file did not change over one period: the children of a stopped
//! node (or of one whose lease lapsed) end on their own within about one lease, before the
//! head declares the node down (the lease is shorter than the head's timeout).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::{ChildStdin, Command};

use super::spawner;

/// Reads until end of file, then kills the process group named by `$1`.
const GUARD_SCRIPT: &str = r#"read _; kill -9 -"$1" 2>/dev/null"#;

/// The same, and also kills the group `$1` when the lease file `$2` did not change over a
/// period of `$3` seconds. (An asynchronous list's stdin is /dev/null in `sh`: the pipe is
/// handed to it as fd 3.)
const LEASE_GUARD_SCRIPT: &str = r#"exec 3<&0
( read _ <&3; kill -9 -"$1" 2>/dev/null ) &
last=$(cat "$2" 2>/dev/null)
while sleep "$3"; do
  now=$(cat "$2" 2>/dev/null)
  if [ "$now" = "$last" ]; then kill -9 -"$1" 2>/dev/null; exit 0; fi
  last=$now
done"#;

/// The lease file and check period of this process's node, if it set one.
static LEASE: Mutex<Option<(PathBuf, Duration)>> = Mutex::new(None);

/// Makes every guard started from now on also watch `file`: a guard kills its group when the
/// file did not change over `period` (see the module docs). `None` stops that for new guards.
/// Process-wide: one node per process.
pub fn watch_lease(lease: Option<(PathBuf, Duration)>) {
    *LEASE.lock().unwrap_or_else(|p| p.into_inner()) = lease;
}

/// Starts the guard of process group `pgid` and returns the write end of its pipe. `None` (and
/// a warning) if it cannot be started; the child then relies on its parent-death signal alone.
pub(crate) async fn spawn(label: &str, pgid: u32) -> Option<ChildStdin> {
    let Ok(pgid_i32) = i32::try_from(pgid) else {
        return None;
    };
    let lease = LEASE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut cmd = Command::new("/bin/sh");
    match &lease {
        None => cmd.args(["-c", GUARD_SCRIPT, "fleet-group-guard", &pgid.to_string()]),
        Some((file, period)) => cmd.args([
            "-c",
            LEASE_GUARD_SCRIPT,
            "fleet-group-guard",
            &pgid.to_string(),
            &file.to_string_lossy(),
            &format!("{:.3}", period.as_secs_f64()),
        ]),
    };
    cmd.stdin(Stdio::piped())
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
