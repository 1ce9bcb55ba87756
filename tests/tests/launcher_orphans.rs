//! No orphans when a whole `fleet node` process is SIGKILLed: its children (isolated RpcServers
//! behind the HTTP launcher) and their process groups go with it.

use fleet_tests::{fleet_bin, pid_alive, wait_until, PipedChild};
use std::process::Command;
use std::time::Duration;

/// Direct children of `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_fleet_node_takes_its_20_children_along() {
    let mut node = PipedChild::spawn(
        "fleet node",
        Command::new(fleet_bin())
            .args([
                "node",
                "--demo",
                "20",
                "--isolated",
                "--port-range",
                "29000-29499",
            ])
            .env("FLEET_BIN", fleet_bin()),
    )
    .unwrap();
    node.wait_for_stdout(Duration::from_secs(60), |l| {
        l.starts_with("worker demo/0:").then_some(())
    })
    .await
    .unwrap();
    let pid = node.pid();
    // The node's children: the 20 rpc-server processes (plus their group guards).
    let kids = children_of(pid);
    let rpc_servers: Vec<u32> = kids
        .iter()
        .copied()
        .filter(|k| {
            std::fs::read_to_string(format!("/proc/{k}/cmdline"))
                .map(|c| c.contains("rpc-server"))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(rpc_servers.len(), 20, "children: {kids:?}");
    let mut all = kids.clone();
    for k in &kids {
        all.extend(children_of(*k));
    }
    // SAFETY: a process this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until(
        "every child of the killed node to be gone",
        Duration::from_secs(10),
        || {
            let all = all.clone();
            async move { all.iter().all(|p| !pid_alive(*p)).then_some(()) }
        },
    )
    .await
    .unwrap();
    let _ = node.try_wait();
}
