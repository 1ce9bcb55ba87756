//! The verifiable tasks: reverse a short string, or add two small numbers.
//!
//! A problem is a prompt (`"abc="`, `"12+7="`) and its answer (`"cba"`, `"19"`); the model's
//! completion should be the answer followed by the end token. The reward is the share of
//! answer positions the completion got right, divided by the longer of the two lengths (so
//! extra characters cost as much as missing ones): 1.0 for the exact answer, partial credit
//! for a near miss, about 0.02 for a uniformly random policy (one alphabet character in ~46).

use serde::{Deserialize, Serialize};

use crate::sample::SplitMix;

/// Which task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Reverse a string of 3 to 5 letters from `a..=h`: `"abc="` → `"cba"`.
    #[default]
    Reverse,
    /// Add two numbers below 50: `"12+7="` → `"19"`.
    Add,
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The prompt text (the chat message content).
    pub prompt: String,
    /// The expected completion text.
    pub answer: String,
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reverse" => Ok(Task::Reverse),
            "add" => Ok(Task::Add),
            other => Err(format!("unknown task {other:?}: use reverse or add")),
        }
    }
}

impl Task {
    /// A random problem.
    pub fn problem(self, rng: &mut SplitMix) -> Problem {
        match self {
            Task::Reverse => {
                let n = 3 + rng.below(3);
                let s: String = (0..n)
                    .map(|_| (b'a' + rng.below(8) as u8) as char)
                    .collect();
                Problem {
                    prompt: format!("{s}="),
                    answer: s.chars().rev().collect(),
                }
            }
            Task::Add => {
                let (a, b) = (rng.below(50), rng.below(50));
                Problem {
                    prompt: format!("{a}+{b}="),
                    answer: (a + b).to_string(),
                }
            }
        }
    }

    /// The answer a prompt of this task expects, if the prompt is well formed.
    pub fn answer(self, prompt: &str) -> Option<String> {
        let body = prompt.strip_suffix('=')?;
        match self {
            Task::Reverse => Some(body.chars().rev().collect()),
            Task::Add => {
                let (a, b) = body.split_once('+')?;
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                Some(a.checked_add(b)?.to_string())
            }
        }
    }
}

/// The reward of `output` for a problem whose answer is `answer`: positions right over the
/// longer length, in `[0, 1]`.
pub fn reward(answer: &str, output: &str) -> f64 {
    let (a, o): (Vec<char>, Vec<char>) = (answer.chars().collect(), output.chars().collect());
    let longest = a.len().max(o.len());
    if longest == 0 {
        return 1.0;
    }
    let right = a.iter().zip(&o).filter(|(x, y)| x == y).count();
    right as f64 / longest as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reward_is_the_share_of_positions_right() {
        assert_eq!(reward("cba", "cba"), 1.0);
        assert!((reward("cba", "cbx") - 2.0 / 3.0).abs() < 1e-9);
        assert!((reward("cba", "cbaa") - 0.75).abs() < 1e-9);
        assert_eq!(reward("cba", ""), 0.0);
    }

    #[test]
    fn problems_carry_the_answer_their_prompt_implies() {
        let mut rng = SplitMix::new(3);
        for task in [Task::Reverse, Task::Add] {
            for _ in 0..50 {
                let p = task.problem(&mut rng);
                assert_eq!(task.answer(&p.prompt).as_deref(), Some(p.answer.as_str()));
            }
        }
    }
}
