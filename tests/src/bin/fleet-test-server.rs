//! fleet-test-server: a small HTTP server whose behaviour each request chooses, for tests of
//! the launcher's process supervision and retry policy against a real process on loopback.
//!
//! Routes (behaviour is in the path, so one server serves a whole test table):
//!
//! | route | answer |
//! | --- | --- |
//! | `/health` | 200 `ok` |
//! | `/status/N[?retry_after=S]` | status N, with `Retry-After: S` when given |
//! | `/delay/MS[?status=N]` | waits MS milliseconds, then status N (default 200) |
//! | `/close` | drops the connection without an answer |
//! | `/crash` | prints a line to stderr and exits with code 3 |
//! | `/echo` | JSON: method, path, headers, body |
//! | `/stats` | JSON: request count per path (without query), and the total |
//! | `/count?path=P` | the request count of path P, as text |
//!
//! `/stats` and `/count` are not counted themselves. Every request is logged to stderr.
//! `--port 0` picks a free port; the first stdout line is always `listening on 127.0.0.1:PORT`.
//! `--exit-after N` exits (code 0) after answering N counted requests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(about = "HTTP server with per-request programmable behaviour, for fleet's tests")]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Exit after answering this many counted requests.
    #[arg(long)]
    exit_after: Option<u64>,
}

struct State {
    counts: Mutex<BTreeMap<String, u64>>,
    total: Mutex<u64>,
    exit_after: Option<u64>,
    shutdown: watch::Sender<bool>,
}

/// The service's error: returning one makes hyper drop the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on request")
    }
}

impl std::error::Error for DropConnection {}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn text(status: u16, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let counted = path != "/stats" && path != "/count";
    if counted {
        let mut counts = state.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(path.clone()).or_insert(0) += 1;
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    eprintln!("fleet-test-server: {method} {path}?{query} request-id={request_id}");

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match segments.as_slice() {
        ["health"] => Ok(text(200, "ok")),
        ["status", code] => match code.parse::<u16>() {
            Ok(code) if (200..600).contains(&code) => {
                let mut resp = text(code, format!("status {code}"));
                if let Some(secs) = query_param(&query, "retry_after") {
                    if let Ok(v) = hyper::header::HeaderValue::from_str(secs) {
                        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
                    }
                }
                Ok(resp)
            }
            _ => Ok(text(400, format!("bad status code {code:?}"))),
        },
        ["delay", ms] => match ms.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let status = query_param(&query, "status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200);
                Ok(text(status, format!("delayed {ms} ms")))
            }
            Err(_) => Ok(text(400, format!("bad delay {ms:?}"))),
        },
        ["close"] => {
            eprintln!("fleet-test-server: dropping the connection without an answer");
            Err(DropConnection)
        }
        ["crash"] => {
            eprintln!("fleet-test-server: crashing on request (exit code 3)");
            let _ = std::io::stderr().flush();
            std::process::exit(3);
        }
        ["echo"] => {
            let echo = serde_json::json!({
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            let mut resp = text(200, echo.to_string());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        ["stats"] => {
            let counts = state
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let total: u64 = counts.values().sum();
            Ok(text(
                200,
                serde_json::json!({ "counts": counts, "total": total }).to_string(),
            ))
        }
        ["count"] => {
            let wanted = query_param(&query, "path").unwrap_or("");
            let n = state
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(wanted)
                .copied()
                .unwrap_or(0);
            Ok(text(200, n.to_string()))
        }
        _ => Ok(text(404, format!("no route for {path}"))),
    };

    if counted {
        let mut total = state.total.lock().unwrap_or_else(|p| p.into_inner());
        *total += 1;
        if state.exit_after.is_some_and(|n| *total >= n) {
            eprintln!("fleet-test-server: answered {total} requests, exiting");
            state.shutdown.send_replace(true);
        }
    }
    result
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let listener = match TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "fleet-test-server: cannot bind {}:{}: {e}",
                args.host, args.port
            );
            std::process::exit(2);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet-test-server: no local address: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();

    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let state = Arc::new(State {
        counts: Mutex::new(BTreeMap::new()),
        total: Mutex::new(0),
        exit_after: args.exit_after,
        shutdown,
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("fleet-test-server: accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let mut stop = state.shutdown.subscribe();
                connections.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    Ok::<(), Infallible>(())
                });
            }
            _ = shutdown_rx.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    // Let in-flight answers go out (graceful shutdown finishes them), with a bound.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    std::process::exit(0);
}
