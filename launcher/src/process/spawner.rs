//! The one thread that forks every child.
//!
//! `PR_SET_PDEATHSIG` is tied to the thread that forked the child: Linux sends the signal when
//! that *thread* exits, even though the parent process lives on. tokio's `spawn_blocking` pool
//! retires idle threads after ten seconds and runtime worker threads end with their runtime, so
//! a child forked on either would be SIGKILLed at some arbitrary later moment while perfectly
//! healthy. Every fork in this crate therefore happens here: a plain `std::thread`, started
//! lazily once per process, that lives until the process exits. Requests arrive over a channel
//! carrying the caller's runtime `Handle` (tokio registers the child with that runtime's
//! reactor, which is what later reaps it) and are answered over a oneshot.
//!
//! `Command::spawn` is quick (a fork and an exec handshake, about a millisecond), so one thread
//! serialising them is not a bottleneck.

use std::sync::mpsc;
use std::sync::OnceLock;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

struct SpawnRequest {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();

fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>, String> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("fleet-spawner".to_string())
                .spawn(move || serve(rx))
                .map(|_| tx)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn serve(requests: mpsc::Receiver<SpawnRequest>) {
    // The sender lives in a static, so this loop only ends when the process does.
    while let Ok(SpawnRequest {
        mut command,
        runtime,
        reply,
    }) = requests.recv()
    {
        let _entered = runtime.enter();
        // If the caller stopped waiting, dropping the Child kills it (`kill_on_drop`).
        let _ = reply.send(command.spawn());
    }
}

/// Why a spawn request could not be served (the thread is unavailable).
pub(crate) struct SpawnerGone(pub(crate) String);

/// Spawns `command` on the spawner thread, bound to the caller's tokio runtime.
///
/// Must be called from within a tokio runtime.
pub(crate) async fn spawn(command: Command) -> Result<std::io::Result<Child>, SpawnerGone> {
    let sender = spawner().map_err(SpawnerGone)?;
    let (reply, answer) = oneshot::channel();
    sender
        .send(SpawnRequest {
            command,
            runtime: Handle::current(),
            reply,
        })
        .map_err(|_| SpawnerGone("the spawner thread has exited".to_string()))?;
    answer
        .await
        .map_err(|_| SpawnerGone("the spawner thread dropped the request".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_spawn_runs_on_the_same_named_thread() {
        // `sh -c 'echo $PPID'` cannot name the thread, but /proc can: the forking thread's id is
        // the same for every spawn, and it is not a runtime thread.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut cmd = Command::new("true");
            cmd.kill_on_drop(true);
            let child = spawn(cmd).await.ok().expect("spawner").expect("spawn true");
            drop(child);
            let thread = std::fs::read_dir("/proc/self/task")
                .expect("proc")
                .filter_map(|e| e.ok())
                .find(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .map(|c| c.trim() == "fleet-spawner")
                        .unwrap_or(false)
                })
                .map(|e| e.file_name());
            seen.push(thread.expect("a thread named fleet-spawner exists"));
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    }
}
