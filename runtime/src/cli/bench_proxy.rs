//! `fleet bench proxy`: runs `fleet_proxy::bench` and prints the report. Run it in
//! release: `cargo run --release --bin fleet -- bench proxy`.

use crate::bench::proxy::{run as bench, BenchOpts};

/// Measure the proxy's overhead against the mock backend, in-process, in one run.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed non-streaming requests per path.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Timed streaming requests per path.
    #[arg(long, default_value_t = 1000)]
    stream_requests: usize,
    /// Untimed warm-up requests per path and mode.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Concurrent clients for the throughput run.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests per client in the throughput run.
    #[arg(long, default_value_t = 300)]
    requests_per_client: usize,
    /// Tokens per completion.
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = bench(BenchOpts {
        requests: args.requests,
        stream_requests: args.stream_requests,
        warmup: args.warmup,
        concurrency: args.concurrency,
        requests_per_client: args.requests_per_client,
        max_tokens: args.max_tokens,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
