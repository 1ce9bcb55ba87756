//! The GRPO trainer in a rollout job (`[trainer] kind = "grpo"`): its settings, the batches of
//! whole groups it trains on, and what a version's batch says (reward, staleness).
//!
//! GRPO normalises each episode's reward within its group (the `group_size` episodes of one
//! task), so a batch must hold whole groups: an episode whose group is still running waits in
//! the [`GroupBatcher`] until every episode of its task has ended (accepted, rejected or lost),
//! and a batch is the oldest complete groups up to `batch_size` episodes. Every accepted
//! episode's complete turns become [`Sample`]s (`fleet_policy::export`), grouped by task.

use super::job::RolloutJob;
use super::output::EpisodeKey;
use super::updates::TrainItem;
use fleet_policy::engine::TrainerConfig;
use fleet_policy::grpo::Sample;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

/// The trainer's settings from `[trainer]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoPlan {
    /// The model directory (absolute): the trainer creates it from the seed, the servers load
    /// it (or create the same bytes with `--init-seed`).
    pub model_dir: PathBuf,
    /// The engine's constructor arguments.
    pub config: TrainerConfig,
    /// Warm-up steps (for `{warmup_steps}` in the servers' command).
    pub warmup_steps: u64,
}

impl GrpoPlan {
    /// Fills `{model}`, `{init_seed}`, `{warmup_steps}` and `{temperature}` in a server's
    /// command, so the servers start from exactly the trainer's version 0.
    pub fn fill(&self, arg: &str) -> String {
        arg.replace("{model}", &self.model_dir.to_string_lossy())
            .replace(
                "{init_seed}",
                &self.config.init_seed.unwrap_or(7).to_string(),
            )
            .replace("{warmup_steps}", &self.warmup_steps.to_string())
            .replace("{temperature}", &self.config.temperature.to_string())
    }
}

impl RolloutJob {
    /// The GRPO trainer's plan, if `[trainer] kind = "grpo"`; an error names a bad key.
    pub fn grpo_plan(&self) -> Result<Option<GrpoPlan>, String> {
        let t = &self.trainer;
        match t.kind.as_deref().unwrap_or("simulated") {
            "simulated" => {
                let grpo_only = [
                    ("model", t.model.is_some()),
                    ("init_seed", t.init_seed.is_some()),
                    ("warmup_steps", t.warmup_steps.is_some()),
                    ("lr", t.lr.is_some()),
                    ("temperature", t.temperature.is_some()),
                ];
                if let Some((k, _)) = grpo_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "[trainer] {k} is a key of the GRPO trainer: add kind = \"grpo\""
                    ));
                }
                return Ok(None);
            }
            "grpo" => {}
            other => {
                return Err(format!(
                    "[trainer] kind = {other:?}: use \"simulated\" or \"grpo\""
                ))
            }
        }
        if t.step_time.is_some() {
            return Err(
                "[trainer] step_time is the simulated trainer's: a GRPO step takes what it takes"
                    .into(),
            );
        }
        if self.inference.is_none() || self.weights.is_none() {
            return Err("[trainer] kind = \"grpo\" needs [inference] (servers running `fleet infer --model {model}`) and [weights] (how the new weights reach them)".into());
        }
        let model = t.model.clone().unwrap_or_else(|| match &self.run_dir {
            Some(d) => d.join("model"),
            None => PathBuf::from("fleet-model"),
        });
        let model_dir = if model.is_relative() {
            std::env::current_dir()
                .map(|c| c.join(&model))
                .unwrap_or(model)
        } else {
            model
        };
        let warmup_steps = t.warmup_steps.unwrap_or(40);
        if warmup_steps > 100_000 {
            return Err(format!(
                "[trainer] warmup_steps = {warmup_steps} is more than 100000"
            ));
        }
        let task = match &self.tasks.generate {
            Some(g) => g
                .parse::<fleet_policy::task::Task>()
                .map_err(|e| format!("[tasks] generate: {e}"))?,
            None => fleet_policy::task::Task::Reverse,
        };
        let mut config = TrainerConfig::new(&model_dir);
        if let Some(lr) = t.lr {
            if !(lr.is_finite() && lr > 0.0 && lr < 1.0) {
                return Err(format!("[trainer] lr = {lr} must be in (0, 1)"));
            }
            config.lr = lr;
        }
        if let Some(temp) = t.temperature {
            if !(temp.is_finite() && temp > 0.0 && temp <= 10.0) {
                return Err(format!("[trainer] temperature = {temp} must be in (0, 10]"));
            }
            config.temperature = temp;
        }
        // A batch is consumed one version after its episodes were admitted at the latest, so
        // the trainer keeps one version more than the admission bound.
        config.max_staleness = self.max_staleness + 1;
        config.init_seed = Some(t.init_seed.unwrap_or(7));
        config.warmup = (warmup_steps > 0).then_some(fleet_policy::train::Warmup {
            task,
            steps: warmup_steps as usize,
        });
        Ok(Some(GrpoPlan {
            model_dir,
            config,
            warmup_steps,
        }))
    }
}

/// The training samples of a batch, grouped by task, and how many turns were not complete
/// training records (skipped, never guessed at).
pub fn samples(batch: &[TrainItem]) -> (Vec<Sample>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for item in batch {
        let group = item.key.0.to_string();
        let turns = item.trajectory.get("turns").and_then(Value::as_array);
        for t in turns.into_iter().flatten() {
            match fleet_policy::export::sample_from_turn(t, &group) {
                Some(s) => out.push(s),
                None => skipped += 1,
            }
        }
    }
    (out, skipped)
}

/// What a version's batch says, whatever the trainer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Episodes in the batch.
    pub episodes: u64,
    /// Their mean reward (an episode's reward: its first turn's return).
    pub mean_reward: f64,
    /// How many versions behind the trainer the oldest turn's weights were.
    pub staleness_max: u64,
    /// The mean of that over the turns.
    pub staleness_mean: f64,
}

impl BatchStats {
    /// The statistics of `batch` for a trainer at version `trainer_version` (the step makes
    /// `trainer_version + 1`).
    pub fn of(batch: &[TrainItem], trainer_version: u64) -> BatchStats {
        let mut reward = 0.0;
        let mut stale = Vec::new();
        for item in batch {
            let turns = item.trajectory.get("turns").and_then(Value::as_array);
            let turns = turns.map(Vec::as_slice).unwrap_or_default();
            reward += turns
                .first()
                .and_then(|t| t.get("reward"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            for t in turns {
                let v = t
                    .get("version")
                    .and_then(Value::as_u64)
                    .unwrap_or(item.admitted_version);
                stale.push(trainer_version.saturating_sub(v));
            }
        }
        let n = batch.len().max(1) as f64;
        BatchStats {
            episodes: batch.len() as u64,
            mean_reward: reward / n,
            staleness_max: stale.iter().copied().max().unwrap_or(0),
            staleness_mean: stale.iter().sum::<u64>() as f64 / stale.len().max(1) as f64,
        }
    }
}

/// Holds accepted episodes until their group is complete, and hands out batches of whole
/// groups, oldest first.
#[derive(Debug)]
pub struct GroupBatcher {
    group_size: u32,
    /// Per task: episodes ended so far, and the accepted ones.
    open: BTreeMap<u64, (u32, Vec<TrainItem>)>,
    /// Complete groups (accepted episodes only; a group may be empty), in completion order.
    ready: VecDeque<Vec<TrainItem>>,
    ready_items: usize,
}

impl GroupBatcher {
    /// A batcher for groups of `group_size` episodes (1: every episode is its own group).
    pub fn new(group_size: u32) -> Self {
        GroupBatcher {
            group_size: group_size.max(1),
            open: BTreeMap::new(),
            ready: VecDeque::new(),
            ready_items: 0,
        }
    }

    /// Episode `key` ended: `item` if it was accepted, `None` if it was rejected or lost.
    pub fn ended(&mut self, key: EpisodeKey, item: Option<TrainItem>) {
        let e = self.open.entry(key.0).or_insert_with(|| (0, Vec::new()));
        e.0 += 1;
        e.1.extend(item);
        if e.0 >= self.group_size {
            if let Some((_, items)) = self.open.remove(&key.0) {
                self.ready_items += items.len();
                self.ready.push_back(items);
            }
        }
    }

    /// Accepted episodes in complete groups.
    pub fn ready(&self) -> usize {
        self.ready_items
    }

    /// Accepted episodes not yet handed out (complete groups or not).
    pub fn held(&self) -> usize {
        self.ready_items + self.open.values().map(|(_, v)| v.len()).sum::<usize>()
    }

    /// The oldest complete groups, `batch_size` episodes or more (whole groups), if that many
    /// are ready.
    pub fn take(&mut self, batch_size: u64) -> Option<Vec<TrainItem>> {
        if (self.ready_items as u64) < batch_size.max(1) {
            return None;
        }
        let mut out = Vec::new();
        while (out.len() as u64) < batch_size.max(1) {
            let Some(g) = self.ready.pop_front() else {
                break;
            };
            self.ready_items -= g.len();
            out.extend(g);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(task: u64, sample: u32, reward: f64, version: u64) -> TrainItem {
        TrainItem {
            key: (task, sample),
            admitted_version: version,
            trajectory: json!({"turns": [{"complete": true, "prompt_token_ids": [0, 2],
                "output_token_ids": [3, 1], "output_logprobs": [-0.5, -0.1],
                "reward": reward, "version": version}]}),
        }
    }

    #[test]
    fn a_batch_holds_whole_groups_and_waits_for_a_group_still_running() {
        let mut b = GroupBatcher::new(2);
        b.ended((0, 0), Some(item(0, 0, 1.0, 0)));
        b.ended((1, 0), Some(item(1, 0, 1.0, 0)));
        assert_eq!(b.take(2), None, "no group is complete yet");
        b.ended((1, 1), None); // rejected: the group is complete with one episode
        b.ended((0, 1), Some(item(0, 1, 0.0, 0)));
        assert_eq!(b.ready(), 3);
        // Group 1 (one accepted) completed first, then group 0: whole groups, so 3 episodes.
        let first = b.take(2).unwrap();
        let keys: Vec<_> = first.iter().map(|i| i.key).collect();
        assert_eq!(keys, vec![(1, 0), (0, 0), (0, 1)]);
        assert_eq!(b.held(), 0);
        assert_eq!(b.take(1), None);
    }

    #[test]
    fn samples_are_grouped_by_task_and_stats_count_staleness_against_the_trainer() {
        let batch = vec![item(4, 0, 1.0, 2), item(4, 1, 0.0, 1)];
        let (s, skipped) = samples(&batch);
        assert_eq!((s.len(), skipped), (2, 0));
        assert!(s.iter().all(|x| x.group == "4"));
        let st = BatchStats::of(&batch, 2);
        assert_eq!(st.episodes, 2);
        assert!((st.mean_reward - 0.5).abs() < 1e-9);
        assert_eq!(st.staleness_max, 1);
        assert!((st.staleness_mean - 0.5).abs() < 1e-9);
    }
}
