//! Rust agents: the [`Agent`] trait, the context an episode gives it, and the registry a node
//! resolves agent names in (like engines: filled at start-up, nothing loaded dynamically).

use fleet_http::{send_with_retry, Client, HttpRequest, RetryPolicy};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What an agent reports at the end of an episode.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentOutcome {
    /// One reward, for the last turn (the export's discount carries it back).
    Reward(f64),
    /// One reward per turn, in turn order.
    PerTurn(Vec<f64>),
}

/// What an agent works with: an OpenAI-compatible endpoint with its own session key, and the
/// task.
#[derive(Clone, Debug)]
pub struct AgentContext {
    /// `OPENAI_BASE_URL`: the proxy's `/v1`.
    pub base_url: String,
    /// `OPENAI_API_KEY`: the session key.
    pub api_key: String,
    /// The task.
    pub task: Value,
    /// A pooled HTTP client.
    pub http: Client,
}

impl AgentContext {
    /// One chat completion: posts `{"model", "messages", extra...}` to `/chat/completions` and
    /// returns the answer JSON.
    pub async fn chat(&self, messages: &Value, extra: Value) -> Result<Value, String> {
        let mut body = json!({ "model": "policy", "messages": messages });
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let root = self.base_url.trim_end_matches("/v1").trim_end_matches('/');
        let req = HttpRequest::post("/v1/chat/completions", body.to_string())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.api_key));
        let policy = RetryPolicy::non_idempotent().deadline(Duration::from_secs(120));
        let r = send_with_retry(&self.http, root, &req, &policy, std::future::pending())
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&r.body).map_err(|e| format!("chat answer is not JSON: {e}"))
    }
}

/// A boxed future, as agents return.
pub type AgentFuture<'a> = Pin<Box<dyn Future<Output = Result<AgentOutcome, String>> + Send + 'a>>;

/// A Rust agent: runs one episode against the context's endpoint.
pub trait Agent: Send + Sync + 'static {
    /// Runs the episode; an error rejects it with that message.
    fn run(&self, ctx: AgentContext) -> AgentFuture<'_>;
}

/// Agents by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, Arc<dyn Agent>>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.agents.keys()).finish()
    }
}

impl AgentRegistry {
    /// A registry with the built-in agents: `multi-turn` and `answer`
    /// ([`super::answer_agent`]).
    pub fn builtin() -> Self {
        let mut r = AgentRegistry::default();
        r.register("multi-turn", MultiTurn);
        r.register(super::answer_agent::NAME, super::answer_agent::Answer);
        r
    }
    /// Registers `agent` as `name`.
    pub fn register(&mut self, name: impl Into<String>, agent: impl Agent) -> &mut Self {
        self.agents.insert(name.into(), Arc::new(agent));
        self
    }
    /// The agent called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Agent>> {
        self.agents.get(name).cloned()
    }
    /// Registered names.
    pub fn names(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }
    /// Adds every agent of `other`.
    pub fn merge(&mut self, other: &AgentRegistry) {
        for (k, v) in &other.agents {
            self.agents.insert(k.clone(), v.clone());
        }
    }
}

/// The built-in agent: a short multi-turn conversation.
///
/// The task is `{"prompt": "...", "turns": N}` (defaults: a fixed prompt, 3 turns). Each turn
/// sends the conversation so far and appends the answer; the reward is deterministic in the
/// answers (the share of distinct words in the last answer), so runs are reproducible against a
/// seeded mock backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct MultiTurn;

impl Agent for MultiTurn {
    fn run(&self, ctx: AgentContext) -> AgentFuture<'_> {
        Box::pin(async move {
            let prompt = ctx
                .task
                .get("prompt")
                .and_then(Value::as_str)
                .unwrap_or("Solve the task step by step.")
                .to_string();
            let turns = ctx
                .task
                .get("turns")
                .and_then(Value::as_u64)
                .unwrap_or(3)
                .clamp(1, 16);
            let max_tokens = ctx
                .task
                .get("max_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(16);
            let mut messages = vec![json!({"role": "user", "content": prompt})];
            let mut last = String::new();
            for t in 0..turns {
                let answer = ctx
                    .chat(
                        &Value::Array(messages.clone()),
                        json!({"max_tokens": max_tokens}),
                    )
                    .await?;
                last = answer
                    .pointer("/choices/0/message/content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("turn {t}: no message content in the answer"))?
                    .to_string();
                messages.push(json!({"role": "assistant", "content": last}));
                messages.push(
                    json!({"role": "user", "content": format!("Continue (step {}).", t + 2)}),
                );
            }
            let words: Vec<&str> = last.split_whitespace().collect();
            let distinct: std::collections::BTreeSet<&str> = words.iter().copied().collect();
            let reward = if words.is_empty() {
                0.0
            } else {
                distinct.len() as f64 / words.len() as f64
            };
            Ok(AgentOutcome::Reward(reward))
        })
    }
}
