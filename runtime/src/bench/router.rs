//! The router's overhead per request, measured against calling a server directly and against
//! the proxy without a router, in the same run.
//!
//! [`run`] starts four zero-latency `fleet mock-llm` servers and three proxies in-process on
//! port 0: the single-backend proxy (no router), the proxy with the router over one server,
//! and the proxy with the router over all four. It then times chat completions round-robin
//! over the four paths (direct to a mock, and each proxy), one call each in turn, so every
//! path sees the same machine conditions. Each proxy path uses one session (the sticky case,
//! which is what an agent's turns are).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use super::proxy::{call, post_admin, BenchError, HttpClient, Percentiles, Target};
use fleet_mock_llm::{self as mock_llm, MockConfig};
use fleet_proxy::{serve, ProxyConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct RouterBenchOpts {
    /// Timed requests per path and mode.
    pub requests: usize,
    /// Untimed requests per path and mode first.
    pub warmup: usize,
    /// Tokens per completion.
    pub max_tokens: u32,
    /// Servers behind the multi-server router.
    pub servers: usize,
}

impl Default for RouterBenchOpts {
    fn default() -> Self {
        RouterBenchOpts {
            requests: 2000,
            warmup: 200,
            max_tokens: 16,
            servers: 4,
        }
    }
}

/// One mode's latencies per path.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Paths {
    /// Straight to a mock.
    pub direct: Percentiles,
    /// Through the proxy with one backend and no router (the path as it was).
    pub proxy: Percentiles,
    /// Through the proxy with the router over one server.
    pub router_1: Percentiles,
    /// Through the proxy with the router over `servers` servers.
    pub router_n: Percentiles,
}

/// The benchmark's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouterBenchReport {
    /// Timed requests per path and mode.
    pub requests: usize,
    /// Tokens per completion.
    pub max_tokens: u32,
    /// Servers behind the multi-server router.
    pub servers: usize,
    /// Non-streaming chat completions.
    pub non_streaming: Paths,
    /// Streaming chat completions, until `[DONE]`.
    pub streaming: Paths,
}

impl fmt::Display for RouterBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chat completion, {} tokens, zero-latency mocks; {} requests per path and mode",
            self.max_tokens, self.requests
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| mode | path | p50 | p90 | p99 | p50 − direct | p50 − proxy without router |"
        )?;
        writeln!(f, "| --- | --- | --- | --- | --- | --- | --- |")?;
        for (mode, p) in [
            ("non-streaming", &self.non_streaming),
            ("streaming", &self.streaming),
        ] {
            let n = format!("proxy + router over {} servers", self.servers);
            for (name, q) in [
                ("direct to a mock", &p.direct),
                ("proxy, one backend, no router", &p.proxy),
                ("proxy + router over 1 server", &p.router_1),
                (n.as_str(), &p.router_n),
            ] {
                writeln!(
                    f,
                    "| {mode} | {name} | {:.0} us | {:.0} us | {:.0} us | {:+.0} us | {:+.0} us |",
                    q.p50_us,
                    q.p90_us,
                    q.p99_us,
                    q.p50_us - p.direct.p50_us,
                    q.p50_us - p.proxy.p50_us
                )?;
            }
        }
        Ok(())
    }
}

fn start_err(what: &'static str) -> impl Fn(String) -> BenchError {
    move |detail| BenchError::Start { what, detail }
}

/// Runs the benchmark (see the module docs).
pub async fn run(opts: RouterBenchOpts) -> Result<RouterBenchReport, BenchError> {
    let servers = opts.servers.max(1);
    let mut mocks = Vec::with_capacity(servers);
    for _ in 0..servers {
        mocks.push(
            mock_llm::serve(MockConfig {
                default_max_tokens: opts.max_tokens.max(1),
                ..MockConfig::default()
            })
            .await
            .map_err(|e| start_err("mock")(e.to_string()))?,
        );
    }
    let urls: Vec<String> = mocks
        .iter()
        .map(|m| format!("http://{}", m.addr()))
        .collect();
    let admin = fleet_proxy::random_token(16);
    let proxy_config = |more: Vec<String>, router: bool| {
        let mut c = ProxyConfig::new(urls[0].clone());
        c.admin_key = Some(admin.clone());
        c.max_turns_per_session = usize::MAX / 2;
        c.more_backends = more;
        c.router = router;
        c
    };
    let mut proxies = Vec::new();
    for (more, router) in [
        (Vec::new(), false),
        (Vec::new(), true),
        (urls[1..].to_vec(), true),
    ] {
        proxies.push(
            serve(proxy_config(more, router))
                .await
                .map_err(|e| start_err("proxy")(e.to_string()))?,
        );
    }
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(8)
        .build_http();
    let mut keys = Vec::new();
    for p in &proxies {
        let base = format!("http://{}", p.addr());
        let s = post_admin(
            &client,
            format!("{base}/rl/start_session"),
            &admin,
            json!({"grant": true}),
        )
        .await?;
        keys.push(s["api_key"].as_str().unwrap_or_default().to_string());
    }
    let messages = json!([{"role": "system", "content": "You are a careful agent."},
                          {"role": "user", "content": "Read the file and write the tests for it."}]);
    let body = |stream: bool, added: bool| {
        let mut v = json!({"model": "policy", "max_tokens": opts.max_tokens, "stream": stream,
                           "messages": messages});
        if added {
            // What the proxy asks the server for, so that direct and proxied do the same work.
            v["logprobs"] = json!(true);
            v["return_token_ids"] = json!(true);
        }
        Bytes::from(v.to_string())
    };
    let mut modes = Vec::new();
    for stream in [false, true] {
        let mut targets = vec![Target {
            url: format!("{}/v1/chat/completions", urls[0]),
            key: None,
            body: body(stream, true),
        }];
        for (p, k) in proxies.iter().zip(&keys) {
            targets.push(Target {
                url: format!("http://{}/v1/chat/completions", p.addr()),
                key: Some(k.clone()),
                body: body(stream, false),
            });
        }
        for _ in 0..opts.warmup {
            for t in &targets {
                call(&client, t).await?;
            }
        }
        let mut samples: Vec<Vec<Duration>> =
            (0..4).map(|_| Vec::with_capacity(opts.requests)).collect();
        for _ in 0..opts.requests {
            for (i, t) in targets.iter().enumerate() {
                samples[i].push(call(&client, t).await?);
            }
        }
        let mut p = samples.into_iter().map(Percentiles::of);
        let mut next = || {
            p.next()
                .ok_or_else(|| start_err("report")("missing path".into()))
        };
        modes.push(Paths {
            direct: next()?,
            proxy: next()?,
            router_1: next()?,
            router_n: next()?,
        });
    }
    for p in proxies {
        p.shutdown().await;
    }
    for m in mocks {
        m.shutdown().await;
    }
    let streaming = modes
        .pop()
        .ok_or_else(|| start_err("report")("no streaming".into()))?;
    let non_streaming = modes
        .pop()
        .ok_or_else(|| start_err("report")("no non-streaming".into()))?;
    Ok(RouterBenchReport {
        requests: opts.requests,
        max_tokens: opts.max_tokens,
        servers,
        non_streaming,
        streaming,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tiny_run_produces_a_report() {
        let r = run(RouterBenchOpts {
            requests: 5,
            warmup: 1,
            max_tokens: 4,
            servers: 2,
        })
        .await
        .unwrap();
        assert!(r.non_streaming.router_n.p50_us > 0.0);
        assert!(r.streaming.router_1.p50_us > 0.0);
        assert!(r.to_string().contains("router over 2 servers"));
    }
}
