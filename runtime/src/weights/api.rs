//! The weight APIs of the inference servers fleet drives, behind one enum.
//!
//! | step | SGLang (and `fleet mock-llm`) | vLLM (dev-mode RL routes, disk backend) |
//! | --- | --- | --- |
//! | pause | `POST /pause_generation {"mode": "in_place"}` | `POST /pause?mode=wait` |
//! | load | `POST /update_weights_from_disk {"model_path", "weight_version"}` | `POST /start_weight_update`, `POST /update_weights {"update_info": {"path"}}`, `POST /finish_weight_update {"weight_version"}` |
//! | resume | `POST /continue_generation` | `POST /resume` |
//! | version | `GET /get_weight_version` → `{"weight_version"}` | `GET /weight_info` → `{"weight_version"}` |
//!
//! Every call carries `X-Request-Id` (`fleet-weights-v<N>-<server>-<step>`), so a server (or a
//! log) can tell a repeat from a new call. Loading the same file at the same version twice
//! leaves the server as loading it once did, so a load whose answer was lost is re-sent
//! (idempotent); a pause or resume is idempotent too.

use fleet_actors::{FleetError, HttpCall, HttpResponseData, WorkerId};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// How the coordinator reaches one server: through the scheduler's HTTP launcher (a worker of
/// the cluster) or directly by URL (a server fleet did not start).
pub trait ServerLink: Send + Sync {
    /// Sends one HTTP call to the server.
    fn send(&self, call: HttpCall) -> BoxFuture<'_, Result<HttpResponseData, FleetError>>;
    /// Which process serves now (a worker's child pid), when the link can tell: a change
    /// means the server restarted. `None` by default (a URL says nothing about its process).
    fn instance(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async { None })
    }
}

/// A server that is a worker of the cluster: calls go through its node's HTTP launcher.
pub struct ViaScheduler {
    /// The scheduler.
    pub scheduler: crate::scheduler::Scheduler,
    /// The server's worker.
    pub worker: WorkerId,
}

impl ServerLink for ViaScheduler {
    fn send(&self, call: HttpCall) -> BoxFuture<'_, Result<HttpResponseData, FleetError>> {
        Box::pin(self.scheduler.http(&self.worker, call))
    }
    fn instance(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async {
            let st = self
                .scheduler
                .status(&self.worker, std::time::Duration::from_secs(5))
                .await
                .ok()?;
            st.pid.map(u64::from)
        })
    }
}

/// A server reached directly at a base URL (`http://host:port`).
pub struct Direct {
    /// The pooled client.
    pub client: fleet_http::Client,
    /// The base URL.
    pub base: String,
}

impl ServerLink for Direct {
    fn send(&self, call: HttpCall) -> BoxFuture<'_, Result<HttpResponseData, FleetError>> {
        Box::pin(async move {
            let mut req = fleet_http::HttpRequest::new(call.method.clone(), call.path.clone())
                .body(call.body.clone());
            for (k, v) in &call.headers {
                req = req.header(k.clone(), v.clone());
            }
            if let Some(id) = &call.request_id {
                req = req.request_id(id.to_string());
            }
            let t = Duration::from_millis(call.timeout_ms);
            let policy = if call.idempotent {
                fleet_http::RetryPolicy::idempotent()
            } else {
                fleet_http::RetryPolicy::non_idempotent()
            }
            .deadline(t)
            .per_attempt_timeout(t);
            let r = fleet_http::send_with_retry_raw(
                &self.client,
                &self.base,
                &req,
                &policy,
                std::future::pending(),
            )
            .await
            .map_err(|e| FleetError::Unavailable {
                what: format!("{} {}{}", call.method, self.base, call.path),
                detail: e.to_string(),
            })?;
            Ok(HttpResponseData {
                status: r.status,
                headers: r.headers,
                body: r.body.to_vec(),
                attempts: r.attempts,
            })
        })
    }
}

/// Which weight API a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightApi {
    /// SGLang's HTTP server (and `fleet mock-llm`, which follows it).
    #[default]
    Sglang,
    /// vLLM's dev-mode RL routes with the disk weight-transfer backend
    /// (`VLLM_SERVER_DEV_MODE=1 vllm serve ... --weight-transfer-backend disk`).
    Vllm,
}

impl std::str::FromStr for WeightApi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sglang" | "mock" => Ok(WeightApi::Sglang),
            "vllm" => Ok(WeightApi::Vllm),
            other => Err(format!(
                "unknown weight API {other:?}: use \"sglang\" (also fleet mock-llm) or \"vllm\""
            )),
        }
    }
}

/// Why one step of an update failed on one server.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{step} on {server}: {detail}")]
pub struct StepError {
    /// The server (its worker id or URL).
    pub server: String,
    /// `pause`, `load`, `resume` or `version`.
    pub step: &'static str,
    /// What happened.
    pub detail: String,
}

fn call(path: &str, body: Value, rid: &str, t: Duration) -> HttpCall {
    HttpCall::post_json(path, &body)
        .timeout(t)
        .idempotent(true)
        .request_id(rid)
}

async fn check(
    link: &dyn ServerLink,
    server: &str,
    step: &'static str,
    c: HttpCall,
) -> Result<Value, StepError> {
    let what = format!("{} {}", c.method, c.path);
    let r = link.send(c).await.map_err(|e| StepError {
        server: server.into(),
        step,
        detail: format!("{what}: {e}"),
    })?;
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let refused = r.status >= 300 || body.get("success").and_then(Value::as_bool) == Some(false);
    if refused {
        let text = String::from_utf8_lossy(&r.body);
        let text: String = text.chars().take(300).collect();
        return Err(StepError {
            server: server.into(),
            step,
            detail: format!("{what} answered {}: {text}", r.status),
        });
    }
    Ok(body)
}

impl WeightApi {
    /// Pauses generation; answers once no request is generating (SGLang `in_place` on the mock,
    /// vLLM `mode=wait`).
    pub async fn pause(
        self,
        link: &dyn ServerLink,
        server: &str,
        rid: &str,
        t: Duration,
    ) -> Result<(), StepError> {
        let c = match self {
            WeightApi::Sglang => call("/pause_generation", json!({"mode": "in_place"}), rid, t),
            WeightApi::Vllm => call("/pause?mode=wait", json!({}), rid, t),
        };
        check(link, server, "pause", c).await.map(|_| ())
    }

    /// Resumes generation.
    pub async fn resume(
        self,
        link: &dyn ServerLink,
        server: &str,
        rid: &str,
        t: Duration,
    ) -> Result<(), StepError> {
        let c = match self {
            WeightApi::Sglang => call("/continue_generation", json!({}), rid, t),
            WeightApi::Vllm => call("/resume", json!({}), rid, t),
        };
        check(link, server, "resume", c).await.map(|_| ())
    }

    /// Loads the weights at `path` (a path on the server's own machine) as `version`.
    pub async fn load(
        self,
        link: &dyn ServerLink,
        server: &str,
        path: &Path,
        version: u64,
        rid: &str,
        t: Duration,
    ) -> Result<(), StepError> {
        let p = path.to_string_lossy();
        match self {
            WeightApi::Sglang => {
                let body = json!({"model_path": p, "weight_version": version.to_string(), "abort_all_requests": false});
                check(
                    link,
                    server,
                    "load",
                    call("/update_weights_from_disk", body, rid, t),
                )
                .await
                .map(|_| ())
            }
            WeightApi::Vllm => {
                check(
                    link,
                    server,
                    "load",
                    call(
                        "/start_weight_update",
                        json!({}),
                        &format!("{rid}-start"),
                        t,
                    ),
                )
                .await?;
                check(
                    link,
                    server,
                    "load",
                    call(
                        "/update_weights",
                        json!({"update_info": {"path": p}}),
                        &format!("{rid}-update"),
                        t,
                    ),
                )
                .await?;
                check(
                    link,
                    server,
                    "load",
                    call(
                        "/finish_weight_update",
                        json!({"weight_version": version.to_string()}),
                        &format!("{rid}-finish"),
                        t,
                    ),
                )
                .await
                .map(|_| ())
            }
        }
    }

    /// The version the server says it has loaded (`None` if it reports none or a non-number).
    pub async fn version(
        self,
        link: &dyn ServerLink,
        server: &str,
        t: Duration,
    ) -> Result<Option<u64>, StepError> {
        let path = match self {
            WeightApi::Sglang => "/get_weight_version",
            WeightApi::Vllm => "/weight_info",
        };
        let body = check(
            link,
            server,
            "version",
            HttpCall::get(path).timeout(t).idempotent(true),
        )
        .await?;
        Ok(match body.get("weight_version") {
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        })
    }
}
