//! What an idle node costs: a real `fleet node --demo N` (this executable again), left alone
//! after its demo calls, measured over a window by the CPU time (utime + stime from `/proc`)
//! of the node process and all its children, as a percentage of one core.

use super::cpu::tree_time;
use fleet_actors::FleetError;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One measured node.
struct Measured {
    processes: usize,
    threads: usize,
    cpu: Duration,
    wall: Duration,
}

/// Threads and processes of the tree at `root`.
fn tree_size(root: u32) -> (usize, usize) {
    let mut procs = 0;
    let mut threads = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let parent = |pid: u32| -> Option<u32> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        s.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let mut p = pid;
        let mut inside = false;
        for _ in 0..64 {
            if p == root {
                inside = true;
                break;
            }
            match parent(p) {
                Some(q) if q != 0 && q != p => p = q,
                _ => break,
            }
        }
        if inside {
            procs += 1;
            threads += std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.count())
                .unwrap_or(0);
        }
    }
    (procs, threads)
}

async fn measure(workers: u32, window: Duration, isolated: bool) -> Result<Measured, FleetError> {
    let exe = std::env::current_exe()
        .map_err(|e| FleetError::internal(format!("finding this executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["node", "--demo", &workers.to_string(), "--serve-for"])
        .arg(format!("{}s", window.as_secs() + 120))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if isolated {
        cmd.arg("--isolated");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| FleetError::internal(format!("starting fleet node: {e}")))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("serving") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let result = async {
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .map_err(|_| FleetError::internal("fleet node did not start serving in 60 s"))?
            .map_err(|_| FleetError::internal("fleet node exited before serving"))?;
        // Let start-up work (demo calls, readiness probes) settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (processes, threads) = tree_size(pid);
        let c0 = tree_time(&[pid], &[]);
        let w0 = Instant::now();
        tokio::time::sleep(window).await;
        let cpu = tree_time(&[pid], &[]).saturating_sub(c0);
        Ok(Measured {
            processes,
            threads,
            cpu,
            wall: w0.elapsed(),
        })
    }
    .await;
    // SAFETY: kill has no memory-safety preconditions; the node shuts down on SIGINT.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Measures an idle `fleet node --demo N`, in-process workers and isolated ones.
pub async fn run(workers: u32, window: Duration) -> Result<String, FleetError> {
    let mut out = format!(
        "### An idle `fleet node --demo {workers}` over {} s (CPU of the node process and all its children)\n\n| workers | processes | threads | CPU time | % of one core |\n| --- | ---: | ---: | ---: | ---: |\n",
        window.as_secs()
    );
    for isolated in [false, true] {
        let m = measure(workers, window, isolated).await?;
        out += &format!(
            "| {workers} {} | {} | {} | {:.0} ms | {:.2}% |\n",
            if isolated {
                "isolated (`--isolated`: a `fleet rpc-server` child each)"
            } else {
                "in process"
            },
            m.processes,
            m.threads,
            m.cpu.as_secs_f64() * 1e3,
            100.0 * m.cpu.as_secs_f64() / m.wall.as_secs_f64().max(1e-9),
        );
    }
    Ok(out)
}
