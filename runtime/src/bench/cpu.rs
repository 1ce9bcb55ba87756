//! CPU time of processes, from `/proc/PID/stat`: user + system time of a process and of every
//! live descendant, so a benchmark charges a path with all the CPU it costs (the caller, the
//! node, the node's children), not only its latency.

use std::collections::HashMap;
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat` times.
fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// (ppid, utime + stime in ticks) of `pid`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// User + system CPU time of each root and all their live descendants, minus the trees of
/// `exclude` (for example a load generator the caller started).
pub fn tree_time(roots: &[u32], exclude: &[u32]) -> Duration {
    let mut all: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(st) = stat(pid) {
                    all.insert(pid, st);
                }
            }
        }
    }
    let counted = |mut pid: u32| {
        // Walk up to a root (bounded: pid chains are short, and 1 ends every chain).
        for _ in 0..64 {
            if exclude.contains(&pid) {
                return false;
            }
            if roots.contains(&pid) {
                return true;
            }
            match all.get(&pid) {
                Some((ppid, _)) if *ppid != 0 && *ppid != pid => pid = *ppid,
                _ => return false,
            }
        }
        false
    };
    let ticks: u64 = all
        .iter()
        .filter(|(pid, _)| counted(**pid))
        .map(|(_, (_, t))| *t)
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_s() as f64)
}

/// Processes that burn CPU (`yes > /dev/null`), one per core, until dropped (and at most
/// `bound`, whatever happens to this process).
pub struct Hogs(Vec<std::process::Child>);

impl Hogs {
    /// Starts `n` of them.
    pub fn start(n: usize, bound: Duration) -> std::io::Result<Hogs> {
        let mut hogs = Hogs(vec![]);
        for _ in 0..n {
            let child = std::process::Command::new("timeout")
                .arg(format!("{}s", bound.as_secs().max(1)))
                .arg("yes")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            hogs.0.push(child);
        }
        Ok(hogs)
    }

    /// Their pids (with their `yes` children, found by walking the tree).
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|c| c.id()).collect()
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // `timeout` passes the TERM on to `yes`.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

/// The number of cores (online CPUs).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
