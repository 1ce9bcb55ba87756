//! The built-in `answer` agent: one turn on a verifiable problem, scored at a glance.
//!
//! The task is `{"prompt": "abc=", "answer": "cba"}` (what `[tasks] generate = "reverse"` or
//! `"add"` makes). The agent sends the prompt as the user message, takes the completion's text,
//! and its reward is the share of answer positions it got right over the longer of the two
//! lengths (`fleet_policy::task::reward`): 1.0 for the exact answer, partial credit for a near
//! miss, about 0.02 for a random policy. It does not set a temperature: the server's own
//! (which the GRPO trainer is told) is what the recorded logprobs are of.

use super::agent::{Agent, AgentContext, AgentFuture, AgentOutcome};
use serde_json::{json, Value};

/// The agent's registered name.
pub const NAME: &str = "answer";

/// The `answer` agent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Answer;

impl Agent for Answer {
    fn run(&self, ctx: AgentContext) -> AgentFuture<'_> {
        Box::pin(async move {
            let field = |k: &str| {
                ctx.task.get(k).and_then(Value::as_str).ok_or_else(|| {
                    format!(
                        "the `answer` agent needs tasks with \"prompt\" and \"answer\" strings (use [tasks] generate = \"reverse\"); this task has no {k:?}: {}",
                        ctx.task
                    )
                })
            };
            let (prompt, answer) = (field("prompt")?, field("answer")?);
            let max_tokens = ctx
                .task
                .get("max_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(answer.chars().count() as u64 + 4);
            let reply = ctx
                .chat(
                    &json!([{"role": "user", "content": prompt}]),
                    json!({"max_tokens": max_tokens}),
                )
                .await?;
            let text = reply
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("no message content in the answer: {reply}"))?;
            Ok(AgentOutcome::Reward(fleet_policy::task::reward(
                answer, text,
            )))
        })
    }
}
