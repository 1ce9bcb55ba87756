//! `fleet mock-llm`: serve the mock inference server until Ctrl-C or SIGTERM.
//!
//! A thin wrapper over `fleet_mock_llm::serve`; prints
//! `fleet mock-llm listening on 127.0.0.1:PORT` once listening.

use std::time::Duration;

use fleet_mock_llm::{serve, FailMode, MockConfig};

/// A TEST DOUBLE of an OpenAI-compatible inference server, for tests and demos.
///
/// Serves /v1/chat/completions and /v1/completions (streamed or not), /v1/models, /health and
/// GET /stats (counters). Its "model" is a deterministic toy: the same --seed and request give
/// the same token ids and logprobs. It returns vLLM's `token_ids`/`prompt_token_ids` when asked
/// with "return_token_ids": true. It is not a language model: for real use, run vLLM or SGLang
/// and point the proxy at it with `fleet proxy --backend http://HOST:PORT`.
///
/// Weight updates and pauses, shaped like SGLang's (and vLLM's) routes: POST
/// /update_weights_from_disk {"model_path": FILE, "weight_version": "N"?}, GET
/// /get_weight_version, POST /pause_generation {"mode": "abort"|"in_place"|"retract"}, POST
/// /continue_generation; vLLM's POST /pause?mode=abort|wait|keep, POST /resume, GET /is_paused.
/// The outputs are a deterministic function of the weights file loaded (its BLAKE3 hash), and
/// every answer carries "system_fingerprint": "fleet-mock-v<N>-<hash>".
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to bind; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed of the toy sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Milliseconds before the first token.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// With --latency-ms, draw each request's delay uniformly up to this many milliseconds.
    #[arg(long)]
    latency_max_ms: Option<u64>,
    /// Tokens per second (default: instant).
    #[arg(long)]
    tokens_per_s: Option<f64>,
    /// Probability (0..1) that a completion request fails.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// How a failure looks: 503, drop (close the connection), or mixed.
    #[arg(long, default_value = "mixed")]
    fail_mode: FailMode,
    /// Tokens generated when a request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// Model name reported.
    #[arg(long, default_value = "fleet-mock")]
    model: String,
    /// A weights file to load at start (hashed, streamed; its version from --weight-version or
    /// a name ending in -v<N>).
    #[arg(long)]
    weights: Option<std::path::PathBuf>,
    /// The weights version at start (default: from the --weights file name, else 0).
    #[arg(long)]
    weight_version: Option<u64>,
    /// Seconds a generation request is held while paused before it gets a 503.
    #[arg(long, default_value_t = 600.0)]
    hold_timeout_secs: f64,
}

/// Runs the mock.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = MockConfig {
        bind: std::net::SocketAddr::new(args.host, args.port),
        seed: args.seed,
        latency: Duration::from_millis(args.latency_ms),
        latency_max: args.latency_max_ms.map(Duration::from_millis),
        tokens_per_s: args.tokens_per_s,
        fail_rate: args.fail_rate,
        fail_mode: args.fail_mode,
        default_max_tokens: args.max_tokens,
        model: args.model,
        weights: args.weights,
        weight_version: args.weight_version,
        hold_timeout: Duration::try_from_secs_f64(args.hold_timeout_secs).map_err(|_| {
            anyhow::anyhow!("--hold-timeout-secs must be a non-negative number of seconds")
        })?,
        ..MockConfig::default()
    };
    let mock = serve(config).await?;
    super::proxy::announce("fleet mock-llm", mock.addr())?;
    super::shutdown_signal().await;
    mock.shutdown().await;
    Ok(())
}
