//! From the rollout output to training samples.
//!
//! A rollout job writes one JSON line per accepted episode (`runtime/src/rollout/output.rs`):
//! the task, `group_id` (the task index: the `group_size` episodes of one task share it) and
//! the proxy's exported `turns`, each with `prompt_token_ids`, `output_token_ids`,
//! `output_logprobs`, `loss_mask` (over prompt ++ output), `version` and `reward`. Every
//! complete turn becomes one [`Sample`] grouped by the episode's `group_id`; a turn that is not
//! a complete training record (`complete: false`: missing ids or logprobs) is skipped and
//! counted, never guessed at.

use serde_json::Value;

use crate::grpo::Sample;

/// Samples of one episode line, and how many turns were skipped as incomplete.
pub fn samples_from_episode(line: &Value) -> (Vec<Sample>, usize) {
    let group = match line.get("group_id") {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => line
            .get("task_index")
            .map(Value::to_string)
            .unwrap_or_default(),
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    let turns = line
        .get("turns")
        .or_else(|| line.get("trajectory").and_then(|t| t.get("turns")))
        .and_then(Value::as_array);
    for t in turns.into_iter().flatten() {
        match sample_from_turn(t, &group) {
            Some(s) => out.push(s),
            None => skipped += 1,
        }
    }
    (out, skipped)
}

fn ids(v: Option<&Value>) -> Option<Vec<u32>> {
    v?.as_array()?
        .iter()
        .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
        .collect()
}

/// One exported turn as a sample (`None` if it is not a complete record).
pub fn sample_from_turn(t: &Value, group: &str) -> Option<Sample> {
    if t.get("complete").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let prompt_ids = ids(t.get("prompt_token_ids"))?;
    let output_ids = ids(t.get("output_token_ids"))?;
    let logprobs: Vec<f32> = t
        .get("output_logprobs")?
        .as_array()?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32))
        .collect::<Option<_>>()?;
    let mask: Vec<u8> = t
        .get("loss_mask")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .skip(prompt_ids.len())
                .map(|x| u8::from(x.as_u64() == Some(1)))
                .collect()
        })
        .unwrap_or_default();
    Some(Sample {
        group: group.to_string(),
        loss_mask: if mask.len() == output_ids.len() {
            mask
        } else {
            Vec::new()
        },
        prompt_ids,
        output_ids,
        logprobs,
        reward: t.get("reward").and_then(Value::as_f64).unwrap_or(0.0),
        version: t.get("version").and_then(Value::as_u64).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn complete_turns_become_samples_grouped_by_the_episode_and_incomplete_ones_are_skipped() {
        let line = json!({"group_id": 3, "turns": [
            {"complete": true, "prompt_token_ids": [0, 2], "output_token_ids": [4, 1],
             "output_logprobs": [-0.5, -0.25], "loss_mask": [0, 0, 1, 1], "reward": 0.5, "version": 2},
            {"complete": false, "prompt_token_ids": [0], "output_token_ids": [], "output_logprobs": []}
        ]});
        let (s, skipped) = samples_from_episode(&line);
        assert_eq!(skipped, 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].group, "3");
        assert_eq!(s[0].loss_mask, vec![1, 1]);
        assert_eq!((s[0].reward, s[0].version), (0.5, 2));
    }
}
