//! Logging set-up shared by every subcommand: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`), human-readable or JSON lines. Colours only on a terminal. Each log line is
//! written whole, with a progress bar (if one is drawn) cleared around it, so the two never
//! share a line.

use std::io::{IsTerminal, Write};
use tracing_subscriber::EnvFilter;

/// Collects one event's output and writes it to stderr in one piece when dropped.
struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
        super::rollout_report::suspended(|| {
            let _ = std::io::stderr().lock().write_all(&bytes);
        });
    }
}

/// The filter used when `RUST_LOG` is unset: fleet's own events from `level` up, and the
/// libraries' chatter off (ractor_cluster logs every session opened, authenticated and closed
/// at INFO, and a WARN for each disconnect that fleet already reports in its own words).
pub fn default_filter(level: &str) -> String {
    format!(
        "{level},ractor=warn,ractor_cluster=error,hyper=warn,hyper_util=warn,h2=warn,rustls=warn"
    )
}

/// Installs the global subscriber with `default` as the filter when `RUST_LOG` is unset. Safe
/// to call once per process.
pub fn init(json: bool, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(|| EventWriter(Vec::with_capacity(256)));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
