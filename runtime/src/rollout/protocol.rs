//! The calls between the rollout controller and its workers. They travel as ordinary engine
//! calls (engine [`ENGINE`]) over the worker protocol, so they work across nodes unchanged.
//! JSON values travel as strings: bincode cannot carry `serde_json::Value`.

use fleet_actors::WorkerId;
use serde::{Deserialize, Serialize};

/// The engine name a rollout worker answers to.
pub const ENGINE: &str = "rollout";
/// Run one episode: [`EpisodeRequest`] → [`EpisodeResult`].
pub const RUN_EPISODE: &str = "run_episode";
/// Cancel a running episode: `u64` episode id → `bool` (whether it was running).
pub const CANCEL_EPISODE: &str = "cancel_episode";
/// Set the policy version on the worker's proxy: `u64` → `u64` (the previous version).
pub const SET_VERSION: &str = "set_version";
/// `router_admin(RouterAdmin) -> String`: one admin request to the worker's proxy's router
/// (`/router/...`), answered with the proxy's JSON body; a non-2xx answer is an error.
pub const ROUTER_ADMIN: &str = "router_admin";

/// The argument of [`ROUTER_ADMIN`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouterAdmin {
    /// `/router/drain`, `/router/restore`, ...
    pub path: String,
    /// The JSON body, as text.
    pub body: String,
}

/// One episode to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRequest {
    /// Unique per controller.
    pub episode_id: u64,
    /// The task, as JSON text (handed to the agent).
    pub task_json: String,
    /// The agent's deadline in milliseconds.
    pub deadline_ms: u64,
    /// Turn discount applied at export: `r[i] += discount * r[i+1]`.
    pub discount: f64,
}

/// Why an episode produced no trajectory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The agent failed (exit status, error text).
    AgentFailed(String),
    /// The agent did not finish by its deadline; it was killed and its session ended.
    AgentTimeout(u64),
    /// The agent's output was not the expected JSON.
    AgentGarbage(String),
    /// The controller cancelled it.
    Cancelled,
    /// The proxy or backend failed.
    Proxy(String),
    /// The episode failed because of the worker's infrastructure (its backend died or stopped
    /// answering during the episode), not the agent: the controller runs it elsewhere.
    Infra(String),
}

impl RejectReason {
    /// A short key for statistics (`agent_failed`, `agent_timeout`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            RejectReason::AgentFailed(_) => "agent_failed",
            RejectReason::AgentTimeout(_) => "agent_timeout",
            RejectReason::AgentGarbage(_) => "agent_garbage",
            RejectReason::Cancelled => "cancelled",
            RejectReason::Proxy(_) => "proxy",
            RejectReason::Infra(_) => "backend_failed",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::AgentFailed(m) => write!(f, "agent failed: {m}"),
            RejectReason::AgentTimeout(ms) => {
                write!(f, "agent exceeded its {ms} ms deadline and was killed")
            }
            RejectReason::AgentGarbage(m) => write!(f, "agent output is not a reward: {m}"),
            RejectReason::Cancelled => write!(f, "cancelled by the controller"),
            RejectReason::Proxy(m) => write!(f, "proxy or backend failed: {m}"),
            RejectReason::Infra(m) => {
                write!(f, "the worker's backend failed during the episode: {m}")
            }
        }
    }
}

/// What an episode produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EpisodeOutcome {
    /// The exported trajectory (the proxy's export JSON, as text).
    Accepted {
        /// The trajectory JSON, as the proxy exported it (parsed once, by the controller).
        trajectory_json: String,
    },
    /// No trajectory, and why.
    Rejected(RejectReason),
}

/// The reply to [`RUN_EPISODE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeResult {
    /// The episode.
    pub episode_id: u64,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// The outcome.
    pub outcome: EpisodeOutcome,
    /// Wall time on the worker, in microseconds.
    pub latency_us: u64,
}
