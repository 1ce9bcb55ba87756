//! `fleet rpc-server`: one RpcServer worker in a process of its own, behind HTTP.

use crate::rpc_http::{
    run_until_stopped, token_from_stdin, RpcHttpConfig, DEFAULT_LISTEN_BACKLOG,
    DEFAULT_MAX_BODY_BYTES,
};
use anyhow::Context;
use fleet_actors::WorkerId;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Serve one RpcServer worker over HTTP, in a process of its own.
///
/// The worker hosts named engines called by method name, until SIGTERM, Ctrl-C or
/// `POST /destroy`. This is how a worker runs isolated in a child process behind fleet's
/// launcher instead of in-process on a node: the same actor, the same engines, the same typed
/// errors, reached over one HTTP path. The routes are shaped like AReaL's worker server, so
/// curl and AReaL-style clients work too. It hosts the built-in engines `counter`, `echo` and `sleep`; a program
/// with engines of its own runs the same server from its own binary with
/// `fleet_runtime::rpc_http::run_until_stopped` (or `serve`) and its own `EngineRegistry`.
///
/// The first stdout line is `fleet rpc-server listening on HOST:PORT` (use `--port 0` and read
/// it). SIGTERM/Ctrl-C run the engines' destroy hooks and exit 0; so does `POST /destroy`,
/// after answering.
///
/// Authentication: every route but GET /health needs `Authorization: Bearer TOKEN` (401
/// without). The token comes from --token-stdin (one line; what fleet's launcher uses),
/// else --token-file, else FLEET_RPC_TOKEN (removed from the environment once read); with
/// none, a random token is printed on stderr, on a loopback address only: on any other
/// address the server refuses to start without one (at least 16 characters). Every POST must
/// send `Content-Type: application/json` or `application/x-fleet-bincode` (415 otherwise).
///
/// JSON routes (errors are `{"error": {"kind", "message"}}` with 400/404/409/413/500/503):
///
///   GET  /health          {"status":"ok","worker":"rpc/0","engines":[...]}
///   GET  /status          engines, call in flight, calls done, uptime
///   POST /create_engine   {"engine":"counter","engine_name":"c","init_args":null}
///   POST /call            {"engine_name":"c","method":"incr","args":5,"rpc_meta":{}}
///                         (header X-Request-Id: a repeat is answered from the record)
///   POST /configure       {"role":"actor","rank":0,"config":{...}}
///   POST /set_env         {"env":{"SEED":"1"}}
///   POST /destroy         destroy hooks, answer, exit 0
///
/// fleet's launcher speaks bincode instead (Content-Type: application/x-fleet-bincode) on
/// POST /call (CallRequest -> CallReply) and POST /control (Control -> ControlReply).
///
/// Example:
///
///   openssl rand -hex 32 > token; chmod 600 token
///   fleet rpc-server --port 8000 --worker actor/0 --token-file token &
///
///   curl -s localhost:8000/create_engine -H "authorization: Bearer $(cat token)" \
///        -H 'content-type: application/json' -d '{"engine":"counter","engine_name":"c"}'
///
///   curl -s localhost:8000/call -H "authorization: Bearer $(cat token)" \
///        -H 'content-type: application/json' \
///        -d '{"engine_name":"c","method":"incr","args":5}'        # {"result":5}
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Port to listen on (0 = any free port; read it from the first stdout line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// This worker's id, `role/index`.
    #[arg(long, default_value = "rpc/0", value_parser = parse_worker)]
    worker: WorkerId,
    /// Node label used in error messages (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Initial worker environment for engines, KEY=VALUE (repeatable). The process
    /// environment itself is never changed.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Largest request body in bytes; larger ones are answered 413 before they are read.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Deadline of engine work when a request carries no X-Fleet-Timeout-Ms (e.g. 30s, 2h).
    #[arg(long, default_value = "1h", value_parser = super::node::parse_duration)]
    call_timeout: Duration,
    /// Bound on the engines' destroy hooks at shutdown.
    #[arg(long, default_value = "30s", value_parser = super::node::parse_duration)]
    destroy_timeout: Duration,
    /// Read the token from the first line of stdin (how fleet's launcher hands it over).
    #[arg(long, conflicts_with = "token_file")]
    token_stdin: bool,
    /// File holding the token (trailing whitespace ignored).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Deadline for a request body to arrive in full; 408 after (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = super::node::parse_duration)]
    body_read_timeout: Duration,
    /// Listen backlog (connections the kernel queues before they are accepted; capped by
    /// net.core.somaxconn).
    #[arg(long, default_value_t = DEFAULT_LISTEN_BACKLOG)]
    listen_backlog: u32,
}

/// The configured token, if any: --token-stdin, --token-file, FLEET_RPC_TOKEN.
fn configured_token(args: &Args) -> anyhow::Result<Option<String>> {
    if args.token_stdin {
        return token_from_stdin()
            .map(Some)
            .context("--token-stdin: reading the token from stdin");
    }
    if let Some(path) = &args.token_file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let t = t.trim_end().to_string();
        anyhow::ensure!(
            !t.is_empty(),
            "the token file {} is empty: an empty token would turn authentication off; put a random string in it (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        );
        return Ok(Some(t));
    }
    match crate::secrets::take("FLEET_RPC_TOKEN") {
        Some(t) if t.trim().is_empty() => anyhow::bail!(
            "FLEET_RPC_TOKEN is set but empty: an empty token would turn authentication off; unset it (a random token is then used on loopback) or set a random string"
        ),
        other => Ok(other),
    }
}

fn parse_worker(s: &str) -> Result<WorkerId, String> {
    s.parse()
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// Runs the server with the built-in engines until it is stopped.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = configured_token(&args)?;
    let mut config = RpcHttpConfig::new(fleet_actors::engine::builtin::registry())
        .addr(SocketAddr::new(args.host, args.port))
        .worker(args.worker)
        .node(args.node.unwrap_or_else(host_name))
        .max_body_bytes(args.max_body_bytes)
        .call_timeout(args.call_timeout)
        .destroy_timeout(args.destroy_timeout)
        .body_read_timeout(args.body_read_timeout)
        .listen_backlog(args.listen_backlog);
    config.token = token;
    config.env.extend(args.env);
    run_until_stopped(config).await
}
