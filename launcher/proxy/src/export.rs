//! Turning a finished session into training records.
//!
//! Each turn (one per choice of a request: with `n > 1` the choices are sibling turns that
//! share a `group_id`, which is what a GRPO-style trainer groups by) becomes one record whose
//! token sequence is `prompt_token_ids ++ output_token_ids`. `loss_mask`, `logprobs` and
//! `versions` always have exactly one entry per token of that sequence:
//!
//! - prompt positions: mask 0, logprob `null` (never computed), version -1;
//! - output positions: mask 1, the backend's logprob for that token, the policy version read
//!   when the generation started.
//!
//! Nothing is invented: a logprob the backend did not give is `null` (never 0.0, which would
//! claim probability 1); when the backend gave a different number of logprobs than output ids,
//! the positions cannot be matched and every output logprob is `null` (the raw list stays in
//! `output_logprobs`); ids the backend did not return make the sequence shorter, never padded.
//! A turn that is not a complete training record has `complete: false` and says why in
//! `incomplete`; the trajectory counts them in `incomplete_turns`.
//!
//! Rewards are discounted backwards over the session's requests in the order they started
//! (choice 0 of each, the line the agent continued): `r[i] += discount * r[i+1]`, a turn without
//! a reward counting as 0. A sibling choice (`choice_index > 0`) keeps its own reward: the
//! episode did not continue from it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use serde::Serialize;
use serde_json::Value;

use crate::sessions::{Endpoint, Turn, TurnStatus};

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
    /// How many turns are not complete training records (see [`TurnExport::incomplete`]).
    pub incomplete_turns: usize,
    /// One record per turn, in the order the requests started, choices in order.
    pub turns: Vec<TurnExport>,
}

/// One exported turn.
#[derive(Debug, Clone, Serialize)]
pub struct TurnExport {
    /// The interaction id (the `x-fleet-interaction-id` response header; choice `i > 0` of a
    /// request is `<id>-c<i>`, listed in `x-fleet-interaction-ids`).
    pub interaction_id: String,
    /// The request's interaction id, shared by the choices of one request.
    pub group_id: String,
    /// Which choice of the request this is.
    pub choice_index: u32,
    /// How many choices the request produced.
    pub n_choices: u32,
    /// The turn finished last before this one started, if any.
    pub parent_id: Option<String>,
    /// Which endpoint generated it.
    pub endpoint: Endpoint,
    /// How it ended.
    pub status: TurnStatus,
    /// Whether this is a complete training record: every id and logprob present and consistent.
    pub complete: bool,
    /// Why it is not (empty when complete).
    pub incomplete: Vec<String>,
    /// The policy version current when the generation started.
    pub version: u64,
    /// Prompt token ids (empty if the backend did not return them).
    pub prompt_token_ids: Vec<u32>,
    /// Output token ids (empty if the backend did not return them).
    pub output_token_ids: Vec<u32>,
    /// The logprobs the backend returned for the output, in order (`null`: an entry without a
    /// number); one per output token when the turn is complete.
    pub output_logprobs: Vec<Option<f64>>,
    /// 0 for prompt positions, 1 for output positions.
    pub loss_mask: Vec<u8>,
    /// Aligned with prompt ++ output: `null` for the prompt and for any output token whose
    /// logprob is not known, the backend's logprob otherwise.
    pub logprobs: Vec<Option<f64>>,
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
    /// The backend's `system_fingerprint` for this turn (null if it sent none); with
    /// `fleet mock-llm`, `fleet-mock-v<N>-<hash>` names the weights that generated it.
    pub system_fingerprint: Option<String>,
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

/// A session taken out of the store to be exported: its turns, moved, not copied.
pub(crate) struct Finished {
    pub(crate) session_id: String,
    pub(crate) task_id: Value,
    pub(crate) end_reason: &'static str,
    pub(crate) turns: Vec<Turn>,
}

/// Turns in export order with their discounted rewards (see the module docs).
fn ordered(mut turns: Vec<Turn>, discount: f64) -> (Vec<Turn>, Vec<f64>) {
    turns.sort_by_key(|t| (t.seq, t.choice));
    let main: Vec<f64> = turns
        .iter()
        .filter(|t| t.choice == 0)
        .map(|t| t.reward.unwrap_or(0.0))
        .collect();
    let mut discounted = discount_rewards(&main, discount).into_iter();
    let rewards = turns
        .iter()
        .map(|t| {
            if t.choice == 0 {
                discounted.next().unwrap_or(0.0)
            } else {
                t.reward.unwrap_or(0.0)
            }
        })
        .collect();
    (turns, rewards)
}

/// The export as a streamed JSON body: the same document as a serialised [`Trajectory`], written
/// one turn at a time.
///
/// Why: building the whole trajectory, then a `serde_json::Value` of it, then its bytes, held
/// 10-13 times the export's size in memory (a 336 MB export peaked at 2.9 GiB). Here each turn
/// is converted and serialised only when the client is ready for more, and dropped once
/// written: the export costs one chunk beyond the session it empties.
pub(crate) fn streamed(f: Finished, discount: f64) -> ExportBody {
    let incomplete_turns = f
        .turns
        .iter()
        .filter(|t| !t.record.gaps().is_empty())
        .count();
    let (turns, rewards) = ordered(f.turns, discount);
    #[derive(Serialize)]
    struct Head<'a> {
        session_id: &'a str,
        task_id: &'a Value,
        end_reason: &'static str,
        discount: f64,
        incomplete_turns: usize,
    }
    let head = Head {
        session_id: &f.session_id,
        task_id: &f.task_id,
        end_reason: f.end_reason,
        discount,
        incomplete_turns,
    };
    // `{"session_id":...,"incomplete_turns":N` then `,"turns":[` (the object's closing brace
    // dropped): serialising a struct of strings and numbers cannot fail.
    let mut head = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
    head.pop();
    if head.len() > 1 {
        head.push(b',');
    }
    head.extend_from_slice(b"\"turns\":[");
    ExportBody {
        buf: head,
        turns: turns
            .into_iter()
            .zip(rewards)
            .collect::<Vec<_>>()
            .into_iter(),
        first: true,
        done: false,
    }
}

/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 256 * 1024;

/// The streamed export body (see [`streamed`]).
pub(crate) struct ExportBody {
    buf: Vec<u8>,
    turns: std::vec::IntoIter<(Turn, f64)>,
    first: bool,
    done: bool,
}

impl hyper::body::Body for ExportBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        while this.buf.len() < CHUNK_BYTES {
            match this.turns.next() {
                Some((t, reward)) => {
                    if !this.first {
                        this.buf.push(b',');
                    }
                    this.first = false;
                    // A struct of strings, numbers and JSON values: serialising cannot fail.
                    let _ = serde_json::to_writer(&mut this.buf, &export_turn(t, reward));
                }
                None => {
                    this.buf.extend_from_slice(b"]}");
                    this.done = true;
                    break;
                }
            }
        }
        let chunk = std::mem::replace(&mut this.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        if this.done {
            this.buf = Vec::new();
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// Builds a session's trajectory from its turns, whole (the export route streams instead, see
/// [`streamed`]; this is the same document as one value).
#[cfg(test)]
pub(crate) fn build(
    session_id: String,
    task_id: Value,
    end_reason: &'static str,
    discount: f64,
    turns: Vec<Turn>,
) -> Trajectory {
    let (turns, rewards) = ordered(turns, discount);
    let turns: Vec<TurnExport> = turns
        .into_iter()
        .zip(rewards)
        .map(|(t, reward)| export_turn(t, reward))
        .collect();
    Trajectory {
        session_id,
        task_id,
        end_reason,
        discount,
        incomplete_turns: turns.iter().filter(|t| !t.complete).count(),
        turns,
    }
}

fn export_turn(t: Turn, reward: f64) -> TurnExport {
    let incomplete = t.record.gaps();
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
    let n_out = output.len();
    let mut loss_mask = vec![0u8; prompt.len()];
    loss_mask.extend(std::iter::repeat_n(1u8, n_out));
    let mut logprobs: Vec<Option<f64>> = vec![None; prompt.len()];
    if out_lp.len() == n_out {
        logprobs.extend(out_lp.iter().copied());
    } else {
        logprobs.extend(std::iter::repeat_n(None, n_out));
    }
    let mut versions = vec![-1i64; prompt.len()];
    versions.extend(std::iter::repeat_n(t.version as i64, n_out));
    let group_id = match t.id.rsplit_once("-c") {
        Some((base, _)) if t.choice > 0 => base.to_string(),
        _ => t.id.clone(),
    };
    TurnExport {
        interaction_id: t.id,
        group_id,
        choice_index: t.choice,
        n_choices: rec.n_choices,
        parent_id: t.parent,
        endpoint: rec.endpoint,
        status: rec.status,
        complete: incomplete.is_empty(),
        incomplete,
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
        system_fingerprint: rec.system_fingerprint,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::TurnRecord;

    fn turn(output_ids: Option<Vec<u32>>, lps: Option<Vec<Option<f64>>>) -> Turn {
        Turn {
            seq: 0,
            choice: 0,
            id: "s-0".into(),
            parent: None,
            version: 3,
            reward: None,
            fingerprint: 0,
            record: TurnRecord {
                endpoint: Endpoint::ChatCompletions,
                request: Value::Null,
                response: Value::Null,
                prompt_ids: Some(vec![1, 2]),
                output_ids,
                output_logprobs: lps,
                completion_tokens: None,
                logprobs_declined: false,
                choice_index: 0,
                n_choices: 1,
                finish_reason: None,
                model: None,
                system_fingerprint: None,
                status: TurnStatus::Complete,
                notes: Vec::new(),
            },
        }
    }

    #[test]
    fn arrays_line_up_with_the_tokens_and_unknown_logprobs_are_null_never_zero() {
        let t = export_turn(
            turn(
                Some(vec![7, 8, 9]),
                Some(vec![Some(-0.5), None, Some(-1.0)]),
            ),
            0.0,
        );
        assert_eq!(t.loss_mask, vec![0, 0, 1, 1, 1]);
        assert_eq!(t.logprobs, vec![None, None, Some(-0.5), None, Some(-1.0)]);
        assert_eq!(t.versions, vec![-1, -1, 3, 3, 3]);
        assert!(!t.complete && t.incomplete[0].contains("1 of 3 logprobs are null"));

        // Fewer logprobs than ids: positions cannot be matched, so none is claimed.
        let t = export_turn(
            turn(Some(vec![7, 8, 9]), Some(vec![Some(-0.5), Some(-0.1)])),
            0.0,
        );
        assert_eq!(t.logprobs, vec![None; 5]);
        assert_eq!(t.output_logprobs.len(), 2, "the raw list is kept");
        assert!(t
            .incomplete
            .iter()
            .any(|g| g.contains("2 logprobs for 3 output tokens")));

        // No ids: the sequence is the prompt alone, and the arrays follow it.
        let t = export_turn(turn(None, Some(vec![Some(-0.5)])), 0.0);
        assert_eq!(
            (t.loss_mask.len(), t.logprobs.len(), t.versions.len()),
            (2, 2, 2)
        );
        assert_eq!(t.missing, vec!["output_token_ids"]);

        let t = export_turn(turn(Some(vec![7]), Some(vec![Some(-0.5)])), 0.0);
        assert!(t.complete, "{:?}", t.incomplete);
    }

    #[test]
    fn the_streamed_export_is_the_same_document_as_the_whole_one() {
        use http_body_util::BodyExt;
        let turns = |n: u64| -> Vec<Turn> {
            (0..n)
                .map(|i| {
                    let mut t = turn(Some(vec![7, 8]), Some(vec![Some(-0.5), Some(-1.0)]));
                    t.seq = n - i; // out of order: both sort
                    t.id = format!("s-{}", n - i);
                    t.reward = Some(i as f64);
                    t
                })
                .collect()
        };
        for n in [0, 1, 3, 2000] {
            // Both through text: serde_json's float parsing is not exactly round-trip.
            let whole: Value = serde_json::from_slice(
                &serde_json::to_vec(&build(
                    "s".into(),
                    serde_json::json!({"task": n}),
                    "ended",
                    0.5,
                    turns(n),
                ))
                .unwrap(),
            )
            .unwrap();
            let body = streamed(
                Finished {
                    session_id: "s".into(),
                    task_id: serde_json::json!({"task": n}),
                    end_reason: "ended",
                    turns: turns(n),
                },
                0.5,
            );
            let bytes = futures::executor::block_on(body.collect())
                .unwrap()
                .to_bytes();
            let streamed: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(streamed, whole, "{n} turns");
        }
    }

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
