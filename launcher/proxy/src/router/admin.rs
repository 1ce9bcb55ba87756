//! The router's admin routes (admin key, JSON), served by the proxy under `/router/`.
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `GET /router/servers` | | `{servers: [{url, state, version, in_flight, breaker, requests, failures}], min_version}` |
//! | `POST /router/servers` | `{servers: [{url, version?}]}` | the new set (new servers `serving`; removed ones leave the pick set, their in-flight requests finish) |
//! | `POST /router/drain` | `{url, timeout_secs? = 30}` | `{url, drained, in_flight}` once its in-flight count is 0, or at the timeout |
//! | `POST /router/pause_all` | `{timeout_secs? = 30}` | `{paused: true, drained, in_flight, servers}` once nothing is in flight, or at the timeout |
//! | `POST /router/restore` | `{url, version}` | the server, `serving` at that version, breaker reset |
//! | `POST /router/resume_all` | `{version?}` | the set; every paused server `serving` (at that version) |
//! | `POST /router/fail` | `{url, reason?}` | the server, `failed` (no traffic until restored) |
//! | `POST /router/min_version` | `{version}` | `{min_version, previous}` |
//! | `POST /router/strict` | `{enabled}` | `{strict, previous}`: a server that gives no answer is `failed` until restored |
//! | `POST /router/snapshot` | `{}` | the same as `GET /router/servers` (for callers that only POST) |
//!
//! Waits never hang: each has its timeout, and answers with the counts at the end.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::pool::{Router, ServerState};
use crate::ApiError;

/// Default wait of `drain` and `pause_all`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn wait_of(t: Option<f64>) -> Result<Duration, ApiError> {
    match t {
        None => Ok(DEFAULT_WAIT),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Duration::try_from_secs_f64(t)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(3600))),
        Some(_) => Err(ApiError::BadRequest(
            "`timeout_secs` must be a non-negative number".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    url: String,
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetServers {
    servers: Vec<ServerSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drain {
    url: String,
    timeout_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseAll {
    timeout_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Restore {
    url: String,
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeAll {
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    url: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinVersion {
    version: u64,
}

/// `POST /router/strict` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    enabled: bool,
}

/// Answers one `/router/...` route; `default_version` is the version of servers added
/// without one.
pub(crate) async fn route(
    router: &Arc<Router>,
    method: &Method,
    path: &str,
    body: &[u8],
    default_version: u64,
) -> Result<Value, ApiError> {
    match (method, path) {
        (&Method::GET, "/router/servers") | (&Method::POST, "/router/snapshot") => {
            Ok(router.snapshot())
        }
        (&Method::POST, "/router/servers") => {
            let b: SetServers = decode(body)?;
            if b.servers.is_empty() {
                return Err(ApiError::BadRequest(
                    "`servers` must list at least one server; to stop traffic use /router/pause_all"
                        .into(),
                ));
            }
            let list: Vec<(String, Option<u64>)> =
                b.servers.into_iter().map(|s| (s.url, s.version)).collect();
            router.replace(&list, default_version)
        }
        (&Method::POST, "/router/drain") => {
            let b: Drain = decode(body)?;
            let wait = wait_of(b.timeout_secs)?;
            let root = router.root_of(&b.url)?;
            router.set(&b.url, ServerState::Draining, None, None)?;
            let left = router
                .wait_zero(wait, |views| {
                    views
                        .iter()
                        .find(|v| v.url == root)
                        .map_or(0, |v| v.in_flight)
                })
                .await;
            Ok(json!({"url": root, "drained": left == 0, "in_flight": left}))
        }
        (&Method::POST, "/router/pause_all") => {
            let b: PauseAll = decode(body)?;
            let wait = wait_of(b.timeout_secs)?;
            router.pause_all_now();
            let left = router
                .wait_zero(wait, |views| views.iter().map(|v| v.in_flight).sum())
                .await;
            Ok(json!({
                "paused": true,
                "drained": left == 0,
                "in_flight": left,
                "servers": router.snapshot()["servers"],
            }))
        }
        (&Method::POST, "/router/restore") => {
            let b: Restore = decode(body)?;
            router.set(&b.url, ServerState::Serving, Some(b.version), None)
        }
        (&Method::POST, "/router/resume_all") => {
            let b: ResumeAll = decode(body)?;
            Ok(router.resume_all(b.version))
        }
        (&Method::POST, "/router/fail") => {
            let b: Fail = decode(body)?;
            let reason = b.reason.unwrap_or_else(|| "marked failed".into());
            router.set(&b.url, ServerState::Failed, None, Some(reason))
        }
        (&Method::POST, "/router/strict") => {
            let b: Strict = decode(body)?;
            let previous = router.set_strict(b.enabled);
            Ok(json!({"strict": b.enabled, "previous": previous}))
        }
        (&Method::POST, "/router/min_version") => {
            let b: MinVersion = decode(body)?;
            let previous = router.set_min_version(b.version);
            Ok(json!({"min_version": b.version, "previous": previous}))
        }
        (m, p) => Err(ApiError::NoRoute {
            method: m.to_string(),
            path: p.to_string(),
        }),
    }
}
