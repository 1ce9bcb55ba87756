//! Child output, line by line, to `tracing` (at DEBUG), a log file and an in-memory tail.
//!
//! Output is read in bounded lines: a child that prints a megabyte without a newline must not
//! make the supervisor buffer a megabyte per line, so bytes past [`MAX_LINE_BYTES`] are dropped
//! and the line is marked. Bytes that are not UTF-8 are replaced, never an error. The tail is a
//! ring buffer shared with the handle so that error messages can quote the last lines at any
//! time, including after the child is gone.
//!
//! The pumps run on runtime threads, so they never block: lines go to the log file through its
//! writer thread (see `log_file.rs`), and to `tracing` at DEBUG, so a chatty child does not
//! flood the node's stderr (`RUST_LOG=fleet_launcher::child_output=debug` shows them).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::log_file::LogWriter;
use super::spec::MAX_LINE_BYTES;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The last `capacity` lines of a child's output.
#[derive(Debug)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    pub(crate) fn new(capacity: usize) -> Tail {
        Tail {
            lines: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    fn push(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// A tail shared between the pumps and the handle.
pub(crate) type SharedTail = Arc<Mutex<Tail>>;

/// Reads the whole snapshot, tolerating a poisoned lock (a pump that panicked mid-push leaves
/// a consistent deque behind).
pub(crate) fn snapshot(tail: &SharedTail) -> Vec<String> {
    match tail.lock() {
        Ok(t) => t.snapshot(),
        Err(poisoned) => poisoned.into_inner().snapshot(),
    }
}

/// Where one pump sends its lines.
pub(crate) struct Sinks {
    pub(crate) label: Arc<str>,
    pub(crate) pid: u32,
    pub(crate) tail: SharedTail,
    pub(crate) log: Option<LogWriter>,
}

impl Sinks {
    fn emit(&self, stream: Stream, raw: &[u8], dropped: usize) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = String::from_utf8_lossy(raw).into_owned();
        if dropped > 0 {
            line.push_str(&format!(" [... {dropped} more bytes dropped]"));
        }
        tracing::debug!(
            target: "fleet_launcher::child_output",
            worker = %self.label,
            pid = self.pid,
            stream = stream.as_str(),
            "{line}"
        );
        if let Some(log) = &self.log {
            log.line(&line);
        }
        match self.tail.lock() {
            Ok(mut t) => t.push(line),
            Err(poisoned) => poisoned.into_inner().push(line),
        }
    }
}

/// Pumps `reader` to `sinks` until end of file or a read error.
pub(crate) async fn pump<R: AsyncRead + Unpin>(reader: R, stream: Stream, sinks: Sinks) {
    let mut reader = BufReader::with_capacity(8 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut dropped = 0usize;
    loop {
        let (consumed, complete) = match reader.fill_buf().await {
            Ok([]) => {
                if !line.is_empty() || dropped > 0 {
                    sinks.emit(stream, &line, dropped);
                }
                return;
            }
            Ok(buf) => {
                let (chunk, consumed, complete) = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => (&buf[..i], i + 1, true),
                    None => (buf, buf.len(), false),
                };
                let room = MAX_LINE_BYTES.saturating_sub(line.len());
                let take = room.min(chunk.len());
                line.extend_from_slice(&chunk[..take]);
                dropped += chunk.len() - take;
                (consumed, complete)
            }
            Err(e) => {
                tracing::warn!(
                    worker = %sinks.label,
                    pid = sinks.pid,
                    stream = stream.as_str(),
                    error = %e,
                    "reading the child's output failed; no more output is captured from this stream"
                );
                return;
            }
        };
        reader.consume(consumed);
        if complete {
            sinks.emit(stream, &line, dropped);
            line.clear();
            dropped = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sinks(capacity: usize) -> (Sinks, SharedTail) {
        let tail = Arc::new(Mutex::new(Tail::new(capacity)));
        let sinks = Sinks {
            label: Arc::from("t/0"),
            pid: 1,
            tail: tail.clone(),
            log: None,
        };
        (sinks, tail)
    }

    #[tokio::test]
    async fn splits_lines_keeps_the_last_ones_and_the_unterminated_end() {
        let (s, tail) = sinks(2);
        let input: &[u8] = b"one\ntwo\r\nthree\nfour";
        pump(input, Stream::Stdout, s).await;
        assert_eq!(snapshot(&tail), vec!["three", "four"]);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_marked_and_bad_utf8_is_replaced() {
        let (s, tail) = sinks(10);
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n\xff\xfeok\n");
        pump(&input[..], Stream::Stderr, s).await;
        let lines = snapshot(&tail);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("xxxx"));
        assert!(
            lines[0].ends_with(" [... 10 more bytes dropped]"),
            "{}",
            &lines[0][MAX_LINE_BYTES - 5..]
        );
        assert_eq!(lines[1], "\u{fffd}\u{fffd}ok");
    }

    #[tokio::test]
    async fn zero_capacity_keeps_nothing() {
        let (s, tail) = sinks(0);
        pump(&b"a\nb\n"[..], Stream::Stdout, s).await;
        assert!(snapshot(&tail).is_empty());
    }
}
