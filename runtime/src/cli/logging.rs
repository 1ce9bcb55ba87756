//! Logging set-up shared by every subcommand: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`), human-readable or JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `default` as the filter when `RUST_LOG` is unset. Safe
/// to call once per process.
pub fn init(json: bool, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
