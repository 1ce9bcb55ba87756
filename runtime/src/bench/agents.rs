//! `fleet bench agents`: thousands of agents hitting one proxy at once, each on a connection of
//! its own, against a `fleet mock-llm` backend; both servers are real child processes started
//! with their default limits (only `--max-sessions` is raised to fit the agents).
//!
//! Why: a rollout starts a batch with a burst of agents, and each agent is a separate process
//! with its own connection. With the listen backlog at 128 and the open-file soft limit at the
//! common 1,024, such a burst overflowed the accept queue and ran out of descriptors: 5,000
//! agents got 12,573 502s. This benchmark reports what a burst gets: every status, transport
//! errors, and the latency percentiles of one completion through the proxy. `--baseline BIN`
//! runs the same burst against another fleet executable first (e.g. the previous release), in
//! the same run, for a before/after.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::stats::{fmt, Samples};

/// What one burst got.
#[derive(Debug, Clone, Default)]
pub struct BurstReport {
    /// Agents started.
    pub agents: usize,
    /// Completions asked for.
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// Answered 502.
    pub bad_gateway: usize,
    /// Other statuses, with their count.
    pub other: std::collections::BTreeMap<u16, usize>,
    /// Connections refused/reset or requests that broke.
    pub transport_errors: usize,
    /// The first transport error, for the report.
    pub first_error: Option<String>,
    /// Latency of each completion answered 200 (connect included for an agent's first).
    pub latency: Option<Samples>,
    /// Wall time of the burst.
    pub wall: Duration,
}

/// A child server, killed with its process group when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: a child this benchmark started, in its own group.
            unsafe {
                libc::killpg(pid as i32, libc::SIGKILL);
            }
        }
    }
}

async fn start(bin: &Path, args: &[&str], nofile: Option<u64>) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe; it only lowers the soft limit of the child.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = n.min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                Ok(())
            });
        }
    }
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .env("RUST_LOG", "warn")
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} {args:?}", bin.display()))?;
    let out = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .with_context(|| format!("{args:?} did not print its listening line within 30 s"))??
        .with_context(|| format!("{args:?} exited before listening"))?;
    let addr = line
        .rsplit(' ')
        .next()
        .context("no address in the listening line")?
        .to_string();
    // Keep reading stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server { child, addr })
}

/// One request over a connection of its own, or over `sender`.
async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: &str,
    path: &str,
    key: &str,
    body: String,
) -> Result<(u16, Bytes), String> {
    let req = hyper::Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn connect(
    addr: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Runs one burst of `agents` agents, `turns` completions each, against `bin`'s proxy; the
/// servers start with the soft open-file limit `nofile` (as from a shell with `ulimit -n`).
pub async fn burst(
    bin: &Path,
    agents: usize,
    turns: usize,
    nofile: Option<u64>,
) -> anyhow::Result<BurstReport> {
    let dir = std::env::temp_dir().join(format!("fleet-bench-agents-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("admin.key");
    let admin = crate::rpc_http::auth::random_token();
    std::fs::write(&key_file, &admin)?;
    let mock = start(bin, &["mock-llm", "--port", "0"], nofile).await?;
    let backend = format!("http://{}", mock.addr);
    let sessions = (agents + 16).to_string();
    let key_path = key_file.display().to_string();
    let proxy = start(
        bin,
        &[
            "proxy",
            "--port",
            "0",
            "--backend",
            &backend,
            "--admin-key-file",
            &key_path,
            "--max-sessions",
            &sessions,
        ],
        nofile,
    )
    .await?;
    let addr = proxy.addr.clone();

    // Sessions first, over a few admin connections (not measured).
    let mut keys = Vec::with_capacity(agents);
    let mut admins = Vec::new();
    for _ in 0..8 {
        admins.push(connect(&addr).await.map_err(anyhow::Error::msg)?);
    }
    let body = r#"{"grant": true}"#.to_string();
    for i in 0..agents {
        let sender = &mut admins[i % 8];
        let (status, bytes) = post(sender, &addr, "/rl/start_session", &admin, body.clone())
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            status == 200,
            "start_session answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        keys.push(
            v["api_key"]
                .as_str()
                .context("no api_key in the session")?
                .to_string(),
        );
    }
    drop(admins);

    // The burst: every agent connects at once, then runs its turns on its connection.
    let start_line = Arc::new(tokio::sync::Barrier::new(agents));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let addr = addr.clone();
        let start_line = Arc::clone(&start_line);
        tasks.spawn(async move {
            start_line.wait().await;
            let mut out: Vec<Result<(u16, Duration), String>> = Vec::with_capacity(turns);
            let began = Instant::now();
            let mut sender = match connect(&addr).await {
                Ok(s) => s,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            };
            for t in 0..turns {
                let started = if t == 0 { began } else { Instant::now() };
                let body = format!(
                    r#"{{"model":"policy","max_tokens":16,"messages":[{{"role":"user","content":"turn {t}"}}]}}"#
                );
                match post(&mut sender, &addr, "/v1/chat/completions", &key, body).await {
                    Ok((s, _)) => out.push(Ok((s, started.elapsed()))),
                    Err(e) => {
                        out.push(Err(e));
                        // The connection is gone: a new one for the next turn.
                        match connect(&addr).await {
                            Ok(s) => sender = s,
                            Err(e) => {
                                out.push(Err(e));
                                return out;
                            }
                        }
                    }
                }
            }
            out
        });
    }
    let mut report = BurstReport {
        agents,
        requests: agents * turns,
        ..Default::default()
    };
    let mut lat = Vec::with_capacity(agents * turns);
    while let Some(r) = tasks.join_next().await {
        for o in r.context("an agent task panicked")? {
            match o {
                Ok((200, d)) => {
                    report.ok += 1;
                    lat.push(d);
                }
                Ok((502, _)) => report.bad_gateway += 1,
                Ok((s, _)) => *report.other.entry(s).or_default() += 1,
                Err(e) => {
                    report.transport_errors += 1;
                    report.first_error.get_or_insert(e);
                }
            }
        }
    }
    report.wall = t0.elapsed();
    report.latency = Some(Samples::new("completion", lat));
    drop(proxy);
    drop(mock);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// The Markdown table of one or two bursts.
pub fn table(rows: &[(String, BurstReport)]) -> String {
    let mut s = String::from(
        "| fleet | agents x turns | 200 | 502 | other | transport errors | p50 | p99 | p99/p50 | wall |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (name, r) in rows {
        let (p50, p99) = r
            .latency
            .as_ref()
            .map_or((Duration::ZERO, Duration::ZERO), |l| (l.p50(), l.pct(99.0)));
        let ratio = if p50.is_zero() {
            0.0
        } else {
            p99.as_secs_f64() / p50.as_secs_f64()
        };
        s.push_str(&format!(
            "| {name} | {} x {} | {} | {} | {:?} | {} | {} | {} | {ratio:.1}x | {:.2} s |\n",
            r.agents,
            r.requests / r.agents.max(1),
            r.ok,
            r.bad_gateway,
            r.other,
            r.transport_errors,
            fmt(p50),
            fmt(p99),
            r.wall.as_secs_f64()
        ));
    }
    for (name, r) in rows {
        if let Some(e) = &r.first_error {
            s.push_str(&format!("\n{name}: first transport error: {e}\n"));
        }
    }
    s
}
