//! `fleet proxy`: serve the OpenAI-compatible recording proxy until Ctrl-C or SIGTERM.
//!
//! A thin wrapper over `fleet_proxy::serve`. Once listening it prints one line to
//! stdout, `fleet proxy listening on 127.0.0.1:PORT`, so whoever started it with `--port 0`
//! learns the real port without racing for a free one.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fleet_proxy::{serve, ProxyConfig};

/// Serve the OpenAI-compatible proxy that records agent sessions for training.
///
/// Agents talk to it as if it were OpenAI (`OPENAI_BASE_URL=http://HOST:PORT/v1`, with a
/// session key as the API key); it forwards to the inference backend (vLLM, SGLang, or `fleet
/// mock-llm`) and records every turn with token ids, logprobs and the policy version. The
/// admin key comes from --admin-key-file, else --admin-key-stdin, else FLEET_ADMIN_KEY
/// (removed from the environment once read), else it is random (admin routes are then
/// locked). An empty key is refused (it would turn authentication off), and off loopback so is
/// a short or well-known one. The backend key, if the backend wants one, comes from
/// FLEET_BACKEND_API_KEY.
///
/// With several --backend (servers of one role), or with --router, requests go through the
/// router: session-sticky, least in-flight otherwise, health-aware (a circuit breaker per
/// server) and version-aware; each turn records the version of the server that served it.
/// Admin routes under /router/ (GET/POST /router/servers, /router/drain, /router/pause_all,
/// /router/restore, /router/resume_all, /router/fail, /router/min_version) drive it.
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct Args {
    /// Root URL of the OpenAI-compatible inference server, e.g. http://127.0.0.1:8000; repeat
    /// it for several servers of one role (then the router is used).
    #[arg(long, required = true)]
    backend: Vec<String>,
    /// Use the router even with one --backend (so that /router/* can drive it).
    #[arg(long)]
    router: bool,
    /// Seconds a request waits in the router for an available server; 503 after.
    #[arg(long, default_value_t = 600.0)]
    router_wait_secs: f64,
    /// Consecutive failures (connect errors, timeouts, 5xx) that open a server's breaker.
    #[arg(long, default_value_t = 3)]
    breaker_failures: u32,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to bind; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// File holding the admin key (trailing whitespace ignored; an empty one is refused).
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Read the admin key from the first line of stdin (how a rollout worker hands it over,
    /// so that it is never in the proxy's environment).
    #[arg(long, conflicts_with = "admin_key_file")]
    admin_key_stdin: bool,
    /// Policy version recorded until the first POST /set_version.
    #[arg(long = "version", default_value_t = 0)]
    policy_version: u64,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Most sessions held at once (429 above).
    #[arg(long, default_value_t = 1024)]
    max_sessions: usize,
    /// Most turns per session.
    #[arg(long, default_value_t = 512)]
    max_turns: usize,
    /// Seconds without a request after which a session is ended (and, once ended, forgotten
    /// if not exported).
    #[arg(long, default_value_t = 1800.0)]
    session_idle_secs: f64,
    /// Seconds to wait for the backend's answer (or for each streamed chunk); 504 after.
    #[arg(long, default_value_t = 600.0)]
    backend_timeout_secs: f64,
    /// Seconds to wait for a connection to the backend; 502 after.
    #[arg(long, default_value_t = 5.0)]
    backend_connect_timeout_secs: f64,
    /// Longest an export waits for its session to end.
    #[arg(long, default_value_t = 3600.0)]
    export_timeout_secs: f64,
    /// Most bytes one session records (413 session_byte_limit_reached above).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_session_bytes: usize,
    /// Seconds a connection's writes may make no progress (a client that stopped reading a
    /// stream or an export) before it is closed; its turn is recorded as cancelled.
    #[arg(long, default_value_t = 60.0)]
    write_stall_secs: f64,
    /// Seconds a client may take to send a request body; 400 body_incomplete after.
    #[arg(long, default_value_t = 30.0)]
    body_read_timeout_secs: f64,
    /// Listen backlog (connections the kernel queues before they are accepted; capped by
    /// net.core.somaxconn).
    #[arg(long, default_value_t = fleet_http::listen::DEFAULT_LISTEN_BACKLOG)]
    listen_backlog: u32,
    /// Do not add vLLM's `"return_token_ids": true` to requests (for backends that reject it).
    #[arg(long)]
    no_request_token_ids: bool,
}

fn secs(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name} must be a positive number"))
}

/// Runs the proxy.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut backends = args.backend.into_iter();
    let first = backends.next().context("give at least one --backend")?;
    let mut config = ProxyConfig::new(first);
    crate::metrics::install();
    config.metrics = Some(std::sync::Arc::new(crate::metrics::render));
    config.more_backends = backends.collect();
    config.router = args.router;
    config.router_wait_timeout = secs("router-wait-secs", args.router_wait_secs)?;
    config.breaker_threshold = args.breaker_failures;
    config.bind = std::net::SocketAddr::new(args.host, args.port);
    config.admin_key = match &args.admin_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the admin key file {}", path.display()))?
                .trim_end()
                .to_string(),
        ),
        None if args.admin_key_stdin => Some(
            crate::rpc_http::token_from_stdin()
                .context("--admin-key-stdin: reading the admin key from stdin")?,
        ),
        None => crate::secrets::take("FLEET_ADMIN_KEY"),
    };
    config.backend_api_key = std::env::var("FLEET_BACKEND_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    config.initial_version = args.policy_version;
    config.max_body_bytes = args.max_body_bytes;
    config.max_sessions = args.max_sessions;
    config.max_turns_per_session = args.max_turns;
    config.session_idle_timeout = secs("session-idle-secs", args.session_idle_secs)?;
    config.backend_timeout = secs("backend-timeout-secs", args.backend_timeout_secs)?;
    config.backend_connect_timeout = secs(
        "backend-connect-timeout-secs",
        args.backend_connect_timeout_secs,
    )?;
    config.export_timeout = secs("export-timeout-secs", args.export_timeout_secs)?;
    config.request_token_ids = !args.no_request_token_ids;
    config.listen_backlog = args.listen_backlog;
    config.max_session_bytes = args.max_session_bytes;
    config.write_stall_timeout = secs("write-stall-secs", args.write_stall_secs)?;
    config.body_read_timeout = secs("body-read-timeout-secs", args.body_read_timeout_secs)?;
    let proxy = serve(config).await?;
    if !proxy.admin_key_configured() {
        tracing::warn!("no admin key configured: a random one is in use, so admin routes are locked; set --admin-key-file or FLEET_ADMIN_KEY");
    }
    announce("fleet proxy", proxy.addr())?;
    super::shutdown_signal().await;
    tracing::info!("shutting down");
    proxy.shutdown().await;
    Ok(())
}

/// Prints the "listening on" line and flushes it.
pub(crate) fn announce(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} listening on {addr}").context("cannot write to stdout")?;
    out.flush().context("cannot flush stdout")?;
    Ok(())
}
