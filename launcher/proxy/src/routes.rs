//! Routing, authentication per route, and the small admin and session handlers.
//!
//! | route | key | body | answer |
//! | --- | --- | --- | --- |
//! | `GET /health` | none | | 200 (503 if the backend is unreachable) `{status, admin_key_configured, backend, version, sessions, ...}` |
//! | `GET /health/live` | none | | 200 `{status: "ok"}` while the proxy serves (its readiness as a forked worker) |
//! | `GET /metrics` | none | | the process's metrics as Prometheus text (`fleet_proxy_route_seconds` by route and status class, and the rest of the process's); 404 when the embedding program gave none |
//! | `GET /stats` | any | | `{sessions, ..., turns_recorded, turns_incomplete, turns_missing_token_ids, duplicate_turns_replaced}` |
//! | `POST /grant_capacity` | admin | `{n}` (default 1) | `{capacity}` |
//! | `POST /rl/start_session` | admin | `{task_id}` (any JSON, optional), `grant: true` to grant one unit of capacity first | `{session_id, api_key}`; 429 without capacity |
//! | `POST /export_trajectories` | admin | `{session_id, discount = 1.0, timeout_secs?, end?}` (`end: true` ends the session first) | the trajectory (see `export`) |
//! | `POST /set_version` | admin | `{version}` | `{version, previous}` |
//! | `POST /v1/chat/completions`, `POST /v1/completions` | session | OpenAI request | OpenAI answer + `x-fleet-interaction-id` header |
//! | `GET /v1/models` | any | | the backend's answer |
//! | `POST /rl/set_reward` | session | `{interaction_id? or turn?, reward}` (neither: the last turn), or `{rewards: [r0, r1, ...]}` one per turn | `{interaction_id, reward}` or `{interaction_ids, rewards}` |
//! | `POST /rl/end_session` | session | | `{session_id, turns}`; 410 afterwards |
//! | `GET, POST /router/...` | admin | see `crate::router` (`admin`) | with a router only; 404 without |
//!
//! With a router, `/health` reports every server instead of probing one backend (200 unless
//! every server is `failed`), and `/stats` adds the same list under `router`.
//!
//! The key is checked before the body is read, so an unauthenticated client cannot make the
//! proxy buffer anything.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth;
use crate::errors::ApiError;
use crate::forward;
use crate::server::State;
use crate::sessions::Endpoint;
use fleet_http::body::{json_response, read_body, Body, ReadBodyError};

/// Who sent a request.
enum Caller {
    Admin,
    Session(String),
}

/// Answers one request; every failure becomes the one JSON error shape.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = match route(&state, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::warn!(%method, %path, %status, error = %e, "request failed");
            } else {
                tracing::debug!(%method, %path, %status, error = %e, "request refused");
            }
            e.into_response()
        }
    };
    // Time to the response head (a stream's body goes on after this).
    let class = match resp.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::histogram!("fleet_proxy_route_seconds", "route" => route_name(&path), "status" => class)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// A route's name for metrics: the known paths as they are, anything else as `other` (so that
/// arbitrary paths cannot grow the label set).
fn route_name(path: &str) -> &'static str {
    match path.trim_end_matches('/') {
        "" | "/health" => "/health",
        "/health/live" => "/health/live",
        "/metrics" => "/metrics",
        "/stats" => "/stats",
        "/grant_capacity" => "/grant_capacity",
        "/rl/start_session" => "/rl/start_session",
        "/export_trajectories" => "/export_trajectories",
        "/set_version" => "/set_version",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/v1/models" => "/v1/models",
        "/rl/set_reward" => "/rl/set_reward",
        "/rl/end_session" => "/rl/end_session",
        p if p.starts_with("/router/") => "/router/*",
        _ => "other",
    }
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") | (&Method::GET, "") => Ok(health(state).await),
        // Liveness: the proxy itself serves, whatever the backend's state.
        (&Method::GET, "/health/live") => Ok(ok(json!({ "status": "ok" }))),
        (&Method::GET, "/metrics") => match &state.config.metrics {
            Some(render) => {
                let mut r = Response::new(fleet_http::full(render()));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                );
                Ok(r)
            }
            None => Err(ApiError::NoRoute {
                method: "GET".into(),
                path: "/metrics (this proxy was started without a metrics recorder)".into(),
            }),
        },
        (&Method::GET, "/stats") => {
            caller(state, &req)?;
            let mut v = serde_json::to_value(state.store.stats())
                .map_err(|e| ApiError::BadRequest(format!("cannot encode the stats: {e}")))?;
            if let Some(r) = &state.router {
                v["router"] = r.snapshot();
            }
            Ok(ok(v))
        }
        (&Method::POST, "/grant_capacity") => {
            admin(state, &req, "/grant_capacity")?;
            let b: GrantCapacity = json_body(state, req, true).await?;
            let n = b.n.unwrap_or(1);
            if n == 0 || n > state.config.max_sessions as u64 {
                return Err(ApiError::BadRequest(format!(
                    "`n` must be between 1 and max_sessions ({})",
                    state.config.max_sessions
                )));
            }
            let capacity = state.store.grant_capacity(n);
            Ok(ok(json!({ "capacity": capacity })))
        }
        (&Method::POST, "/rl/start_session") => {
            admin(state, &req, "/rl/start_session")?;
            let b: StartSession = json_body(state, req, true).await?;
            if b.grant == Some(true) {
                // The caller (the rollout controller) is the admission gate: grant and start in
                // one round trip.
                state.store.grant_capacity(1);
            }
            let s = state
                .store
                .start_session(b.task_id.unwrap_or(Value::Null))?;
            tracing::info!(session = %s.session_id, "session started");
            Ok(ok(
                json!({ "session_id": s.session_id, "api_key": s.api_key }),
            ))
        }
        (&Method::POST, "/export_trajectories") => {
            admin(state, &req, "/export_trajectories")?;
            let b: Export = json_body(state, req, false).await?;
            let discount = b.discount.unwrap_or(1.0);
            if !(discount.is_finite() && (0.0..=1.0).contains(&discount)) {
                return Err(ApiError::BadRequest(
                    "`discount` must be a number between 0 and 1".into(),
                ));
            }
            if b.end == Some(true) {
                // End and export in one round trip; a session already ended is fine.
                match state.store.end_session(&b.session_id) {
                    Ok(_) | Err(ApiError::SessionEnded(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let max = state.config.export_timeout;
            let wait = match b.timeout_secs {
                Some(t) if !(t.is_finite() && t >= 0.0 && t <= max.as_secs_f64()) => {
                    return Err(ApiError::BadRequest(format!(
                        "`timeout_secs` must be a number from 0 to the export timeout, {} s \
                         (`fleet proxy --export-timeout-secs`); got {t}",
                        max.as_secs_f64()
                    )))
                }
                Some(t) => Duration::try_from_secs_f64(t).unwrap_or(max).min(max),
                None => max,
            };
            let f = state.store.take_finished(&b.session_id, wait).await?;
            if let Some(r) = &state.router {
                r.forget_session(&b.session_id);
            }
            tracing::info!(session = %f.session_id, turns = f.turns.len(), "trajectory exported");
            // Streamed turn by turn: an export never holds more than a chunk beyond its session.
            let mut resp = Response::new(BodyExt::boxed(super::export::streamed(f, discount)));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        (&Method::POST, "/set_version") => {
            admin(state, &req, "/set_version")?;
            let b: SetVersion = json_body(state, req, false).await?;
            // Exports carry versions as signed 64-bit numbers (-1 marks prompt tokens): a
            // larger one would wrap.
            if b.version > i64::MAX as u64 {
                return Err(ApiError::BadRequest(format!(
                    "`version` must be at most {} (it is exported as a signed 64-bit number); got {}",
                    i64::MAX,
                    b.version
                )));
            }
            let previous = state.store.set_version(b.version);
            tracing::info!(version = b.version, previous, "policy version set");
            Ok(ok(json!({ "version": b.version, "previous": previous })))
        }
        (&Method::POST, "/v1/chat/completions") => {
            let session = session(state, &req, "/v1/chat/completions")?;
            let body = raw_body(state, req).await?;
            forward::completion(state, &session, Endpoint::ChatCompletions, body).await
        }
        (&Method::POST, "/v1/completions") => {
            let session = session(state, &req, "/v1/completions")?;
            let body = raw_body(state, req).await?;
            forward::completion(state, &session, Endpoint::Completions, body).await
        }
        (&Method::GET, "/v1/models") => {
            caller(state, &req)?;
            let up = match &state.router {
                Some(r) => r.any_upstream().unwrap_or_else(|| state.upstream.clone()),
                None => state.upstream.clone(),
            };
            let resp = up.get("/v1/models", up.timeout()).await?;
            let status = resp.status();
            let bytes = up.read_body(resp.into_body(), 1 << 20).await?;
            Ok(fleet_http::body::json_bytes_response(status, bytes))
        }
        (&Method::POST, "/rl/set_reward") => {
            let session = session(state, &req, "/rl/set_reward")?;
            let b: SetReward = json_body(state, req, false).await?;
            match (b.reward, b.rewards) {
                (Some(reward), None) => {
                    if !reward.is_finite() {
                        return Err(ApiError::BadRequest(
                            "`reward` must be a finite number".into(),
                        ));
                    }
                    let id = state.store.set_reward(
                        &session,
                        b.interaction_id.as_deref(),
                        b.turn,
                        reward,
                    )?;
                    Ok(ok(json!({ "interaction_id": id, "reward": reward })))
                }
                (None, Some(rewards)) if b.turn.is_none() && b.interaction_id.is_none() => {
                    // One reward per turn, in order, in one round trip.
                    if rewards.is_empty() || rewards.iter().any(|r| !r.is_finite()) {
                        return Err(ApiError::BadRequest(
                            "`rewards` must be a non-empty list of finite numbers".into(),
                        ));
                    }
                    let mut ids = Vec::with_capacity(rewards.len());
                    for (i, r) in rewards.iter().enumerate() {
                        ids.push(state.store.set_reward(&session, None, Some(i), *r)?);
                    }
                    Ok(ok(json!({ "interaction_ids": ids, "rewards": rewards })))
                }
                _ => Err(ApiError::BadRequest(
                    "give `reward` (with `interaction_id` or `turn` optionally), or `rewards` (one per turn, in order) alone".into(),
                )),
            }
        }
        (&Method::POST, "/rl/end_session") => {
            let session = session(state, &req, "/rl/end_session")?;
            let turns = state.store.end_session(&session)?;
            tracing::info!(%session, turns, "session ended");
            Ok(ok(json!({ "session_id": session, "turns": turns })))
        }
        (m, p) if p.starts_with("/router/") => {
            let m = m.clone();
            let Some(router) = state.router.clone() else {
                return Err(ApiError::BadRequest(
                    "this proxy has no router (one --backend); start it with several --backend or with --router".into(),
                ));
            };
            admin(state, &req, "/router/*")?;
            let body = raw_body(state, req).await?;
            let v =
                crate::router::admin_route(&router, &m, &path, &body, state.config.initial_version)
                    .await?;
            Ok(ok(v))
        }
        (m, _) => Err(ApiError::NoRoute {
            method: m.to_string(),
            path,
        }),
    }
}

fn ok(v: Value) -> Response<Body> {
    json_response(StatusCode::OK, &v)
}

async fn health(state: &Arc<State>) -> Response<Body> {
    if let Some(r) = &state.router {
        // Several servers: report their states (no probe; the breakers see failures).
        let stats = state.store.stats();
        let usable = r.any_usable();
        let body = json!({
            "status": if usable { "ok" } else { "no_server_available" },
            "admin_key_configured": state.admin.configured,
            "router": r.snapshot(),
            "version": stats.version,
            "sessions": stats.sessions,
            "active_sessions": stats.active_sessions,
            "capacity": stats.capacity,
            "exports_waiting": stats.exports_waiting,
            "turns_incomplete": stats.turns_incomplete,
            "turns_missing_token_ids": stats.turns_missing_token_ids,
        });
        let status = if usable {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return json_response(status, &body);
    }
    let probe = state.upstream.get("/health", Duration::from_secs(2)).await;
    let backend = match &probe {
        Ok(r) => {
            json!({"url": state.upstream.root(), "reachable": true, "status": r.status().as_u16()})
        }
        Err(e) => json!({"url": state.upstream.root(), "reachable": false, "error": e.to_string()}),
    };
    let stats = state.store.stats();
    let body = json!({
        "status": if probe.is_ok() { "ok" } else { "backend_unreachable" },
        "admin_key_configured": state.admin.configured,
        "backend": backend,
        "version": stats.version,
        "sessions": stats.sessions,
        "active_sessions": stats.active_sessions,
        "capacity": stats.capacity,
        "exports_waiting": stats.exports_waiting,
        // Recording fidelity: turns a trainer cannot fully use (missing ids or logprobs).
        "turns_incomplete": stats.turns_incomplete,
        "turns_missing_token_ids": stats.turns_missing_token_ids,
    });
    let status = if probe.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

fn caller(state: &State, req: &Request<Incoming>) -> Result<Caller, ApiError> {
    let Some(key) = auth::presented_key(req.headers()) else {
        return Err(ApiError::MissingKey);
    };
    // The admin key is never empty (`ProxyConfig::validate` refuses one).
    if !state.admin.key.is_empty() && auth::secret_eq(&state.admin.key, key) {
        return Ok(Caller::Admin);
    }
    state
        .store
        .authenticate(key)
        .map(Caller::Session)
        .ok_or(ApiError::WrongKey)
}

fn admin(state: &State, req: &Request<Incoming>, route: &'static str) -> Result<(), ApiError> {
    match caller(state, req)? {
        Caller::Admin => Ok(()),
        Caller::Session(_) => Err(ApiError::NeedsAdmin { route }),
    }
}

fn session(
    state: &State,
    req: &Request<Incoming>,
    route: &'static str,
) -> Result<String, ApiError> {
    match caller(state, req)? {
        Caller::Session(s) => Ok(s),
        Caller::Admin => Err(ApiError::NeedsSession { route }),
    }
}

async fn raw_body(state: &State, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    read_body(
        req,
        state.config.max_body_bytes,
        state.config.body_read_timeout,
    )
    .await
    .map_err(|e| match e {
        ReadBodyError::TooLarge { limit } => ApiError::BodyTooLarge { limit },
        ReadBodyError::Read(m) => ApiError::BodyIncomplete(m),
        ReadBodyError::Timeout(d) => ApiError::BodyIncomplete(format!("not received within {d:?}")),
    })
}

/// Reads and decodes a JSON body; an empty body is `{}` when `empty_ok`.
async fn json_body<T: for<'de> Deserialize<'de>>(
    state: &State,
    req: Request<Incoming>,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let body = raw_body(state, req).await?;
    let body: &[u8] = if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantCapacity {
    n: Option<u64>,
}

#[derive(Deserialize)]
struct StartSession {
    task_id: Option<Value>,
    /// Grant one unit of capacity first (the caller is the admission gate).
    grant: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    session_id: String,
    discount: Option<f64>,
    timeout_secs: Option<f64>,
    /// End the session first (end and export in one round trip).
    end: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetVersion {
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetReward {
    interaction_id: Option<String>,
    /// The turn's position in the session (0 = first), for agents that report one reward per
    /// turn without tracking interaction ids.
    turn: Option<usize>,
    reward: Option<f64>,
    /// One reward per turn, in order (instead of `reward`).
    rewards: Option<Vec<f64>>,
}
