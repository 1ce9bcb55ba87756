//! A child's log file, written by a thread of its own and rotated by size.
//!
//! The pumps run on runtime threads, which also carry heartbeats and every call of the node.
//! A file write can block (a slow or full disk, a log directory on NFS), so the pumps never
//! write: they hand each line to the writer thread over a bounded channel and go on. When the
//! writer falls that far behind, lines are dropped (counted, and the count written into the
//! file when it catches up) rather than wait: the tail kept in memory for error messages is
//! filled by the pumps themselves and stays complete.
//!
//! The file is bounded: when a write would take it past its cap, `NAME.log` becomes
//! `NAME.log.1` (replacing the older one) and a new `NAME.log` is started, so one child never
//! holds more than two caps of disk. The cap is [`DEFAULT_LOG_MAX_BYTES`] unless
//! [`LOG_MAX_BYTES_ENV`] says otherwise.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// The default size cap of one log file: 64 MiB, so a child keeps at most 128 MiB of log
/// (the live file and one rotated file).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 << 20;

/// Environment variable (of the node process) that overrides [`DEFAULT_LOG_MAX_BYTES`], in
/// bytes.
pub const LOG_MAX_BYTES_ENV: &str = "FLEET_CHILD_LOG_MAX_BYTES";

/// Lines the pumps may be ahead of the writer before lines are dropped.
const QUEUE_LINES: usize = 8192;

/// The cap in effect: [`LOG_MAX_BYTES_ENV`] if it holds a positive number, else the default.
pub fn log_max_bytes_from_env() -> u64 {
    std::env::var(LOG_MAX_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_LOG_MAX_BYTES)
}

/// The rotated file of `path`: `NAME.log.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

enum Entry {
    Line(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending side, shared by a child's two pumps. Dropping the last clone ends the thread
/// once it has written what it was given.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

impl LogWriter {
    /// Opens (creates, appends to) `path` on a new writer thread and returns once it is open;
    /// the open runs on that thread too, so a slow file system never blocks the caller's.
    pub(crate) async fn open(
        label: &str,
        path: &Path,
        max_bytes: u64,
    ) -> Result<LogWriter, std::io::Error> {
        let (tx, rx) = sync_channel::<Entry>(QUEUE_LINES);
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let path = path.to_path_buf();
        let thread_dropped = dropped.clone();
        std::thread::Builder::new()
            .name(format!("log {label}"))
            .spawn(move || match open_append(&path) {
                Ok((file, size)) => {
                    let _ = opened_tx.send(Ok(()));
                    let mut log = RotatingFile {
                        path,
                        file,
                        size,
                        max_bytes: max_bytes.max(1),
                    };
                    log.run(rx, &thread_dropped);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })?;
        match opened_rx.await {
            Ok(Ok(())) => Ok(LogWriter { tx, dropped }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the log writer thread ended")),
        }
    }

    /// Queues one line (without its newline); never waits. A line that does not fit in the
    /// queue is counted as dropped.
    pub(crate) fn line(&self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        match self.tx.try_send(Entry::Line(buf)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl LogWriter {
    /// Waits (at most `bound`) until every line queued so far is in the file.
    pub(crate) async fn flushed(&self, bound: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let mut entry = Entry::Flush(done_tx);
        loop {
            match self.tx.try_send(entry) {
                Ok(()) => break,
                Err(TrySendError::Full(e)) if tokio::time::Instant::now() < deadline => {
                    entry = e;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(_) => return,
            }
        }
        let _ = tokio::time::timeout_at(deadline, done_rx).await;
    }
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl RotatingFile {
    fn run(&mut self, rx: Receiver<Entry>, dropped: &AtomicU64) {
        while let Ok(entry) = rx.recv() {
            let line = match entry {
                Entry::Line(line) => line,
                Entry::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                let note = format!("[fleet: {lost} lines dropped: the log writer fell behind]\n");
                if !self.write(note.as_bytes()) {
                    return;
                }
            }
            if !self.write(&line) {
                return;
            }
        }
    }

    /// Writes `bytes`, rotating first if they would take the file past its cap. False when
    /// the file can no longer be written (reported once; the thread then ends).
    fn write(&mut self, bytes: &[u8]) -> bool {
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot rotate the child's log file; its output still goes to the tail");
                return false;
            }
        }
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the child's log file; its output still goes to the tail");
                false
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated_path(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn a_full_file_is_rotated_and_both_files_stay_under_the_cap() {
        let dir = std::env::temp_dir().join(format!("fleet-log-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("w_0.log");
        let w = LogWriter::open("w/0", &path, 1000).await.unwrap();
        let line = "x".repeat(99);
        for _ in 0..35 {
            w.line(&line);
        }
        drop(w);
        let rotated = rotated_path(&path);
        // 35 lines of 100 bytes, 10 per file: the live file holds the last 5.
        wait_for("the writer to finish", || {
            std::fs::metadata(&path).map(|m| m.len()).ok() == Some(500)
        });
        assert_eq!(std::fs::metadata(&rotated).unwrap().len(), 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unopenable_log_file_is_an_error_at_open() {
        let err = LogWriter::open("w/0", Path::new("/proc/fleet-no-such/w.log"), 1000).await;
        assert!(err.is_err());
    }
}
