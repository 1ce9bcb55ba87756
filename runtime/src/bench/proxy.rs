//! The proxy's overhead, measured against calling the backend directly, in the same run.
//!
//! [`run`] starts `fleet mock-llm` and `fleet proxy` in-process on port 0 (the mock generates
//! instantly, so what is measured is HTTP and the proxy's own work), then times, alternating
//! one direct call and one call through the proxy so both see the same machine conditions:
//!
//! - non-streaming chat completions, and streaming ones (until `data: [DONE]`);
//! - completions per second with N concurrent clients, each with its own session.
//!
//! The direct calls ask the mock for what the proxy asks it for (logprobs and token ids), and
//! the proxied calls are what an agent sends (neither), so the overhead includes the proxy's
//! request rewriting, recording, and stripping the added fields from the answer.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use fleet_mock_llm::{self as mock_llm, MockConfig};
use fleet_proxy::{serve, ProxyConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Timed non-streaming requests per path (direct and proxied).
    pub requests: usize,
    /// Timed streaming requests per path.
    pub stream_requests: usize,
    /// Untimed requests per path and mode before timing.
    pub warmup: usize,
    /// Concurrent clients for the throughput run.
    pub concurrency: usize,
    /// Requests per client in the throughput run.
    pub requests_per_client: usize,
    /// Tokens per completion.
    pub max_tokens: u32,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            requests: 2000,
            stream_requests: 1000,
            warmup: 200,
            concurrency: 16,
            requests_per_client: 300,
            max_tokens: 16,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl Percentiles {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Percentiles {
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
        }
    }
}

/// Direct against proxied latency for one mode.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Comparison {
    /// Calling the mock directly.
    pub direct: Percentiles,
    /// Calling it through the proxy.
    pub proxied: Percentiles,
    /// `proxied.p50 - direct.p50`.
    pub overhead_p50_us: f64,
    /// `proxied.p90 - direct.p90`.
    pub overhead_p90_us: f64,
}

impl Comparison {
    fn new(direct: Vec<Duration>, proxied: Vec<Duration>) -> Comparison {
        let direct = Percentiles::of(direct);
        let proxied = Percentiles::of(proxied);
        Comparison {
            direct,
            proxied,
            overhead_p50_us: proxied.p50_us - direct.p50_us,
            overhead_p90_us: proxied.p90_us - direct.p90_us,
        }
    }
}

/// Throughput with concurrent clients.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    /// Concurrent clients.
    pub clients: usize,
    /// Completions per second calling the mock directly.
    pub direct_per_s: f64,
    /// Completions per second through the proxy.
    pub proxied_per_s: f64,
}

/// The benchmark's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Timed requests per path, non-streaming.
    pub requests: usize,
    /// Timed requests per path, streaming.
    pub stream_requests: usize,
    /// Tokens per completion.
    pub max_tokens: u32,
    /// Non-streaming chat completions.
    pub non_streaming: Comparison,
    /// Streaming chat completions, until `[DONE]`.
    pub streaming: Comparison,
    /// Non-streaming completions per second.
    pub throughput: Throughput,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chat completion, {} tokens; {} non-streaming and {} streaming requests per path",
            self.max_tokens, self.requests, self.stream_requests
        )?;
        writeln!(f)?;
        writeln!(f, "| mode | path | p50 | p90 | p99 |")?;
        writeln!(f, "| --- | --- | --- | --- | --- |")?;
        for (mode, c) in [
            ("non-streaming", &self.non_streaming),
            ("streaming", &self.streaming),
        ] {
            for (path, p) in [("direct to mock", &c.direct), ("through proxy", &c.proxied)] {
                writeln!(
                    f,
                    "| {mode} | {path} | {:.0} us | {:.0} us | {:.0} us |",
                    p.p50_us, p.p90_us, p.p99_us
                )?;
            }
            writeln!(
                f,
                "| {mode} | **proxy overhead** | **{:.0} us** | {:.0} us | |",
                c.overhead_p50_us, c.overhead_p90_us
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "throughput, {} concurrent clients, non-streaming: direct {:.0}/s, through proxy {:.0}/s",
            self.throughput.clients, self.throughput.direct_per_s, self.throughput.proxied_per_s
        )
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The mock or the proxy did not start.
    #[error("cannot start the {what}: {detail}")]
    Start {
        /// "mock" or "proxy".
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A request failed.
    #[error("request to {url} failed: {detail}")]
    Request {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) key: Option<String>,
    pub(crate) body: Bytes,
}

pub(crate) async fn call(client: &HttpClient, t: &Target) -> Result<Duration, BenchError> {
    let err = |detail: String| BenchError::Request {
        url: t.url.clone(),
        detail,
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(&t.url)
        .header("content-type", "application/json");
    if let Some(k) = &t.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req
        .body(Full::new(t.body.clone()))
        .map_err(|e| err(e.to_string()))?;
    let start = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| err("no answer within 30 s".into()))?
        .map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .map_err(|_| err("body not complete within 30 s".into()))?
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    let elapsed = start.elapsed();
    if !status.is_success() {
        return Err(err(format!("{status}: {}", String::from_utf8_lossy(&body))));
    }
    Ok(elapsed)
}

pub(crate) async fn post_admin(
    client: &HttpClient,
    url: String,
    key: &str,
    body: Value,
) -> Result<Value, BenchError> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| BenchError::Request {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    let fail = |detail: String| BenchError::Request {
        url: url.clone(),
        detail,
    };
    let resp = client.request(req).await.map_err(|e| fail(e.to_string()))?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))
}

/// Runs the benchmark (see the module docs).
pub async fn run(opts: BenchOpts) -> Result<BenchReport, BenchError> {
    let mock = mock_llm::serve(MockConfig {
        default_max_tokens: opts.max_tokens.max(1),
        ..MockConfig::default()
    })
    .await
    .map_err(|e| BenchError::Start {
        what: "mock",
        detail: e.to_string(),
    })?;
    let admin = fleet_proxy::random_token(16);
    let mut config = ProxyConfig::new(format!("http://{}", mock.addr()));
    config.admin_key = Some(admin.clone());
    config.max_sessions = opts.concurrency + 4;
    config.max_turns_per_session = usize::MAX / 2;
    let proxy = serve(config).await.map_err(|e| BenchError::Start {
        what: "proxy",
        detail: e.to_string(),
    })?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(opts.concurrency * 2)
        .build_http();
    let base = format!("http://{}", proxy.addr());
    let session = |client: HttpClient, base: String, admin: String| async move {
        post_admin(
            &client,
            format!("{base}/grant_capacity"),
            &admin,
            json!({"n": 1}),
        )
        .await?;
        let s = post_admin(
            &client,
            format!("{base}/rl/start_session"),
            &admin,
            json!({}),
        )
        .await?;
        Ok::<String, BenchError>(s["api_key"].as_str().unwrap_or_default().to_string())
    };
    let key = session(client.clone(), base.clone(), admin.clone()).await?;

    let agent_body = |stream: bool| {
        Bytes::from(
            json!({"model": "policy", "max_tokens": opts.max_tokens, "stream": stream,
                   "messages": [{"role": "system", "content": "You are a careful agent."},
                                {"role": "user", "content": "Read the file and write the tests for it."}]})
            .to_string(),
        )
    };
    let backend_body = |stream: bool| {
        Bytes::from(
            json!({"model": "policy", "max_tokens": opts.max_tokens, "stream": stream,
                   "logprobs": true, "return_token_ids": true,
                   "messages": [{"role": "system", "content": "You are a careful agent."},
                                {"role": "user", "content": "Read the file and write the tests for it."}]})
            .to_string(),
        )
    };
    let direct = |stream| Target {
        url: format!("http://{}/v1/chat/completions", mock.addr()),
        key: None,
        body: backend_body(stream),
    };
    let proxied = |stream| Target {
        url: format!("{base}/v1/chat/completions"),
        key: Some(key.clone()),
        body: agent_body(stream),
    };

    let mut comparisons = Vec::new();
    for (stream, n) in [(false, opts.requests), (true, opts.stream_requests)] {
        let (d, p) = (direct(stream), proxied(stream));
        for _ in 0..opts.warmup {
            call(&client, &d).await?;
            call(&client, &p).await?;
        }
        let mut ds = Vec::with_capacity(n);
        let mut ps = Vec::with_capacity(n);
        for _ in 0..n {
            ds.push(call(&client, &d).await?);
            ps.push(call(&client, &p).await?);
        }
        comparisons.push(Comparison::new(ds, ps));
    }

    // Throughput: each client its own session, like concurrent agents.
    let mut keys = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        keys.push(session(client.clone(), base.clone(), admin.clone()).await?);
    }
    let mut rates = Vec::new();
    for through_proxy in [false, true] {
        let targets: Vec<Arc<Target>> = keys
            .iter()
            .map(|k| {
                Arc::new(if through_proxy {
                    Target {
                        url: format!("{base}/v1/chat/completions"),
                        key: Some(k.clone()),
                        body: agent_body(false),
                    }
                } else {
                    direct(false)
                })
            })
            .collect();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in targets {
            let client = client.clone();
            let n = opts.requests_per_client;
            tasks.push(tokio::spawn(async move {
                for _ in 0..n {
                    call(&client, &t).await?;
                }
                Ok::<(), BenchError>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| BenchError::Request {
                url: base.clone(),
                detail: format!("client task failed: {e}"),
            })??;
        }
        let total = (opts.concurrency * opts.requests_per_client) as f64;
        rates.push(total / start.elapsed().as_secs_f64());
    }
    proxy.shutdown().await;
    mock.shutdown().await;
    let streaming = comparisons.pop().expect("two comparisons");
    let non_streaming = comparisons.pop().expect("two comparisons");
    Ok(BenchReport {
        requests: opts.requests,
        stream_requests: opts.stream_requests,
        max_tokens: opts.max_tokens,
        non_streaming,
        streaming,
        throughput: Throughput {
            clients: opts.concurrency,
            direct_per_s: rates[0],
            proxied_per_s: rates[1],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tiny_run_produces_a_report() {
        let r = run(BenchOpts {
            requests: 5,
            stream_requests: 5,
            warmup: 1,
            concurrency: 2,
            requests_per_client: 3,
            max_tokens: 4,
        })
        .await
        .unwrap();
        assert!(r.non_streaming.direct.p50_us > 0.0);
        assert!(r.streaming.proxied.p50_us > 0.0);
        assert!(r.throughput.proxied_per_s > 0.0);
        assert!(r.to_string().contains("proxy overhead"));
    }
}
