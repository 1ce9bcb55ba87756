//! `fleet bench-proxy` (hidden, temporary): runs `fleet_launcher::proxy::bench` and prints the
//! report. To be folded under `fleet bench` later.

/// Measure the proxy's overhead against the mock backend, in-process.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the benchmark.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
