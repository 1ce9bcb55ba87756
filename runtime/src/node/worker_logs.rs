//! Which log files belong to which worker of this process's nodes, and reading them, for
//! `fleet logs WORKER` from any machine (served on the node's HTTP port, `/v1/logs/...`).
//!
//! A worker's log directory is recorded when its node starts it; its files are the ones its
//! launcher writes there: `<role>_<index>.log` for a process worker, and
//! `<role>.<part>_<index>.log` for the parts of a rollout worker (`backend`, `proxy`). Entries
//! outlive the worker (a failed worker's log is what one wants to read), bounded per process.

use fleet_actors::WorkerId;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Workers remembered per process (the oldest are forgotten first).
const KEEP: usize = 8192;

/// The largest piece one read returns.
pub const MAX_READ: u64 = 256 << 10;

#[derive(Default)]
struct Table {
    dirs: HashMap<(String, String), PathBuf>,
    order: VecDeque<(String, String)>,
}

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Records that `worker` of `node` logs into `dir`.
pub fn register(node: &str, worker: &WorkerId, dir: &Path) {
    let key = (node.to_string(), worker.to_string());
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    if t.dirs.insert(key.clone(), dir.to_path_buf()).is_none() {
        t.order.push_back(key);
        while t.order.len() > KEEP {
            if let Some(old) = t.order.pop_front() {
                t.dirs.remove(&old);
            }
        }
    }
}

/// One log file of a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    /// Its file name (in the worker's log directory).
    pub name: String,
    /// Its size now, bytes.
    pub size: u64,
}

/// Whether `file` is one of `worker`'s log files.
pub fn belongs(worker: &WorkerId, file: &str) -> bool {
    let whole = format!("{}_{}.log", worker.role, worker.index);
    if file == whole {
        return true;
    }
    let (Some(rest), tail) = (
        file.strip_prefix(&format!("{}.", worker.role)),
        format!("_{}.log", worker.index),
    ) else {
        return false;
    };
    rest.strip_suffix(&tail).is_some_and(|part| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn dir_of(node: &str, worker: &WorkerId) -> Option<PathBuf> {
    let t = table().lock().unwrap_or_else(|p| p.into_inner());
    t.dirs.get(&(node.to_string(), worker.to_string())).cloned()
}

/// `worker`'s log files on `node`, by name; None: this node never ran it.
pub fn files(node: &str, worker: &WorkerId) -> Option<Vec<LogFile>> {
    let dir = dir_of(node, worker)?;
    let mut out: Vec<LogFile> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let size = e.metadata().ok()?.len();
                    belongs(worker, &name).then_some(LogFile { name, size })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(out)
}

/// Up to `max` bytes (at most [`MAX_READ`]) of `worker`'s log `file` from `offset`, and the
/// file's size.
pub fn read(
    node: &str,
    worker: &WorkerId,
    file: &str,
    offset: u64,
    max: u64,
) -> Result<(Vec<u8>, u64), String> {
    if !belongs(worker, file) {
        return Err(format!("{file} is not a log file of {worker}"));
    }
    let dir = dir_of(node, worker).ok_or_else(|| format!("node {node} never ran {worker}"))?;
    let path = dir.join(file);
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = offset.min(size);
    let want = (size - offset).min(max.clamp(1, MAX_READ));
    let mut buf = vec![0u8; want as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((buf, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_files_are_its_own_and_no_other_workers() {
        let w: WorkerId = "rollout-ab/1".parse().unwrap();
        assert!(belongs(&w, "rollout-ab_1.log"));
        assert!(belongs(&w, "rollout-ab.backend_1.log"));
        assert!(belongs(&w, "rollout-ab.proxy_1.log"));
        assert!(!belongs(&w, "rollout-ab_11.log"));
        assert!(!belongs(&w, "rollout-ab.backend_11.log"));
        assert!(!belongs(&w, "rollout-abc_1.log"));
        assert!(!belongs(&w, "rollout-ab.x.y_1.log"));
        assert!(!belongs(&w, "../rollout-ab_1.log"));
        assert!(!belongs(&w, "rollout-ab./_1.log"));
    }
}
