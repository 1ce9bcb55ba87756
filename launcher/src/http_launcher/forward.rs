//! Forwarding one call to the child over HTTP, in a task: request building per protocol, the
//! retry policy, and the mapping of every outcome to a typed [`FleetError`].

use crate::process::ChildWatch;
use fleet_http::{send_with_retry_raw, Client, HttpError, HttpErrorKind, HttpRequest, RetryPolicy};

/// The header that tells an rpc-server the caller's deadline for engine work (the same name as
/// `fleet_runtime::rpc_http::TIMEOUT_HEADER`; the launcher cannot depend on the runtime).
const TIMEOUT_HEADER: &str = "x-fleet-timeout-ms";
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlReply, FLEET_RPC_CONTENT_TYPE,
};
use fleet_actors::{Codec, FleetError, HttpCall, HttpResponseData, Payload, Retry};
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
    /// The child's token, sent as `Authorization: Bearer` on fleet RPC requests.
    pub(crate) token: Option<String>,
}

/// How long a forward whose connection broke waits to learn whether the child exited (the
/// connection usually drops a moment before the exit is reaped). Only then: an answer, a
/// timeout or a refusal is reported at once.
const EXIT_GRACE: Duration = Duration::from_millis(300);

/// The retry policy of one forward. An idempotent call's attempts are bounded at a third of
/// its deadline, so that an attempt that hangs is really re-sent before the deadline; a call
/// that is not safe to repeat gets one attempt as long as the whole deadline (it is never
/// re-sent once it may have run anyway).
///
/// A caller's [`Retry`] sets the attempts, the backoff and the bound of one attempt; whether an
/// attempt that may have run is sent again stays decided by `idempotent` (and the request id).
fn policy(deadline: Duration, idempotent: bool, retry: Option<&Retry>) -> RetryPolicy {
    let base = if idempotent {
        RetryPolicy::idempotent()
    } else {
        RetryPolicy::non_idempotent()
    };
    let default_attempt = if idempotent {
        (deadline / 3).max(deadline.min(Duration::from_millis(100)))
    } else {
        deadline
    };
    let r = retry.cloned().unwrap_or_default();
    let per_attempt = match r.attempt_timeout_ms {
        0 => default_attempt,
        ms => Duration::from_millis(ms).min(deadline),
    };
    base.deadline(deadline)
        .per_attempt_timeout(per_attempt)
        .max_attempts(r.max_attempts.max(1))
        .backoff(
            Duration::from_millis(r.base_backoff_ms),
            Duration::from_millis(r.max_backoff_ms.max(r.base_backoff_ms)),
        )
}

/// The error for a non-2xx answer that is not a fleet reply (a gateway's HTML page, a plain
/// text error): 503 and 429 mean the service refused it; 500, 502 and 504 that it may have run.
fn status_error(
    status: u16,
    what: String,
    detail: String,
    resend_safe: bool,
) -> Option<FleetError> {
    match status {
        429 | 503 => Some(FleetError::Unavailable { what, detail }),
        500..=599 => Some(FleetError::Indeterminate {
            what,
            detail,
            resend_safe,
        }),
        _ => None,
    }
}

impl Target {
    /// Maps a transport-level failure to the worker protocol's error. `resend_safe` says
    /// whether repeating the call is harmless (idempotent, or deduplicated by request id).
    pub(crate) fn error(&self, e: HttpError, resend_safe: bool) -> FleetError {
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
            }
            .bounded(),
            HttpErrorKind::Deadline { deadline_ms } => FleetError::Timeout {
                what: format!("{} {} on worker {} ({attempts} attempts; {last})", e.method, e.url, self.worker),
                after_ms: deadline_ms,
            },
            HttpErrorKind::AttemptTimeout { timeout_ms } => FleetError::Indeterminate {
                what: format!("{} {} on worker {}", e.method, e.url, self.worker),
                detail: format!(
                    "no answer within {timeout_ms} ms (attempt {attempts}); not re-sent, since the call is not safe to repeat and the service may still be running it"
                ),
                resend_safe,
            },
            HttpErrorKind::Transport => FleetError::Indeterminate {
                what: format!("{} {} on worker {}", e.method, e.url, self.worker),
                detail: format!(
                    "the connection failed after the request was sent ({attempts} attempts; {last}); not re-sent, since the call is not safe to repeat"
                ),
                resend_safe,
            },
            HttpErrorKind::InvalidRequest { reason } => {
                FleetError::bad_request(format!("{} {} for worker {}", e.method, e.url, self.worker), reason)
            }
            HttpErrorKind::ResponseTooLarge { limit } => FleetError::PayloadTooLarge {
                what: format!("the response of {} {} from worker {}", e.method, e.url, self.worker),
                size: limit as u64 + 1,
                limit: limit as u64,
            },
            HttpErrorKind::RetriesExhausted | HttpErrorKind::Status => {
                FleetError::Unavailable {
                    what: format!("worker {} ({} {})", self.worker, e.method, e.url),
                    detail: format!("{attempts} attempts; {last}"),
                }
            }
        }
    }

    /// Adds the child's token to a fleet RPC request.
    fn authorized(&self, req: HttpRequest) -> HttpRequest {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    async fn send(
        &self,
        req: HttpRequest,
        deadline: Duration,
        idempotent: bool,
        retry: Option<&Retry>,
    ) -> Result<fleet_http::HttpResponse, FleetError> {
        let resend_safe = idempotent || req.request_id.is_some();
        match send_with_retry_raw(
            &self.client,
            &self.base_url,
            &req,
            &policy(deadline, idempotent, retry),
            self.child.exit_reason(),
        )
        .await
        {
            Ok(r) => {
                if r.attempts > 1 {
                    metrics::counter!("fleet_http_retries_total")
                        .increment(u64::from(r.attempts - 1));
                }
                Ok(r)
            }
            Err(e) => {
                if e.attempts > 1 {
                    metrics::counter!("fleet_http_retries_total")
                        .increment(u64::from(e.attempts - 1));
                }
                // A connection that broke is usually the child dying: if it exits now, say so.
                // Nothing else waits (an answer, a timeout or a bad request is reported at once).
                let broke = match e.kind {
                    HttpErrorKind::Transport => true,
                    HttpErrorKind::RetriesExhausted | HttpErrorKind::Deadline { .. } => {
                        e.last_status.is_none() && e.last_error.is_some()
                    }
                    _ => false,
                };
                let exited = match self.child.exit_status() {
                    Some(info) => Some(info),
                    None if broke => tokio::time::timeout(EXIT_GRACE, self.child.exited())
                        .await
                        .ok(),
                    None => None,
                };
                if let Some(info) = exited {
                    if !matches!(e.kind, HttpErrorKind::InvalidRequest { .. }) {
                        return Err(self.error(
                            HttpError {
                                kind: HttpErrorKind::Aborted {
                                    reason: info.describe(),
                                },
                                ..e
                            },
                            resend_safe,
                        ));
                    }
                }
                Err(self.error(e, resend_safe))
            }
        }
    }

    /// A plain HTTP request; any status is an answer.
    pub(crate) async fn http(
        &self,
        call: HttpCall,
        deadline: Duration,
    ) -> Result<HttpResponseData, FleetError> {
        let mut req = HttpRequest::new(call.method.clone(), call.path.clone()).body(call.body);
        for (k, v) in call.headers {
            req = req.header(k, v);
        }
        if let Some(id) = &call.request_id {
            req = req.request_id(id.to_string());
        }
        let r = self
            .send(req, deadline, call.idempotent, call.retry.as_ref())
            .await?;
        Ok(HttpResponseData {
            status: r.status,
            headers: r.headers,
            body: r.body.to_vec(),
            attempts: r.attempts,
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

    /// Reads a fleet RPC answer. The rpc-server answers 200 with the reply, and any other
    /// status (413 body too large, 400 undecodable, ...) with the same reply type holding the
    /// typed error: both are decoded, so the typed error survives the hop. A non-2xx answer
    /// that is not a fleet reply (a gateway's page) is `Unavailable` (429, 503) or
    /// `Indeterminate` (other 5xx: it may have run); anything else is a protocol error.
    fn fleet_reply<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        r: &fleet_http::HttpResponse,
        resend_safe: bool,
    ) -> Result<T, FleetError> {
        match fleet_actors::wire::decode::<T>(&r.body) {
            Ok(v) => Ok(v),
            Err(e) if r.status == 200 => Err(self.protocol_error(path, r.status, e.as_bytes())),
            Err(_) => {
                let excerpt: String = String::from_utf8_lossy(&r.body).chars().take(300).collect();
                let what = format!("POST {path} on worker {}", self.worker);
                let detail = format!(
                    "it answered {} and a body that is not fleet RPC: {excerpt}",
                    r.status
                );
                Err(status_error(r.status, what, detail, resend_safe)
                    .unwrap_or_else(|| self.protocol_error(path, r.status, &r.body)))
            }
        }
    }

    /// An engine call over fleet's binary RPC. A request id makes a resend safe (the server
    /// answers a repeat from its record), so calls that carry one are retried like idempotent
    /// ones.
    pub(crate) async fn fleet_call(
        &self,
        mut req: CallRequest,
        deadline: Duration,
    ) -> Result<Payload, FleetError> {
        let safe = req.idempotent || req.request_id.is_some();
        // The server drops the call unrun if it is still queued when the budget runs out.
        req.set_budget(deadline);
        let mut http = HttpRequest::post("/call", fleet_actors::wire::encode(&req))
            .header("content-type", FLEET_RPC_CONTENT_TYPE)
            .header(TIMEOUT_HEADER, deadline.as_millis().to_string());
        if let Some(id) = &req.request_id {
            http = http.request_id(id.to_string());
        }
        let http = self.authorized(http);
        let r = self.send(http, deadline, safe, req.retry.as_ref()).await?;
        self.fleet_reply::<CallReply>("/call", &r, safe)?.0
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
        let http = self.authorized(http.header(TIMEOUT_HEADER, deadline.as_millis().to_string()));
        let r = self.send(http, deadline, idempotent, None).await?;
        self.fleet_reply::<ControlReply>("/control", &r, idempotent)?
            .0
    }

    /// An engine call over AReaL-style JSON `POST /call`.
    pub(crate) async fn json_call(
        &self,
        req: CallRequest,
        deadline: Duration,
    ) -> Result<Payload, FleetError> {
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
        let mut http =
            HttpRequest::post("/call", body.to_string()).header("content-type", "application/json");
        if let Some(id) = &req.request_id {
            http = http.request_id(id.to_string());
        }
        // A JSON service is not known to deduplicate: only an idempotent call is safe to repeat.
        let r = self
            .send(http, deadline, req.idempotent, req.retry.as_ref())
            .await?;
        let what = || format!("{}.{} on worker {}", req.engine, req.method, self.worker);
        if matches!(r.status, 429 | 502 | 503 | 504) {
            let excerpt: String = String::from_utf8_lossy(&r.body).chars().take(300).collect();
            let detail = format!("it answered {}: {excerpt}", r.status);
            if let Some(e) = status_error(r.status, what(), detail, req.idempotent) {
                return Err(e);
            }
        }
        let v: serde_json::Value = match serde_json::from_slice(&r.body) {
            Ok(v) => v,
            Err(_) => {
                let excerpt: String = String::from_utf8_lossy(&r.body).chars().take(300).collect();
                let detail = format!(
                    "it answered {} and a body that is not JSON: {excerpt}",
                    r.status
                );
                return Err(status_error(r.status, what(), detail, req.idempotent)
                    .unwrap_or_else(|| self.protocol_error("/call", r.status, &r.body)));
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_retry_policy_sets_attempts_backoff_and_the_attempt_bound_within_the_deadline() {
        let d = Duration::from_secs(9);
        let default = policy(d, true, None);
        assert_eq!(default.max_attempts, 5);
        assert_eq!(default.per_attempt_timeout, Duration::from_secs(3));
        assert_eq!(policy(d, false, None).per_attempt_timeout, d);
        let r = Retry::default()
            .attempts(2)
            .backoff(Duration::from_millis(10), Duration::from_millis(40))
            .attempt_timeout(Duration::from_secs(60));
        let p = policy(d, false, Some(&r));
        assert_eq!(p.max_attempts, 2);
        assert_eq!(
            (p.base_backoff, p.max_backoff),
            (Duration::from_millis(10), Duration::from_millis(40))
        );
        // Bounded by the deadline; and the call stays non-idempotent.
        assert_eq!(p.per_attempt_timeout, d);
        assert!(!p.idempotent);
        assert_eq!(policy(d, true, Some(&Retry::never())).max_attempts, 1);
    }
}
