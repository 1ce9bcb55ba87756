//! `fleet node`: serve a node until Ctrl-C.

/// Serve a fleet node until Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the node.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
