//! The routes: each request becomes one [`WorkerMsg`] to the RpcServer actor, and its reply
//! becomes the answer.
//!
//! Dispatch is by path first (unknown path: 404), then the token (every route but `/health`:
//! 401), then method (wrong one: 405), then body type (none, or one the route does not speak:
//! 415), then the body (too large: 413; too slow: 408; undecodable: 400).
//! Every failure is an answer in the route's own format (the JSON error shape, or a bincode
//! reply holding the typed error) and never ends the server.

use super::body::read_limited;
use super::config::MAX_TIMEOUT_MS;
use super::errors::ApiError;
use super::wire::{
    decode_body, encode_body, BodyCodec, CallBody, ConfigureBody, CreateEngineBody, DestroyBody,
    HealthBody, SetEnvBody, BINCODE_CONTENT_TYPE, JSON_CONTENT_TYPE, REQUEST_ID_HEADER,
    TIMEOUT_HEADER,
};
use super::worker::WorkerHandle;
use bytes::Bytes;
use fleet_actors::engine::Configure;
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlOk, ControlReply, WorkerMsg, WorkerStatus,
};
use fleet_actors::{Codec, FleetError, Payload, RequestId};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// The answer type of every route.
pub(super) type Answer = Response<Full<Bytes>>;

/// What every handler needs: the worker, the limits, and the switch that stops the server
/// after `/destroy` has been answered.
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) worker: WorkerHandle,
    pub(super) max_body_bytes: usize,
    pub(super) body_read_timeout: Duration,
    pub(super) token: String,
    pub(super) call_timeout: Duration,
    pub(super) control_timeout: Duration,
    pub(super) destroy_timeout: Duration,
    pub(super) stop: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Status,
    CreateEngine,
    Call,
    Configure,
    SetEnv,
    Destroy,
    Control,
}

impl Route {
    fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/health" => Route::Health,
            "/status" => Route::Status,
            "/create_engine" => Route::CreateEngine,
            "/call" => Route::Call,
            "/configure" => Route::Configure,
            "/set_env" => Route::SetEnv,
            "/destroy" => Route::Destroy,
            "/control" => Route::Control,
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Route::Health | Route::Status => Method::GET,
            _ => Method::POST,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Health | Route::Status => "GET",
            _ => "POST",
        }
    }

    /// Which body types the route speaks.
    fn speaks(self, codec: BodyCodec) -> bool {
        match (self, codec) {
            (Route::Call, _) => true,
            (Route::Control, c) => c == BodyCodec::Bincode,
            (_, c) => c == BodyCodec::Json,
        }
    }
}

fn respond(status: u16, content_type: &'static str, body: Vec<u8>) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, JSON_CONTENT_TYPE, body),
        Err(e) => json_error(ApiError::from(FleetError::internal(format!(
            "encoding a JSON answer: {e}"
        )))),
    }
}

fn json_error(e: ApiError) -> Answer {
    let mut resp = json(e.status, &e.body());
    if let Some(allow) = e.allow {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn bincode<T: Serialize>(status: u16, value: &T) -> Answer {
    respond(status, BINCODE_CONTENT_TYPE, encode_body(value))
}

/// Entry point for hyper: never fails, every problem is an answer.
pub(super) async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Answer {
    let span = tracing::debug_span!(
        "rpc_http",
        worker = %ctx.worker.worker,
        method = %req.method(),
        path = %req.uri().path(),
    );
    async move {
        let resp = dispatch(&ctx, req).await;
        let status = resp.status().as_u16();
        if status >= 500 {
            tracing::warn!(status, "answered with a server error");
        } else {
            tracing::debug!(status, "answered");
        }
        resp
    }
    .instrument(span)
    .await
}

async fn dispatch(ctx: &Ctx, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let Some(route) = Route::from_path(&path) else {
        return json_error(ApiError::route_not_found(method.as_str(), &path));
    };
    if route != Route::Health {
        // Before anything else, the body included: an unauthenticated client cannot make the
        // server read or run anything.
        let given = super::auth::presented(req.headers());
        if !given.is_some_and(|t| super::auth::token_eq(&ctx.token, t)) {
            let e = ApiError::unauthorized(&path, given.is_some());
            return if is_bincode(req.headers()) {
                bincode(401, &CallReply(Err(e.to_fleet())))
            } else {
                json_error(e)
            };
        }
    }
    if method != route.method() {
        return json_error(ApiError::method_not_allowed(
            method.as_str(),
            &path,
            route.allow(),
        ));
    }
    match route {
        Route::Health => return health(ctx).await,
        Route::Status => {
            return match status(ctx).await {
                Ok(st) => json(200, &st),
                Err(e) => json_error(e.into()),
            }
        }
        _ => {}
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"));
    // A POST says what it sends: no Content-Type is what a browser's no-cors request without a
    // body sends, and it must not stop or drive the worker.
    let codec = match content_type.map_or(Err("<none>".to_string()), |c| {
        BodyCodec::from_content_type(Some(c))
    }) {
        Ok(c) if route.speaks(c) => c,
        Ok(c) => return json_error(wrong_codec(route, &path, c.content_type())),
        Err(found) => {
            return json_error(ApiError::unsupported_media_type(
                &path,
                &found,
                &format!(
                    "send {JSON_CONTENT_TYPE}{}",
                    if route.speaks(BodyCodec::Bincode) {
                        format!(" or {BINCODE_CONTENT_TYPE}")
                    } else {
                        String::new()
                    }
                ),
            ))
        }
    };
    let what = format!("POST {path}");
    let (parts, body) = req.into_parts();
    let body = read_limited(
        &parts.headers,
        body,
        ctx.max_body_bytes,
        ctx.body_read_timeout,
        &what,
    )
    .await;
    match codec {
        BodyCodec::Json => {
            let result = match body {
                Ok(body) => json_route(ctx, route, &parts.headers, &body, &what).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) => resp,
                Err(e) => json_error(e),
            }
        }
        BodyCodec::Bincode => match route {
            Route::Call => {
                let reply = match body {
                    Ok(body) => bincode_call(ctx, &parts.headers, &body).await,
                    Err(e) => Err(e),
                };
                match reply {
                    Ok(reply) => bincode(200, &reply),
                    Err(e) => bincode(e.status, &CallReply(Err(e.to_fleet()))),
                }
            }
            _ => {
                let reply = match body {
                    Ok(body) => bincode_control(ctx, &parts.headers, &body).await,
                    Err(e) => Err(e),
                };
                match reply {
                    Ok(reply) => bincode(200, &reply),
                    Err(e) => bincode(e.status, &ControlReply(Err(e.to_fleet()))),
                }
            }
        },
    }
}

/// Whether the request says it sends bincode (so that a refusal answers in bincode).
fn is_bincode(headers: &HeaderMap) -> bool {
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    matches!(BodyCodec::from_content_type(ct), Ok(BodyCodec::Bincode)) && ct.is_some()
}

fn wrong_codec(route: Route, path: &str, found: &str) -> ApiError {
    let hint = if route == Route::Control {
        format!(
            "it is fleet's binary control path and takes {BINCODE_CONTENT_TYPE}; JSON callers \
             use /create_engine, /configure, /set_env, /health, /status and /destroy"
        )
    } else {
        format!(
            "it takes {JSON_CONTENT_TYPE}; bincode callers send Control messages to POST /control"
        )
    };
    ApiError::unsupported_media_type(path, found, &hint)
}

// ---- JSON routes ----------------------------------------------------------------------------

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| FleetError::bad_request(format!("parsing the JSON body of {what}"), e).into())
}

async fn json_route(
    ctx: &Ctx,
    route: Route,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<Answer, ApiError> {
    let ok = || json(200, &serde_json::json!({ "ok": true }));
    match route {
        Route::CreateEngine => {
            let b: CreateEngineBody = parse_json(body, what)?;
            let control = Control::CreateEngine {
                name: b.engine_name,
                type_name: b.engine,
                args: json_payload(&b.init_args)?,
            };
            control_ok(ctx, control, deadline(ctx, headers)?).await?;
            Ok(ok())
        }
        Route::Call => {
            let b: CallBody = parse_json(body, what)?;
            let request_id = request_id(headers, b.request_id)?;
            let timeout = deadline(ctx, headers)?;
            let mut req = CallRequest {
                deadline_ms: 0,
                idempotent: false,
                engine: b.engine_name,
                method: b.method,
                args: json_payload(&b.args)?,
                rpc_meta: b.rpc_meta,
                request_id,
                retry: None,
            };
            // The worker drops the call unrun if it is still queued when the deadline passes.
            req.set_budget(timeout);
            let label = format!("{}.{}", req.engine, req.method);
            let payload = call(ctx, req, timeout).await?;
            Ok(json_result(&label, payload)?)
        }
        Route::Configure => {
            let b: ConfigureBody = parse_json(body, what)?;
            let cfg = Configure {
                role: b.role.unwrap_or_else(|| ctx.worker.worker.role.clone()),
                rank: b.rank.unwrap_or(ctx.worker.worker.index),
                config: json_payload(&b.config)?,
            };
            control_ok(ctx, Control::Configure(cfg), deadline(ctx, headers)?).await?;
            Ok(ok())
        }
        Route::SetEnv => {
            let b: SetEnvBody = parse_json(body, what)?;
            control_ok(ctx, Control::SetEnv(b.env), ctx.control_timeout).await?;
            Ok(ok())
        }
        Route::Destroy => {
            let b: DestroyBody = if body.iter().all(u8::is_ascii_whitespace) {
                DestroyBody::default()
            } else {
                parse_json(body, what)?
            };
            let timeout_ms = match b.timeout_ms {
                Some(ms) if ms > MAX_TIMEOUT_MS => {
                    return Err(FleetError::bad_request(
                        "`timeout_ms` of POST /destroy",
                        format!("{ms} is more than the largest deadline, {MAX_TIMEOUT_MS} ms"),
                    )
                    .into())
                }
                Some(ms) => ms,
                None => ctx.destroy_timeout.as_millis() as u64,
            };
            let r = destroy(ctx, timeout_ms).await;
            r.map(|()| ok()).map_err(ApiError::from)
        }
        Route::Health | Route::Status | Route::Control => {
            Err(FleetError::internal(format!("{what} reached the JSON body handler")).into())
        }
    }
}

/// JSON arguments as the engine gets them: a JSON-codec payload.
fn json_payload(value: &serde_json::Value) -> Result<Payload, FleetError> {
    Payload::encode(Codec::Json, value)
}

/// `{"result": <the engine's JSON>}`, without re-parsing what the engine wrote (only checking
/// it is JSON, so a buggy engine cannot make the server send a malformed body).
fn json_result(label: &str, payload: Payload) -> Result<Answer, FleetError> {
    if payload.codec != Codec::Json {
        return Err(FleetError::internal(format!(
            "{label} answered a JSON call with a {:?} payload; engines must reply with \
             EngineCall::reply, which uses the request's codec",
            payload.codec
        )));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload.bytes) {
        return Err(FleetError::internal(format!(
            "{label} answered with bytes that are not JSON: {e}"
        )));
    }
    let mut body = Vec::with_capacity(payload.bytes.len() + 11);
    body.extend_from_slice(b"{\"result\":");
    body.extend_from_slice(&payload.bytes);
    body.push(b'}');
    Ok(respond(200, JSON_CONTENT_TYPE, body))
}

async fn health(ctx: &Ctx) -> Answer {
    let r = async {
        control(ctx, Control::Health, ctx.control_timeout).await?;
        let st = status(ctx).await?;
        Ok::<_, FleetError>(HealthBody {
            status: "ok".into(),
            worker: ctx.worker.worker.to_string(),
            engines: st.engines.into_iter().map(|e| e.name).collect(),
        })
    }
    .await;
    match r {
        Ok(h) => json(200, &h),
        Err(e) => json_error(e.into()),
    }
}

async fn status(ctx: &Ctx) -> Result<WorkerStatus, FleetError> {
    match control(ctx, Control::Status, ctx.control_timeout).await? {
        ControlOk::Status(st) => Ok(st),
        other => Err(FleetError::internal(format!(
            "the worker answered Status with {other:?}"
        ))),
    }
}

// ---- bincode routes -------------------------------------------------------------------------

async fn bincode_call(ctx: &Ctx, headers: &HeaderMap, body: &[u8]) -> Result<CallReply, ApiError> {
    let mut req: CallRequest = decode_body(body)?;
    req.request_id = request_id(headers, req.request_id.map(|r| r.0))?;
    // The earlier of the request's own budget and the header's deadline; the worker drops the
    // call unrun if it is still queued when it passes.
    let header = deadline(ctx, headers)?;
    let timeout = req.budget().map_or(header, |b| b.min(header));
    req.set_budget(timeout);
    // Whatever the worker says, typed error included, is the reply (status 200).
    Ok(CallReply(call(ctx, req, timeout).await))
}

async fn bincode_control(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ControlReply, ApiError> {
    let c: Control = decode_body(body)?;
    let r = match c {
        Control::Destroy { timeout_ms } if timeout_ms > MAX_TIMEOUT_MS => {
            Err(FleetError::bad_request(
                "the timeout of Control::Destroy",
                format!("{timeout_ms} ms is more than the largest deadline, {MAX_TIMEOUT_MS} ms"),
            ))
        }
        Control::Destroy { timeout_ms } => destroy(ctx, timeout_ms).await.map(|()| ControlOk::Done),
        c @ (Control::CreateEngine { .. } | Control::Configure(_)) => {
            control(ctx, c, deadline(ctx, headers)?).await
        }
        c @ (Control::Health | Control::Status | Control::SetEnv(_) | Control::Cancel { .. }) => {
            control(ctx, c, ctx.control_timeout).await
        }
        Control::Undecodable(detail) => Err(FleetError::Protocol { detail }),
    };
    Ok(ControlReply(r))
}

// ---- talking to the worker ------------------------------------------------------------------

async fn call(ctx: &Ctx, req: CallRequest, timeout: Duration) -> Result<Payload, FleetError> {
    let what = format!("{}.{}", req.engine, req.method);
    if let Some(id) = &req.request_id {
        tracing::debug!(request_id = %id, call = %what, "engine call");
    }
    ctx.worker
        .ask(&what, timeout, |port| WorkerMsg::Call(req, port))
        .await
        .and_then(|reply: CallReply| reply.0)
}

async fn control(ctx: &Ctx, c: Control, timeout: Duration) -> Result<ControlOk, FleetError> {
    let what = match &c {
        Control::CreateEngine { name, .. } => format!("create_engine {name:?}"),
        Control::Configure(_) => "configure".into(),
        Control::SetEnv(_) => "set_env".into(),
        Control::Health => "health".into(),
        Control::Status => "status".into(),
        Control::Cancel { .. } => "cancel".into(),
        Control::Undecodable(_) => "an undecodable control message".into(),
        Control::Destroy { .. } => "destroy".into(),
    };
    ctx.worker
        .ask(&what, timeout, |port| WorkerMsg::Control(c, port))
        .await
        .and_then(|reply: ControlReply| reply.0)
}

async fn control_ok(ctx: &Ctx, c: Control, timeout: Duration) -> Result<(), FleetError> {
    control(ctx, c, timeout).await.map(|_| ())
}

/// Runs the destroy hooks, then stops the server once this answer is out (hyper finishes the
/// answer in flight on a connection it shuts down gracefully). A worker already destroyed is
/// not an error: destroy is idempotent.
async fn destroy(ctx: &Ctx, timeout_ms: u64) -> Result<(), FleetError> {
    let hooks = Duration::from_millis(timeout_ms);
    let r = control(
        ctx,
        Control::Destroy { timeout_ms },
        hooks.saturating_add(ctx.control_timeout),
    )
    .await;
    tracing::info!(worker = %ctx.worker.worker, outcome = ?r.as_ref().map(|_| ()), "destroyed by request; the server stops");
    ctx.stop.send_replace(true);
    match r {
        Ok(_) => Ok(()),
        Err(e) if e == ctx.worker.gone() => Ok(()),
        Err(e) => Err(e),
    }
}

// ---- headers --------------------------------------------------------------------------------

/// The request id from the body and/or the `X-Request-Id` header; both given must agree.
fn request_id(
    headers: &HeaderMap,
    in_body: Option<String>,
) -> Result<Option<RequestId>, FleetError> {
    let in_header = match headers.get(REQUEST_ID_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    FleetError::bad_request("the X-Request-Id header", "not visible ASCII")
                })?
                .to_string(),
        ),
    };
    let id = match (in_body, in_header) {
        (Some(b), Some(h)) if b != h => {
            return Err(FleetError::bad_request(
                "the request id",
                format!("the body says {b:?} but X-Request-Id says {h:?}; send one"),
            ))
        }
        (Some(id), _) | (None, Some(id)) => Some(id),
        (None, None) => None,
    };
    match id {
        Some(id) if id.trim().is_empty() => Err(FleetError::bad_request(
            "the request id",
            "it is empty; omit it or send a unique id per logical call",
        )),
        Some(id) => Ok(Some(RequestId(id))),
        None => Ok(None),
    }
}

/// The caller's deadline for engine work (`X-Fleet-Timeout-Ms`), or the configured default.
fn deadline(ctx: &Ctx, headers: &HeaderMap) -> Result<Duration, FleetError> {
    match headers.get(TIMEOUT_HEADER) {
        None => Ok(ctx.call_timeout),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| {
                FleetError::bad_request(
                    "the X-Fleet-Timeout-Ms header",
                    format!("it must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS} (30 days)"),
                )
            }),
    }
}
