//! Forwarding a completion to the backend and recording it as a turn.
//!
//! Non-streaming: the answer is read whole, recorded, stripped of what the proxy added, and
//! sent. Streaming: a task reads the backend's body frame by frame, splits it into events,
//! records each chunk, and hands every event to the client the moment it is complete (nothing
//! is buffered beyond one unfinished event). The turn is recorded before the client sees
//! `data: [DONE]`, so a reward sent right after the stream always finds its turn. If the client
//! goes away, the response body is dropped, the task sees its channel close, and drops the
//! backend's body, which closes that backend connection: the backend cancels the generation.
//!
//! With a router (several backends), the server is picked after the turn is begun and the
//! turn records that server's version; the lease on the server is held until the answer is
//! read whole or the stream ends, so the server's in-flight count is exact for `drain`. A
//! request that failed before anything was sent goes to another server; once sent, never.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::errors::ApiError;
use crate::openai::{self, Accumulator, Additions, Prepared, Stripped};
use crate::router::Lease;
use crate::server::State;
use crate::sessions::{Endpoint, TurnGuard, TurnStatus};
use crate::sse;
use crate::upstream::{error_chain, Upstream};
use fleet_http::body::{json_bytes_response, sse_response, Body};

/// Response header carrying the turn's interaction id (for `/rl/set_reward`).
pub const INTERACTION_HEADER: &str = "x-fleet-interaction-id";

/// Largest non-streamed backend answer read (a bound on memory, far above real answers).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest single SSE event accepted from the backend.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Events buffered between the backend reader and a slow client.
const STREAM_BUFFER: usize = 32;

/// Response header listing the interaction ids of every choice when `n > 1`, comma-separated
/// in choice order (choice 0 first; it is also the `x-fleet-interaction-id`).
pub const INTERACTION_IDS_HEADER: &str = "x-fleet-interaction-ids";

/// Forwards one completion request of `session` and records it.
pub(crate) async fn completion(
    state: &Arc<State>,
    session: &str,
    endpoint: Endpoint,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let mut add = Additions {
        logprobs: true,
        token_ids: state.config.request_token_ids,
        usage: true,
    };
    let mut prepared = openai::prepare(endpoint, &body, add)?;
    let mut turn = state.store.begin_turn(session, prepared.fingerprint)?;
    // With a router: the server, and so the version the turn records, is picked now.
    let mut lease = match &state.router {
        Some(r) => {
            let l = r.pick(session).await?;
            turn.version = l.version;
            Some(l)
        }
        None => None,
    };
    let mut tried: Vec<u64> = Vec::new();
    let mut notes = Vec::new();
    // A backend may refuse a field the proxy added (SGLang: `return_token_ids` on a stream;
    // llama.cpp: logprobs with tools on a stream): send the agent's request again without it,
    // at most once per kind of field, and say so on the turn.
    let resp = loop {
        let resp = match lease.as_mut() {
            None => {
                state
                    .upstream
                    .post_json(endpoint.path(), prepared.body.clone())
                    .await?
            }
            Some(l) => match l.post_json(endpoint.path(), prepared.body.clone()).await {
                Ok(r) => r,
                Err(f) => {
                    // Nothing was sent: another server may take it (each server once).
                    if f.unsent {
                        tried.push(l.id());
                        let other = state
                            .router
                            .as_ref()
                            .and_then(|r| r.pick_other(session, &tried));
                        if let Some(next) = other {
                            tracing::info!(interaction = %turn.id, error = %f.error,
                                "server unreachable before the request was sent; sending it to another");
                            turn.version = next.version;
                            *l = next;
                            continue;
                        }
                    }
                    return Err(f.error);
                }
            },
        };
        if resp.status().is_success() {
            break resp;
        }
        let up = lease.as_ref().map_or(&state.upstream, |l| &l.upstream);
        let err = up.error_from(resp).await;
        let refused = match &err {
            ApiError::BackendRejected { body, .. } => {
                openai::refused_additions(&prepared, &String::from_utf8_lossy(body))
            }
            ApiError::BackendStatus { status, body } if status.is_client_error() => {
                openai::refused_additions(&prepared, body)
            }
            _ => None,
        };
        let Some(refused) = refused else {
            return Err(err);
        };
        let status = err.status().as_u16();
        for (gone, what) in [
            (refused.token_ids, "`return_token_ids`"),
            (refused.logprobs, "`logprobs`"),
            (refused.usage, "`stream_options.include_usage`"),
        ] {
            if gone {
                notes.push(format!(
                    "the backend refused {what} ({status}), which the proxy adds; sent without it"
                ));
            }
        }
        tracing::info!(interaction = %turn.id, error = %err,
            "backend refused a field the proxy added; sending the request without it");
        add.token_ids &= !refused.token_ids;
        add.logprobs &= !refused.logprobs;
        add.usage &= !refused.usage;
        prepared = openai::prepare(endpoint, &body, add)?;
    };
    prepared.notes = notes;
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let interaction = HeaderValue::from_str(&turn.id).ok();
    let all_ids = (prepared.n > 1)
        .then(|| {
            let ids: Vec<String> = (0..prepared.n.min(openai::MAX_CHOICES))
                .map(|i| turn.choice_id(i))
                .collect();
            HeaderValue::from_str(&ids.join(",")).ok()
        })
        .flatten();
    let mut out = if prepared.stream && is_sse {
        stream(state, prepared, turn, resp.into_body(), lease)
    } else {
        let up = lease.as_ref().map_or(&state.upstream, |l| &l.upstream);
        let out = whole(state, up, prepared, turn, resp.into_body()).await?;
        drop(lease);
        out
    };
    if let Some(id) = interaction {
        out.headers_mut().insert(INTERACTION_HEADER, id);
    }
    if let Some(ids) = all_ids {
        out.headers_mut().insert(INTERACTION_IDS_HEADER, ids);
    }
    Ok(out)
}

async fn whole(
    state: &Arc<State>,
    upstream: &Upstream,
    prepared: Prepared,
    turn: TurnGuard,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let bytes = upstream.read_body(body, MAX_ANSWER_BYTES).await?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BackendInvalid(format!(
            "the answer is not JSON ({e}); is --backend an OpenAI-compatible server?"
        ))
    })?;
    let records = Accumulator::from_response(prepared.endpoint, &value)
        .into_records(&prepared, TurnStatus::Complete);
    state.store.finish_turn(turn, records);
    let bytes = if prepared.rewrites() {
        let _ = openai::strip_added(&prepared, &mut value);
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    } else {
        bytes
    };
    Ok(json_bytes_response(StatusCode::OK, bytes))
}

fn stream(
    state: &Arc<State>,
    prepared: Prepared,
    turn: TurnGuard,
    body: Incoming,
    lease: Option<Lease>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let state = Arc::clone(state);
    tokio::spawn(pump(state, prepared, turn, body, tx, lease));
    sse_response(rx)
}

/// How a stream ended, from the proxy's side.
enum Ending {
    /// The backend's body ended.
    Finished,
    /// The client went away.
    ClientGone,
    /// The backend broke, stalled, or sent something that is not SSE.
    Broken(ApiError),
}

async fn pump(
    state: Arc<State>,
    prepared: Prepared,
    turn: TurnGuard,
    mut body: Incoming,
    tx: mpsc::Sender<Bytes>,
    lease: Option<Lease>,
) {
    use http_body_util::BodyExt;
    let endpoint = prepared.endpoint;
    let up = lease.as_ref().map_or(&state.upstream, |l| &l.upstream);
    let idle = up.timeout();
    let mut turn = Some(turn);
    let mut acc = Accumulator::default();
    let mut splitter = sse::Splitter::new(MAX_EVENT_BYTES);
    let ending = 'read: loop {
        let frame = tokio::select! {
            _ = tx.closed() => break 'read Ending::ClientGone,
            f = tokio::time::timeout(idle, body.frame()) => f,
        };
        let data = match frame {
            Err(_) => break Ending::Broken(ApiError::BackendTimeout(idle)),
            Ok(None) => break Ending::Finished,
            Ok(Some(Err(e))) => {
                break Ending::Broken(ApiError::BackendUnreachable {
                    backend: up.root().to_string(),
                    detail: format!("the stream broke: {}", error_chain(&e)),
                })
            }
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        let events = match splitter.push(&data) {
            Ok(ev) => ev,
            Err(e) => {
                break Ending::Broken(ApiError::BackendInvalid(format!(
                    "a stream event exceeded {} bytes",
                    e.limit
                )))
            }
        };
        for ev in events {
            let out = match ev.data.as_deref() {
                Some("[DONE]") => {
                    if let Some(t) = turn.take() {
                        let recs =
                            std::mem::take(&mut acc).into_records(&prepared, TurnStatus::Complete);
                        state.store.finish_turn(t, recs);
                    }
                    ev.raw
                }
                Some(data) => match serde_json::from_str::<Value>(data) {
                    Ok(mut v) => {
                        acc.push_chunk(endpoint, &v);
                        if !prepared.rewrites() {
                            ev.raw
                        } else if let Stripped::Drop = openai::strip_added(&prepared, &mut v) {
                            continue;
                        } else {
                            sse::data_event(&serde_json::to_vec(&v).unwrap_or_default())
                        }
                    }
                    // Not JSON: pass it on untouched, the client may understand it.
                    Err(_) => ev.raw,
                },
                None => ev.raw,
            };
            if tx.send(out).await.is_err() {
                break 'read Ending::ClientGone;
            }
        }
    };
    // Dropping the body here, before anything else, closes the backend connection if the
    // stream was not finished: that is the cancellation. The server's lease ends with it.
    drop(body);
    drop(lease);
    let Some(t) = turn.take() else { return };
    let status = match &ending {
        Ending::Finished if acc.has_output() => TurnStatus::Complete,
        Ending::Finished => TurnStatus::Failed,
        Ending::ClientGone => {
            tracing::info!(interaction = %t.id, "client went away mid-stream; backend request cancelled");
            TurnStatus::Cancelled
        }
        Ending::Broken(e) => {
            tracing::warn!(interaction = %t.id, error = %e, "backend stream failed");
            TurnStatus::Failed
        }
    };
    if acc.has_output() {
        let recs = acc.into_records(&prepared, status);
        state.store.finish_turn(t, recs);
    }
    if let Ending::Broken(e) = ending {
        let payload = serde_json::to_vec(&e.to_json()).unwrap_or_default();
        let _ = tx.send(sse::data_event(&payload)).await;
    }
}
