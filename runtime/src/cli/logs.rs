//! `fleet logs WORKER`: a worker's log files, fetched from the node that ran it.

use super::cluster_args::resolve;
use crate::membership::{StatusReport, Transport, TransportConfig};
use crate::node::worker_logs::LogFile;
use anyhow::Context;
use fleet_actors::WorkerId;
use fleet_http::{send_with_retry_raw, Client, HttpRequest, RetryPolicy};
use std::io::Write;
use std::time::Duration;

/// Show a worker's log files, fetched from the node that ran it, from any machine with the cookie.
///
/// The files are its process's stdout and stderr (a rollout worker's: its backend's and its
/// proxy's). The head says which nodes there are; each node serves the logs of the workers it
/// ran on its HTTP port (`/v1/logs/...`, token-checked), also after the worker was deleted or
/// failed.
///
/// A submitted job's workers are `<role>-<job id>/<index>`, e.g. `rollout-3fa2c1d0/0`
/// (`fleet status` lists the workers; `fleet job status ID` the job's roles). Their files are
/// also on each node under `<runs dir>/<job name>-<id>/logs/`.
///
/// Examples:
///
///   fleet logs rollout-3fa2c1d0/0
///
///   fleet logs rollout-3fa2c1d0/0 --follow          # until Ctrl-C
///
///   fleet logs rollout-3fa2c1d0/0 --file rollout-3fa2c1d0.backend_0.log --tail 50
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The worker, ROLE/INDEX.
    worker: String,
    /// Keep printing what is appended (until Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Only this file (the names are printed as `==> NAME <==` headers).
    #[arg(long)]
    file: Option<String>,
    /// Start with the last N lines of each file instead of the whole file.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    #[command(flatten)]
    head: super::head_client::HeadClientArgs,
}

struct Source {
    store: String,
    node: String,
    file: LogFile,
    offset: u64,
}

async fn get(
    client: &Client,
    base: &str,
    path: &str,
    token: &str,
    timeout: Duration,
) -> anyhow::Result<fleet_http::HttpResponse> {
    let req = HttpRequest::get(path).header("authorization", format!("Bearer {token}"));
    let policy = RetryPolicy::idempotent().deadline(timeout);
    send_with_retry_raw(client, base, &req, &policy, std::future::pending())
        .await
        .map_err(|e| anyhow::anyhow!("GET {base}{path}: {e}"))
}

/// Where the last `n` lines of `bytes` start.
fn tail_start(bytes: &[u8], n: usize) -> usize {
    let mut seen = 0;
    for (i, b) in bytes.iter().enumerate().rev() {
        if *b == b'\n' && i + 1 < bytes.len() {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

async fn status(args: &Args, cookie: &str) -> anyhow::Result<StatusReport> {
    let mut cfg = TransportConfig::loopback();
    cfg.cookie = cookie.to_string();
    cfg.tls = args.head.security.tls()?;
    let transport = Transport::start(&format!("logs-{:08x}", rand::random::<u32>()), &cfg)
        .await
        .context("starting a client")?;
    let report =
        crate::membership::fetch_status(&transport, &args.head.head, args.head.timeout).await;
    transport.stop();
    report.with_context(|| {
        format!(
            "asking the head at {} for its nodes (is `fleet head` running there? give --head HOST:PORT or set FLEET_HEAD)",
            args.head.head
        )
    })
}

/// Prints the worker's logs.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let worker: WorkerId = args
        .worker
        .parse()
        .map_err(|e| anyhow::anyhow!("{:?} is not a worker (ROLE/INDEX): {e}", args.worker))?;
    let cookie = args
        .head
        .security
        .cookie(&[resolve(&args.head.head)?.ip()])?;
    let token = crate::store::config::token_from_cookie(&cookie);
    let report = status(&args, &cookie).await?;
    let client = Client::new();
    let path = format!("/v1/logs/{}/{}", worker.role, worker.index);
    let mut sources = Vec::new();
    let mut asked = Vec::new();
    for n in &report.nodes {
        let Some(store) = &n.store else { continue };
        asked.push(n.node.clone());
        let Ok(r) = get(&client, store, &path, &token, args.head.timeout).await else {
            continue;
        };
        if r.status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let files: Vec<LogFile> = serde_json::from_value(v["files"].clone()).unwrap_or_default();
        for f in files {
            if args.file.as_ref().is_none_or(|want| *want == f.name) {
                sources.push(Source {
                    store: store.clone(),
                    node: n.node.clone(),
                    file: f,
                    offset: 0,
                });
            }
        }
    }
    anyhow::ensure!(
        !sources.is_empty(),
        "no node has logs of {worker}{} (asked {}); `fleet status` lists the workers, and a node that ran one and left takes its logs with it",
        args.file.as_ref().map(|f| format!(" named {f}")).unwrap_or_default(),
        if asked.is_empty() { "no node: none runs an HTTP port (--no-store)".to_string() } else { asked.join(", ") }
    );
    if args.tail.is_some() {
        for s in &mut sources {
            s.offset = s
                .file
                .size
                .saturating_sub(crate::node::worker_logs::MAX_READ);
        }
    }
    let many = sources.len() > 1;
    let mut out = std::io::stdout();
    let mut first = true;
    loop {
        let mut moved = false;
        for s in &mut sources {
            let read = format!("{path}/{}?offset={}", s.file.name, s.offset);
            let r = match get(&client, &s.store, &read, &token, args.head.timeout).await {
                Ok(r) if r.status == 200 => r,
                Ok(r) => anyhow::bail!(
                    "node {} answered {} for {}: {}",
                    s.node,
                    r.status,
                    s.file.name,
                    String::from_utf8_lossy(&r.body)
                ),
                Err(e) if args.follow => {
                    eprintln!("fleet logs: {e}; node {} may be gone", s.node);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut body: &[u8] = &r.body;
            if first {
                if let Some(n) = args.tail {
                    body = &body[tail_start(body, n)..];
                }
            }
            if !r.body.is_empty() {
                if many {
                    let _ = writeln!(out, "==> {} ({}) <==", s.file.name, s.node);
                }
                let _ = out.write_all(body);
                let _ = out.flush();
                s.offset += r.body.len() as u64;
                moved = true;
            }
        }
        first = false;
        if !args.follow && !moved {
            return Ok(());
        }
        if args.follow && !moved {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = super::shutdown_signal() => return Ok(()),
            }
        }
    }
}
