//! Forwarding one call to the child over HTTP, in a task: request building per protocol, the
//! retry policy, and the mapping of every outcome to a typed [`FleetError`].

use crate::http::{
    send_with_retry_raw, Client, HttpError, HttpErrorKind, HttpRequest, RetryPolicy,
};
use crate::process::ChildWatch;
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlReply, FLEET_RPC_CONTENT_TYPE,
};
use fleet_actors::{Codec, FleetError, HttpCall, HttpResponseData, Payload};
use std::time::Duration;

/// What every forward needs to know about its worker.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) worker: String,
    pub(crate) node: String,
    pub(crate) client: Client,
    pub(crate) base_url: String,
    pub(crate) child: ChildWatch,
    /// Set when the worker is being destroyed, so calls cut short say so.
    pub(crate) stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a failed forward waits to learn whether the child exited (the connection usually
/// drops a moment before the exit is reaped).
const EXIT_GRACE: Duration = Duration::from_millis(300);

fn policy(deadline: Duration, idempotent: bool) -> RetryPolicy {
    let base = if idempotent {
        RetryPolicy::idempotent()
    } else {
        RetryPolicy::non_idempotent()
    };
    base.deadline(deadline)
        .per_attempt_timeout(deadline)
        .backoff(Duration::from_millis(50), Duration::from_secs(2))
}

impl Target {
    /// Maps a transport-level failure to the worker protocol's error.
    pub(crate) fn error(&self, e: HttpError) -> FleetError {
        let attempts = e.attempts;
        let last = match (e.last_status, &e.last_body, &e.last_error) {
            (Some(s), Some(b), _) => format!("last answer {s}: {b}"),
            (Some(s), None, _) => format!("last answer {s}"),
            (None, _, Some(err)) => format!("last error: {err}"),
            _ => String::new(),
        };
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return FleetError::Unavailable {
                what: format!("worker {}", self.worker),
                detail: format!(
                    "it was destroyed while {} {} was in flight",
                    e.method, e.url
                ),
            };
        }
        match e.kind {
            HttpErrorKind::Aborted { reason } => FleetError::WorkerFailed {
                worker: self.worker.clone(),
                node: self.node.clone(),
                reason: format!("its process exited during the call ({reason})"),
                tail: self.child.tail().into_iter().rev().take(20).rev().collect(),
            },
            HttpErrorKind::Deadline { deadline_ms } => FleetError::Timeout {
                what: format!("{} {} on worker {} ({attempts} attempts; {last})", e.method, e.url, self.worker),
                after_ms: deadline_ms,
            },
            HttpErrorKind::AttemptTimeout { timeout_ms } => FleetError::Timeout {
                what: format!(
                    "{} {} on worker {} (not resent: the call is not idempotent and the service may still be running it)",
                    e.method, e.url, self.worker
                ),
                after_ms: timeout_ms,
            },
            HttpErrorKind::InvalidRequest { reason } => {
                FleetError::bad_request(format!("{} {} for worker {}", e.method, e.url, self.worker), reason)
            }
            HttpErrorKind::ResponseTooLarge { limit } => FleetError::PayloadTooLarge {
                what: format!("the response of {} {} from worker {}", e.method, e.url, self.worker),
                size: limit as u64 + 1,
                limit: limit as u64,
            },
            HttpErrorKind::RetriesExhausted | HttpErrorKind::Transport | HttpErrorKind::Status => {
                FleetError::Unavailable {
                    what: format!("worker {} ({} {})", self.worker, e.method, e.url),
                    detail: format!("{attempts} attempts; {last}"),
                }
            }
        }
    }

    async fn send(
        &self,
        req: HttpRequest,
        deadline: Duration,
        idempotent: bool,
    ) -> Result<crate::http::HttpResponse, FleetError> {
        match send_with_retry_raw(
            &self.client,
            &self.base_url,
            &req,
            &policy(deadline, idempotent),
            self.child.exit_reason(),
        )
        .await
        {
            Ok(r) => Ok(r),
            Err(e) => {
                // A dropped connection is usually the child dying: if it exits now, say so.
                if !matches!(
                    e.kind,
                    HttpErrorKind::Aborted { .. } | HttpErrorKind::InvalidRequest { .. }
                ) {
                    if let Ok(info) = tokio::time::timeout(EXIT_GRACE, self.child.exited()).await {
                        return Err(self.error(HttpError {
                            kind: HttpErrorKind::Aborted {
                                reason: info.describe(),
                            },
                            ..e
                        }));
                    }
                }
                Err(self.error(e))
            }
        }
    }

    /// A plain HTTP request; any status is an answer.
    pub(crate) async fn http(&self, call: HttpCall) -> Result<HttpResponseData, FleetError> {
        let mut req = HttpRequest::new(call.method.clone(), call.path.clone()).body(call.body);
        for (k, v) in call.headers {
            req = req.header(k, v);
        }
        if let Some(id) = &call.request_id {
            req = req.request_id(id.to_string());
        }
        let deadline = Duration::from_millis(call.timeout_ms.max(1));
        let r = self.send(req, deadline, call.idempotent).await?;
        Ok(HttpResponseData {
            status: r.status,
            headers: r.headers,
            body: r.body.to_vec(),
        })
    }

    fn protocol_error(&self, path: &str, status: u16, body: &[u8]) -> FleetError {
        let excerpt: String = String::from_utf8_lossy(body).chars().take(300).collect();
        FleetError::Protocol {
            detail: format!(
                "worker {} answered POST {path} with {status} and a body that is not fleet RPC: {excerpt}",
                self.worker
            ),
        }
    }

    /// An engine call over fleet's binary RPC. A request id makes a resend safe (the server
    /// answers a repeat from its record), so calls that carry one are retried like idempotent
    /// ones.
    pub(crate) async fn fleet_call(&self, req: CallRequest) -> Result<Payload, FleetError> {
        let deadline = Duration::from_millis(if req.deadline_ms == 0 {
            60_000
        } else {
            req.deadline_ms
        });
        let safe = req.idempotent || req.request_id.is_some();
        let mut http = HttpRequest::post("/call", fleet_actors::wire::encode(&req))
            .header("content-type", FLEET_RPC_CONTENT_TYPE);
        if let Some(id) = &req.request_id {
            http = http.request_id(id.to_string());
        }
        let r = self.send(http, deadline, safe).await?;
        if r.status != 200 {
            return Err(self.protocol_error("/call", r.status, &r.body));
        }
        fleet_actors::wire::decode::<CallReply>(&r.body)
            .map_err(|e| self.protocol_error("/call", r.status, e.as_bytes()))?
            .0
    }

    /// A control request over fleet's binary RPC.
    pub(crate) async fn fleet_control(
        &self,
        control: Control,
        deadline: Duration,
    ) -> Result<fleet_actors::rpc_server::ControlOk, FleetError> {
        let http = HttpRequest::post("/control", fleet_actors::wire::encode(&control))
            .header("content-type", FLEET_RPC_CONTENT_TYPE);
        let idempotent = !matches!(control, Control::CreateEngine { .. });
        let r = self.send(http, deadline, idempotent).await?;
        if r.status != 200 {
            return Err(self.protocol_error("/control", r.status, &r.body));
        }
        fleet_actors::wire::decode::<ControlReply>(&r.body)
            .map_err(|e| self.protocol_error("/control", r.status, e.as_bytes()))?
            .0
    }

    /// An engine call over AReaL-style JSON `POST /call`.
    pub(crate) async fn json_call(&self, req: CallRequest) -> Result<Payload, FleetError> {
        if req.args.codec != Codec::Json {
            return Err(FleetError::bad_request(
                format!("{}.{} on worker {}", req.engine, req.method, self.worker),
                "this service speaks JSON: encode the arguments with Payload::encode(Codec::Json, ..)",
            ));
        }
        let args: serde_json::Value = serde_json::from_slice(&req.args.bytes)
            .map_err(|e| FleetError::bad_request("JSON arguments", e))?;
        let body = serde_json::json!({
            "engine_name": req.engine,
            "method": req.method,
            "args": args,
            "rpc_meta": req.rpc_meta,
            "request_id": req.request_id.as_ref().map(|r| r.to_string()),
        });
        let deadline = Duration::from_millis(if req.deadline_ms == 0 {
            60_000
        } else {
            req.deadline_ms
        });
        let mut http =
            HttpRequest::post("/call", body.to_string()).header("content-type", "application/json");
        if let Some(id) = &req.request_id {
            http = http.request_id(id.to_string());
        }
        let r = self.send(http, deadline, req.idempotent).await?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|_| self.protocol_error("/call", r.status, &r.body))?;
        if (200..300).contains(&r.status) {
            let result = v.get("result").cloned().unwrap_or(serde_json::Value::Null);
            return Ok(Payload::json_bytes(result.to_string().into_bytes()));
        }
        let message = v
            .pointer("/error/message")
            .or_else(|| v.get("error"))
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| m.to_string())
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
        Err(match r.status {
            404 => FleetError::EngineNotFound {
                worker: self.worker.clone(),
                engine: req.engine,
                known: format!("unknown ({message})"),
            },
            400 | 422 => FleetError::bad_request(
                format!("{}.{} on worker {}", req.engine, req.method, self.worker),
                message,
            ),
            _ => FleetError::EngineFailed {
                worker: self.worker.clone(),
                engine: req.engine,
                method: req.method,
                message: format!("status {}: {message}", r.status),
            },
        })
    }
}
