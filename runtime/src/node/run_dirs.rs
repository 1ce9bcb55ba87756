//! The temporary run directories of fleet processes (`$TMPDIR/fleet-node-<pid>`,
//! `$TMPDIR/fleet-<pid>-<cluster id>`): the lease file and the logs of workers that belong to no
//! submitted job. A process names its own after its pid; at start it removes those of
//! processes that are gone, keeping the [`KEEP_DEAD`] newest (the logs of a run that just
//! failed are still there to read), so they do not pile up.

use std::path::{Path, PathBuf};

/// Directories of dead processes kept, newest first.
pub const KEEP_DEAD: usize = 3;

/// The run directory of this process for a node called `label` (`node`, or a cluster id).
pub fn own(label: &str) -> PathBuf {
    let pid = std::process::id();
    let name = if label == "node" {
        format!("fleet-node-{pid}")
    } else {
        format!("fleet-{pid}-{label}")
    };
    std::env::temp_dir().join(name)
}

/// The pid a run directory's name carries.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fleet-")?;
    let digits = rest.strip_prefix("node-").unwrap_or(rest);
    let pid = digits.split('-').next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes the run directories in `tmp` of processes that are gone, but the `keep` newest.
/// Only directories this user owns, with a run directory's name, are looked at.
pub fn prune(tmp: &Path, keep: usize) -> usize {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    let mut dead: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(tmp)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let pid = owner(&name)?;
                    let meta = std::fs::symlink_metadata(e.path()).ok()?;
                    (meta.is_dir() && meta.uid() == me && pid != std::process::id() && !alive(pid))
                        .then(|| (meta.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    dead.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut removed = 0;
    for (_, p) in dead.into_iter().skip(keep) {
        if std::fs::remove_dir_all(&p).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::debug!(removed, dir = %tmp.display(), "removed the run directories of processes that are gone");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_run_directories_of_dead_processes_go_and_the_newest_stay() {
        let tmp = std::env::temp_dir().join(format!("fleet-run-dirs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        // A pid that is not running: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mine = std::process::id();
        for name in [
            format!("fleet-node-{dead}"),
            format!("fleet-{dead}-abcdef"),
            format!("fleet-node-{mine}"),
            "fleet-ports-0".to_string(),
            "fleet-other".to_string(),
        ] {
            std::fs::create_dir_all(tmp.join(name)).unwrap();
        }
        assert_eq!(prune(&tmp, 0), 2);
        let left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.contains(&format!("fleet-node-{mine}")), "{left:?}");
        assert!(left.contains(&"fleet-ports-0".to_string()), "{left:?}");
        assert!(left.contains(&"fleet-other".to_string()), "{left:?}");
        assert_eq!(left.len(), 3, "{left:?}");
        std::fs::create_dir_all(tmp.join(format!("fleet-node-{dead}"))).unwrap();
        assert_eq!(prune(&tmp, 1), 0, "the newest dead one is kept");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
