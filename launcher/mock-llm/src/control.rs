//! The mock's weight-update and pause routes, shaped like SGLang's and vLLM's.
//!
//! Followed (SGLang `python/sglang/srt/entrypoints/http_server.py` and the request types in
//! `managers/io_struct.py`; vLLM's RLHF router with `/pause`, `/resume`, `/is_paused`):
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `POST /update_weights_from_disk` | `{model_path, weight_version?, load_format?, abort_all_requests?}` | `{success, message, num_paused_requests}`; 400 with `success: false` |
//! | `GET /get_weight_version` | | `{weight_version: "N"}` |
//! | `POST /pause_generation` | `{mode: "abort" \| "in_place" \| "retract", timeout_secs?}` | `{message, status: "ok", mode, was_generating}` once nothing generates |
//! | `POST /continue_generation` | | `{message, status: "ok"}` |
//! | `POST /pause?mode=abort\|wait\|keep` (vLLM) | | `{status: "paused"}` once nothing generates |
//! | `POST /resume` (vLLM) | | `{status: "resumed"}` |
//! | `GET /is_paused` (vLLM) | | `{is_paused}` |
//!
//! Where the mock differs:
//!
//! - The version must be a non-negative integer (SGLang's `weight_version` is any string):
//!   fleet's proxy and router order versions numerically. Without `weight_version`, the mock
//!   reads it from a file name ending in `-v<N>` (before any extension); SGLang keeps its old
//!   version instead. A file that cannot be read is a 400 naming the path, like SGLang's
//!   failed load (which keeps the old weights, as the mock does).
//! - `load_format` is accepted and ignored; the file is hashed, not parsed.
//! - `in_place` and `retract`: real SGLang keeps in-flight requests in place (or retracts them
//!   to the queue) and resumes them after `continue_generation` *with the new weights*, so one
//!   response can mix tokens of two versions. The mock lets them finish with the weights they
//!   started with before the pause answers: every response then has one version, which is what
//!   lets a test prove that a turn's recorded version is the version that generated it. vLLM's
//!   `keep` (freeze in the queue) is treated the same way; `wait` is the same by definition.
//! - `abort` ends in-flight requests at once with `finish_reason: "abort"` (SGLang and vLLM
//!   do too); the mock's `num_paused_requests` is always 0.
//! - While paused, new generation requests are held (not refused) until continue, each for at
//!   most `--hold-timeout-secs`, then 503. `/health` stays 200 while paused.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::gate::Gate;
use crate::weights::{self, WeightsError};
use fleet_http::body::{json_response, read_body, Body};

/// Longest a pause waits for in-flight requests when the request names no `timeout_secs`.
const PAUSE_WAIT: Duration = Duration::from_secs(300);
/// Largest body of a control request.
const MAX_CONTROL_BODY: usize = 64 * 1024;

/// How a pause treats the requests that are generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Abort,
    Finish,
}

async fn body_json(req: Request<Incoming>) -> Result<Value, String> {
    let bytes = read_body(req, MAX_CONTROL_BODY, Duration::from_secs(30))
        .await
        .map_err(|e| format!("cannot read the body: {e:?}"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("the body must be a JSON object".into());
    }
    Ok(v)
}

fn load_failed(message: impl std::fmt::Display) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"success": false, "message": message.to_string(), "num_paused_requests": 0}),
    )
}

/// `POST /update_weights_from_disk`.
pub(crate) async fn update_weights_from_disk(
    gate: Arc<Gate>,
    req: Request<Incoming>,
) -> Response<Body> {
    let v = match body_json(req).await {
        Ok(v) => v,
        Err(m) => return load_failed(m),
    };
    let Some(path) = v.get("model_path").and_then(Value::as_str) else {
        return load_failed("`model_path` (a string) is required");
    };
    let version = match v.get("weight_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match weights::parse_version(s) {
            Ok(n) => Some(n),
            Err(e) => return load_failed(e),
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => Some(n),
            None => return load_failed(WeightsError::BadVersion(n.to_string())),
        },
        Some(other) => return load_failed(WeightsError::BadVersion(other.to_string())),
    };
    let aborted = if v.get("abort_all_requests").and_then(Value::as_bool) == Some(true) {
        gate.abort_all()
    } else {
        0
    };
    let _loading = gate.loading.lock().await;
    let p = PathBuf::from(path);
    // Hashing a large file is blocking I/O: off the async threads.
    let loaded = tokio::task::spawn_blocking(move || weights::load(&p, version)).await;
    let w = match loaded {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return load_failed(e),
        Err(e) => return load_failed(format!("loading {path} failed: {e}")),
    };
    let fingerprint = w.fingerprint();
    let version = w.version;
    gate.set_weights(w);
    tracing::info!(path, version, %fingerprint, aborted, "weights loaded");
    json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": format!("Succeeded to update model weights from {path} (version {version}, {fingerprint})."),
            "num_paused_requests": 0,
            "weight_version": version.to_string(),
            "system_fingerprint": fingerprint,
        }),
    )
}

/// `GET /get_weight_version`.
pub(crate) fn get_weight_version(gate: &Gate) -> Response<Body> {
    let w = gate.weights();
    json_response(
        StatusCode::OK,
        &json!({"weight_version": w.version.to_string(), "system_fingerprint": w.fingerprint()}),
    )
}

/// Pauses, then answers once nothing generates (or at the timeout, 504 with the count).
async fn pause(gate: &Gate, mode: Mode, timeout: Duration, ok: Value) -> Response<Body> {
    let was_generating = gate.pause(mode == Mode::Abort);
    match gate.wait_idle(timeout).await {
        Ok(()) => {
            let mut ok = ok;
            ok["was_generating"] = json!(was_generating);
            json_response(StatusCode::OK, &ok)
        }
        Err(n) => json_response(
            StatusCode::GATEWAY_TIMEOUT,
            &json!({"error": {"type": "timeout", "message": format!(
                "paused, but {n} requests are still generating after {timeout:?}; \
                 pause again to keep waiting, or pause with mode \"abort\""
            )}, "in_flight": n}),
        ),
    }
}

/// `POST /pause_generation` (SGLang).
pub(crate) async fn pause_generation(gate: Arc<Gate>, req: Request<Incoming>) -> Response<Body> {
    let bad = |m: String| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"type": "invalid_request_error", "message": m}}),
        )
    };
    let v = match body_json(req).await {
        Ok(v) => v,
        Err(m) => return bad(m),
    };
    let mode_name = v.get("mode").and_then(Value::as_str).unwrap_or("abort");
    let mode = match mode_name {
        "abort" => Mode::Abort,
        "in_place" | "retract" => Mode::Finish,
        other => {
            return bad(format!(
                "unknown mode {other:?}: use \"abort\", \"in_place\" or \"retract\""
            ))
        }
    };
    let timeout = match v.get("timeout_secs").and_then(Value::as_f64) {
        Some(t) if t.is_finite() && t >= 0.0 => Duration::from_secs_f64(t),
        Some(_) => return bad("`timeout_secs` must be a non-negative number".into()),
        None => PAUSE_WAIT,
    };
    pause(
        &gate,
        mode,
        timeout,
        json!({"message": "Generation paused successfully.", "status": "ok", "mode": mode_name}),
    )
    .await
}

/// `POST /continue_generation` (SGLang).
pub(crate) fn continue_generation(gate: &Gate) -> Response<Body> {
    let was = gate.resume();
    json_response(
        StatusCode::OK,
        &json!({"message": "Generation continued successfully.", "status": "ok", "was_paused": was}),
    )
}

/// `POST /pause?mode=...` (vLLM): `abort` (default), `wait`, `keep`.
pub(crate) async fn vllm_pause(gate: Arc<Gate>, query: Option<&str>) -> Response<Body> {
    let mode = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("mode="))
        .unwrap_or("abort");
    let mode = match mode {
        "abort" => Mode::Abort,
        "wait" | "keep" => Mode::Finish,
        other => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("unknown mode {other:?}: use abort, wait or keep")}),
            )
        }
    };
    pause(&gate, mode, PAUSE_WAIT, json!({"status": "paused"})).await
}

/// `POST /resume` (vLLM).
pub(crate) fn vllm_resume(gate: &Gate) -> Response<Body> {
    gate.resume();
    json_response(StatusCode::OK, &json!({"status": "resumed"}))
}

/// `GET /is_paused` (vLLM).
pub(crate) fn vllm_is_paused(gate: &Gate) -> Response<Body> {
    json_response(StatusCode::OK, &json!({"is_paused": gate.state().paused}))
}
