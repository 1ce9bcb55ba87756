//! Starting a server process that picks its own port.
//!
//! fleet's servers accept `--port 0` and print one line, `<what> listening on HOST:PORT`, on
//! stdout once they listen. [`spawn_listening`] sends the child's stdout to a file and waits
//! (with a deadline) for that line, so tests never race other processes for a "free" port.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ChildGuard;

/// Starts `cmd` and returns it with the address from its `listening on` line.
///
/// Panics with the child's output if it exits first or the line does not come within
/// `deadline`.
pub async fn spawn_listening(
    name: &str,
    cmd: &mut Command,
    deadline: Duration,
) -> (ChildGuard, SocketAddr) {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "fleet-test-{name}-{}-{}.out",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let file = std::fs::File::create(&path).expect("create the stdout file");
    cmd.stdout(file);
    let mut child = ChildGuard::spawn(name, cmd).expect("spawn the server");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.split_once(" listening on ").map(|(_, a)| a.trim()))
            .and_then(|a| a.parse::<SocketAddr>().ok())
        {
            let _ = std::fs::remove_file(&path);
            return (child, addr);
        }
        if let Some(status) = child.try_wait() {
            let _ = std::fs::remove_file(&path);
            panic!("{name} exited with {status} before listening; stdout: {text}");
        }
        if start.elapsed() > deadline {
            let _ = std::fs::remove_file(&path);
            panic!("{name} did not print `listening on` within {deadline:?}; stdout: {text}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
