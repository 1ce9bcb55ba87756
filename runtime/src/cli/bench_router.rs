//! `fleet bench router`: runs `fleet_proxy::router::bench` and prints the report. Run it in
//! release: `cargo run --release --bin fleet -- bench router`.

use crate::bench::router::{run as bench, RouterBenchOpts};

/// Measure the router's overhead per request against calling a server directly and against
/// the proxy without a router, in-process, in one run.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed requests per path and mode.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Untimed warm-up requests per path and mode.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Tokens per completion.
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// Servers behind the multi-server router.
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = bench(RouterBenchOpts {
        requests: args.requests,
        warmup: args.warmup,
        max_tokens: args.max_tokens,
        servers: args.servers,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
