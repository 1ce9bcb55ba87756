//! One episode against a worker's proxy, in three round trips besides the agent's own: start a
//! session (with its capacity grant: the controller is the admission gate), run the agent, set
//! the reward(s) in one call, end the session and export the trajectory in one call.

use super::agent::{Agent, AgentContext, AgentOutcome};
use super::command;
use super::protocol::{EpisodeOutcome, EpisodeRequest, RejectReason};
use fleet_actors::AgentSpec;
use fleet_http::{send_with_retry, Client, HttpRequest, RetryPolicy};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The proxy's admin and session routes, over the pooled client.
#[derive(Clone, Debug)]
pub struct ProxyClient {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin key.
    pub admin_key: String,
    /// The client.
    pub http: Client,
}

/// A failed call to the proxy.
#[derive(Clone, Debug)]
pub struct ProxyError {
    /// The status the proxy answered, if it answered: a 4xx means the proxy is fine and refused
    /// the request (the agent's doing, e.g. a reward for a session with no turns).
    pub status: Option<u16>,
    /// What happened.
    pub message: String,
}

impl ProxyError {
    /// Whether the proxy answered and refused (4xx): not an infrastructure failure.
    pub fn refused(&self) -> bool {
        matches!(self.status, Some(s) if (400..500).contains(&s))
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ProxyClient {
    async fn post(
        &self,
        path: &str,
        key: &str,
        body: Value,
        deadline: Duration,
    ) -> Result<Value, ProxyError> {
        let bytes = self.post_raw(path, key, body, deadline).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ProxyError {
            status: None,
            message: format!("{path}: answer is not JSON: {e}"),
        })
    }

    /// The answer's body as it came (a trajectory is passed on unparsed: the controller parses
    /// it once).
    async fn post_raw(
        &self,
        path: &str,
        key: &str,
        body: Value,
        deadline: Duration,
    ) -> Result<bytes::Bytes, ProxyError> {
        let req = HttpRequest::post(path, body.to_string())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"));
        // Admin and session routes are cheap; a request that may have been applied is not
        // resent (start_session is not idempotent), but refused connections and 503s are.
        let policy = RetryPolicy::non_idempotent()
            .deadline(deadline)
            .max_attempts(3);
        let r = send_with_retry(
            &self.http,
            &self.base,
            &req,
            &policy,
            std::future::pending(),
        )
        .await
        .map_err(|e| ProxyError {
            status: e.last_status,
            message: format!("{path}: {e}"),
        })?;
        Ok(r.body)
    }

    /// Sets the policy version recorded from now on; returns the previous one.
    pub async fn set_version(&self, version: u64) -> Result<u64, ProxyError> {
        let v = self
            .post(
                "/set_version",
                &self.admin_key,
                json!({"version": version}),
                Duration::from_secs(10),
            )
            .await?;
        Ok(v.get("previous").and_then(Value::as_u64).unwrap_or(0))
    }

    /// One admin request to the proxy's router (`/router/...`); its JSON answer.
    pub async fn router_admin(&self, path: &str, body: Value) -> Result<Value, ProxyError> {
        // A drain or pause-all waits up to its own timeout for in-flight requests.
        let wait = body
            .get("timeout_secs")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map_or(Duration::from_secs(30), |t| {
                Duration::from_secs_f64(t.min(3600.0))
            });
        self.post(path, &self.admin_key, body, wait + Duration::from_secs(10))
            .await
    }
}

/// The session an episode holds, so cancellation can end it.
#[derive(Clone, Debug, Default)]
pub struct SessionSlot(pub Arc<std::sync::Mutex<Option<(String, String)>>>);

/// Runs one episode; never panics, every failure is a [`RejectReason`].
pub async fn run(
    proxy: &ProxyClient,
    agent: &AgentSpec,
    rust_agent: Option<Arc<dyn Agent>>,
    req: &EpisodeRequest,
    slot: SessionSlot,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> EpisodeOutcome {
    match run_inner(proxy, agent, rust_agent, req, slot, cancel).await {
        Ok(o) => o,
        Err(r) => EpisodeOutcome::Rejected(r),
    }
}

async fn run_inner(
    proxy: &ProxyClient,
    agent: &AgentSpec,
    rust_agent: Option<Arc<dyn Agent>>,
    req: &EpisodeRequest,
    slot: SessionSlot,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<EpisodeOutcome, RejectReason> {
    let admin = &proxy.admin_key;
    let t = Duration::from_secs(30);
    let task: Value =
        serde_json::from_str(&req.task_json).unwrap_or(Value::String(req.task_json.clone()));
    // The controller is the admission gate: the session starts with its own grant.
    let s = proxy
        .post(
            "/rl/start_session",
            admin,
            json!({"task_id": task.get("id").cloned().unwrap_or(json!(req.episode_id)), "grant": true}),
            t,
        )
        .await
        .map_err(|e| RejectReason::Proxy(e.message))?;
    let (sid, key) = match (
        s.get("session_id").and_then(Value::as_str),
        s.get("api_key").and_then(Value::as_str),
    ) {
        (Some(a), Some(b)) => (a.to_string(), b.to_string()),
        _ => return Err(RejectReason::Proxy(format!("start_session answered {s}"))),
    };
    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((sid.clone(), key.clone()));
    let base_url = format!("{}/v1", proxy.base);
    let deadline = Duration::from_millis(req.deadline_ms.max(1));

    let outcome = match agent {
        AgentSpec::Command { argv, env, cwd } => {
            let inv = command::Invocation {
                argv,
                env,
                cwd: cwd.as_deref(),
                base_url: &base_url,
                api_key: &key,
                task_json: &req.task_json,
            };
            command::run(inv, deadline, cancel).await
        }
        AgentSpec::Registered(name) => match rust_agent {
            None => Err(RejectReason::AgentFailed(format!(
                "no agent registered as {name:?} on this node"
            ))),
            Some(a) => {
                let ctx = AgentContext {
                    base_url: base_url.clone(),
                    api_key: key.clone(),
                    task: task.clone(),
                    http: proxy.http.clone(),
                };
                let cancelled = async {
                    loop {
                        if *cancel.borrow() {
                            return;
                        }
                        if cancel.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                tokio::select! {
                    r = a.run(ctx) => r.map_err(RejectReason::AgentFailed),
                    _ = tokio::time::sleep(deadline) => Err(RejectReason::AgentTimeout(deadline.as_millis() as u64)),
                    _ = cancelled => Err(RejectReason::Cancelled),
                }
            }
        },
    };

    // End and forget the session either way, so the proxy holds nothing for it.
    // End and export in one round trip.
    let finish = || async {
        let export = proxy
            .post_raw(
                "/export_trajectories",
                admin,
                json!({"session_id": sid, "discount": req.discount, "end": true}),
                t,
            )
            .await;
        *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
        export
    };

    let outcome = match outcome {
        Ok(o) => o,
        Err(reason) => {
            let _ = finish().await;
            return Err(reason);
        }
    };
    let reward_result = match &outcome {
        AgentOutcome::Reward(r) => proxy
            .post("/rl/set_reward", &key, json!({"reward": r}), t)
            .await
            .map(|_| ()),
        // Every turn's reward in one round trip.
        AgentOutcome::PerTurn(rs) => proxy
            .post("/rl/set_reward", &key, json!({ "rewards": rs }), t)
            .await
            .map(|_| ()),
    };
    if let Err(e) = reward_result {
        // A refusal (4xx: no turn to reward, a turn index out of range) is the agent's doing;
        // anything else is the proxy's.
        let reason = if e.refused() {
            RejectReason::AgentFailed(format!(
                "setting the reward: {e} (did the agent make any request?)"
            ))
        } else {
            RejectReason::Proxy(format!("setting the reward: {e}"))
        };
        let _ = finish().await;
        return Err(reason);
    }
    let export = finish().await;
    let trajectory = export.map_err(|e| RejectReason::Proxy(e.message))?;
    let trajectory_json = String::from_utf8(trajectory.to_vec())
        .map_err(|_| RejectReason::Proxy("the exported trajectory is not UTF-8".into()))?;
    Ok(EpisodeOutcome::Accepted { trajectory_json })
}

/// Ends a cancelled episode's session (best effort): the proxy then refuses the agent's further
/// requests with 410.
pub async fn end_session(proxy: &ProxyClient, slot: &SessionSlot) {
    let held = slot.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some((sid, _key)) = held {
        let _ = proxy
            .post_raw(
                "/export_trajectories",
                &proxy.admin_key,
                json!({"session_id": sid, "discount": 1.0, "end": true}),
                Duration::from_secs(5),
            )
            .await;
    }
}
