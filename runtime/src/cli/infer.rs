//! `fleet infer`: serve the tiny policy as an OpenAI-compatible inference server until Ctrl-C
//! or SIGTERM. A thin wrapper over `fleet_policy::server::serve`; prints
//! `fleet infer listening on 127.0.0.1:PORT` once listening.

use std::path::PathBuf;
use std::time::Duration;

use fleet_policy::server::{serve, InferConfig};

/// Serve the tiny transformer policy (fleet-policy, candle, CPU) over the OpenAI API.
///
/// Chat and text completions (streamed or not) with temperature, n, stop, seed, per-token
/// logprobs and vLLM's token ids; SGLang's weight routes (/update_weights_from_disk,
/// /get_weight_version, /pause_generation, /continue_generation); system_fingerprint
/// `fleet-infer-v<N>-<hash>` on every answer. The prompt is the last user message.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model directory (config.json and model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to bind; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// If --model has no config.json, create the model there with random weights from this
    /// seed (nothing is downloaded).
    #[arg(long)]
    init_seed: Option<u64>,
    /// With --init-seed: supervised warm-up steps (32 generated examples each) on --task
    /// before serving, so RL starts from a policy that is partly right.
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// The task of the warm-up: reverse (`abc=` → `cba`) or add (`12+7=` → `19`).
    #[arg(long, default_value = "reverse")]
    task: fleet_policy::task::Task,
    /// Start from this weights file instead of MODEL/model.safetensors.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The version of the starting weights (default: the -v<N> of --weights' name, else 0).
    #[arg(long)]
    weight_version: Option<u64>,
    /// Seed of the sampler (mixed with each request's arrival number unless it sets a seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Temperature when a request sets none.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Most sequences decoded together in one step.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Tokens generated when a request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// Seconds a request is held while generation is paused before it gets a 503.
    #[arg(long, default_value_t = 600)]
    hold_timeout_s: u64,
    /// Milliseconds slept after every decoding step (0: none; slows generation for tests).
    #[arg(long, default_value_t = 0)]
    step_delay_ms: u64,
}

/// Runs the server.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = InferConfig::new(args.model);
    cfg.bind = std::net::SocketAddr::new(args.host, args.port);
    cfg.init_seed = args.init_seed;
    cfg.warmup = (args.warmup_steps > 0).then_some(fleet_policy::train::Warmup {
        task: args.task,
        steps: args.warmup_steps,
    });
    cfg.weights = args.weights;
    cfg.weight_version = args.weight_version;
    cfg.seed = args.seed;
    cfg.temperature = args.temperature;
    cfg.max_batch = args.max_batch;
    cfg.max_tokens = args.max_tokens;
    cfg.hold_timeout = Duration::from_secs(args.hold_timeout_s);
    cfg.step_delay = Duration::from_millis(args.step_delay_ms);
    let server = serve(cfg).await?;
    super::proxy::announce("fleet infer", server.addr())?;
    super::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}
