//! Turning a finished session into training records.
//!
//! Each turn becomes one record whose sequence is `prompt_token_ids ++ output_token_ids`;
//! `loss_mask`, `logprobs` and `versions` are aligned with that sequence (prompt positions get
//! mask 0, logprob 0.0 and version -1; output positions get mask 1, the backend's logprob and
//! the policy version read when the generation started). Rewards are discounted backwards over
//! the turns in the order they were started: `r[i] += discount * r[i+1]`, a turn without a
//! reward counting as 0. What the backend did not return is listed in `missing` instead of
//! being invented.

use serde::Serialize;
use serde_json::Value;

use super::sessions::{Endpoint, Turn, TurnStatus};

/// A session's exported trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct Trajectory {
    /// The session id.
    pub session_id: String,
    /// The `task_id` given at `start_session`.
    pub task_id: Value,
    /// Why the session ended: `ended` (the agent ended it) or `idle_timeout`.
    pub end_reason: &'static str,
    /// The discount applied.
    pub discount: f64,
    /// One record per turn, in the order the turns started.
    pub turns: Vec<TurnExport>,
}

/// One exported turn.
#[derive(Debug, Clone, Serialize)]
pub struct TurnExport {
    /// The interaction id (the `x-fleet-interaction-id` response header).
    pub interaction_id: String,
    /// The turn finished last before this one started, if any.
    pub parent_id: Option<String>,
    /// Which endpoint generated it.
    pub endpoint: Endpoint,
    /// How it ended.
    pub status: TurnStatus,
    /// The policy version current when the generation started.
    pub version: u64,
    /// Prompt token ids (empty if the backend did not return them).
    pub prompt_token_ids: Vec<u32>,
    /// Output token ids (empty if the backend did not return them).
    pub output_token_ids: Vec<u32>,
    /// One logprob per output token (empty if the backend did not return them).
    pub output_logprobs: Vec<f64>,
    /// 0 for prompt positions, 1 for output positions.
    pub loss_mask: Vec<u8>,
    /// Aligned with prompt ++ output: 0.0 for the prompt, the output logprobs after it.
    pub logprobs: Vec<f64>,
    /// Aligned with prompt ++ output: -1 for the prompt, the turn's version for the output.
    pub versions: Vec<i64>,
    /// The discounted reward.
    pub reward: f64,
    /// The reward as set (`None`: never set, counted as 0).
    pub raw_reward: Option<f64>,
    /// The request's messages (chat) or prompt (completions).
    pub messages: Value,
    /// The assistant message (chat) or text (completions).
    pub response: Value,
    /// The backend's finish reason.
    pub finish_reason: Option<String>,
    /// The model the backend reported.
    pub model: Option<String>,
    /// Fields the backend did not return: `prompt_token_ids`, `output_token_ids`, `logprobs`.
    pub missing: Vec<&'static str>,
}

/// Applies the turn discount backwards: `r[i] += discount * r[i+1]`.
pub fn discount_rewards(rewards: &[f64], discount: f64) -> Vec<f64> {
    let mut r = rewards.to_vec();
    for i in (0..r.len().saturating_sub(1)).rev() {
        r[i] += discount * r[i + 1];
    }
    r
}

/// Builds a session's trajectory from its turns.
pub(crate) fn build(
    session_id: String,
    task_id: Value,
    end_reason: &'static str,
    discount: f64,
    mut turns: Vec<Turn>,
) -> Trajectory {
    turns.sort_by_key(|t| t.seq);
    let raw: Vec<f64> = turns.iter().map(|t| t.reward.unwrap_or(0.0)).collect();
    let discounted = discount_rewards(&raw, discount);
    let turns = turns
        .into_iter()
        .zip(discounted)
        .map(|(t, reward)| export_turn(t, reward))
        .collect();
    Trajectory {
        session_id,
        task_id,
        end_reason,
        discount,
        turns,
    }
}

fn export_turn(t: Turn, reward: f64) -> TurnExport {
    let rec = t.record;
    let mut missing = Vec::new();
    let prompt = rec.prompt_ids.unwrap_or_else(|| {
        missing.push("prompt_token_ids");
        Vec::new()
    });
    let output = rec.output_ids.unwrap_or_else(|| {
        missing.push("output_token_ids");
        Vec::new()
    });
    let out_lp = rec.output_logprobs.unwrap_or_else(|| {
        missing.push("logprobs");
        Vec::new()
    });
    let n_out = output.len().max(out_lp.len());
    let mut loss_mask = vec![0u8; prompt.len()];
    loss_mask.extend(std::iter::repeat_n(1u8, n_out));
    let mut logprobs = vec![0.0; prompt.len()];
    logprobs.extend(out_lp.iter().copied());
    logprobs.resize(prompt.len() + n_out, 0.0);
    let mut versions = vec![-1i64; prompt.len()];
    versions.extend(std::iter::repeat_n(t.version as i64, n_out));
    TurnExport {
        interaction_id: t.id,
        parent_id: t.parent,
        endpoint: rec.endpoint,
        status: rec.status,
        version: t.version,
        prompt_token_ids: prompt,
        output_token_ids: output,
        output_logprobs: out_lp,
        loss_mask,
        logprobs,
        versions,
        reward,
        raw_reward: t.reward,
        messages: rec.request,
        response: rec.response,
        finish_reason: rec.finish_reason,
        model: rec.model,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discount_runs_from_the_last_turn_back() {
        assert_eq!(
            discount_rewards(&[0.0, 0.0, 1.0], 0.5),
            vec![0.25, 0.5, 1.0]
        );
        let r = discount_rewards(&[1.0, 0.0, 2.0], 0.9);
        let want = [1.0 + 0.9 * 1.8, 1.8, 2.0];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{r:?}");
        }
        assert_eq!(discount_rewards(&[], 0.5), Vec::<f64>::new());
        assert_eq!(discount_rewards(&[3.0], 0.5), vec![3.0]);
    }
}
