//! GRPO's arithmetic: group-normalised advantages and the clipped-ratio policy loss.
//!
//! Each episode's completion is a [`Sample`]: prompt ids, output ids, the logprobs the
//! inference server recorded for the output (under the weights of `version`), the reward, and
//! the group it belongs to (the episodes of one task). The advantage of a sample is its
//! reward's z-score within its group (`(r - mean) / (std + 1e-4)`; a group of one, or one whose
//! rewards are all equal, teaches nothing and gets 0). The loss is PPO's clipped surrogate per
//! output token, `-min(ρ·A, clip(ρ, 1-ε, 1+ε)·A)` with `ρ = exp(logp_now - logp_recorded)`,
//! averaged over the tokens the loss mask keeps. The recorded logprobs are the behaviour
//! policy's, so data up to `max_staleness` versions old is corrected by the ratio rather than
//! thrown away.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::model::Policy;

/// One completion to learn from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The group it is normalised in (the task's id: `group_size` episodes share it).
    pub group: String,
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Output token ids.
    pub output_ids: Vec<u32>,
    /// The logprob the server recorded for each output token.
    pub logprobs: Vec<f32>,
    /// Per output token: 1 to learn from it, 0 to skip it (the export's loss mask, output
    /// part); empty means every output token.
    pub loss_mask: Vec<u8>,
    /// The reward of the episode.
    pub reward: f64,
    /// The weights version that generated it.
    pub version: u64,
}

impl Sample {
    /// Checks the lengths agree and the sequence fits `context`.
    pub fn validate(&self, context: usize, vocab: usize) -> Result<()> {
        let bad = |m: String| {
            Err(PolicyError::Invalid(format!(
                "sample of group {:?}: {m}",
                self.group
            )))
        };
        if self.prompt_ids.is_empty() || self.output_ids.is_empty() {
            return bad("empty prompt or output".into());
        }
        if self.logprobs.len() != self.output_ids.len() {
            return bad(format!(
                "{} logprobs for {} output tokens",
                self.logprobs.len(),
                self.output_ids.len()
            ));
        }
        if !self.loss_mask.is_empty() && self.loss_mask.len() != self.output_ids.len() {
            return bad(format!(
                "loss mask of {} for {} output tokens",
                self.loss_mask.len(),
                self.output_ids.len()
            ));
        }
        let n = self.prompt_ids.len() + self.output_ids.len();
        if n > context + 1 {
            return bad(format!("{n} tokens do not fit the context of {context}"));
        }
        if let Some(t) = self
            .prompt_ids
            .iter()
            .chain(&self.output_ids)
            .find(|&&t| t as usize >= vocab)
        {
            return bad(format!("token id {t} is outside the vocabulary of {vocab}"));
        }
        if !self.reward.is_finite() || self.logprobs.iter().any(|l| !l.is_finite()) {
            return bad("a reward or logprob is not a finite number".into());
        }
        Ok(())
    }
}

/// Group-normalised advantages, one per sample.
pub fn advantages(samples: &[Sample]) -> Vec<f32> {
    let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in samples {
        groups.entry(&s.group).or_default().push(s.reward);
    }
    let stats: BTreeMap<&str, (f64, f64)> = groups
        .into_iter()
        .map(|(g, r)| {
            let n = r.len() as f64;
            let mean = r.iter().sum::<f64>() / n;
            let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            (g, (mean, var.sqrt()))
        })
        .collect();
    samples
        .iter()
        .map(|s| {
            let (mean, std) = stats[s.group.as_str()];
            if std < 1e-9 {
                0.0
            } else {
                ((s.reward - mean) / (std + 1e-4)) as f32
            }
        })
        .collect()
}

/// Sequences packed for teacher forcing: inputs `[B, L]`, targets `[B, L, 1]` and a mask
/// `[B, L]` that is 1 on the output tokens to learn from.
pub struct Packed {
    /// Input ids (the sequence without its last token), right-padded with 0.
    pub inputs: Tensor,
    /// Target ids (the sequence without its first token).
    pub targets: Tensor,
    /// 1.0 where the target is a kept output token.
    pub mask: Tensor,
    /// The mask as numbers (row-major), for reading results back.
    pub mask_host: Vec<f32>,
    /// Row width `L`.
    pub width: usize,
}

/// Packs `(prompt, output, per-output-token mask)` triples.
pub fn pack(rows: &[(&[u32], &[u32], &[u8])]) -> Result<Packed> {
    let width = rows
        .iter()
        .map(|(p, o, _)| p.len() + o.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (p, o, m) in rows {
        let seq: Vec<u32> = p.iter().chain(o.iter()).copied().collect();
        let n = seq.len() - 1;
        for i in 0..width {
            inputs.push(if i < n { seq[i] } else { 0 });
            targets.push(if i < n { seq[i + 1] } else { 0 });
            // Target i is output token i + 1 - prompt_len.
            let keep = i < n && i + 1 >= p.len() && {
                let k = i + 1 - p.len();
                m.is_empty() || m.get(k).copied().unwrap_or(0) != 0
            };
            mask.push(if keep { 1.0f32 } else { 0.0 });
        }
    }
    let b = rows.len();
    let t = PolicyError::tensor("packing a batch");
    let build = || -> candle_core::Result<Packed> {
        Ok(Packed {
            inputs: Tensor::from_vec(inputs, (b, width), &Device::Cpu)?,
            targets: Tensor::from_vec(targets, (b, width, 1), &Device::Cpu)?,
            mask: Tensor::from_vec(mask.clone(), (b, width), &Device::Cpu)?,
            mask_host: mask.clone(),
            width,
        })
    };
    build().map_err(t)
}

/// The logprob of each target token `[B, L]` under `policy` at `temperature`.
pub fn token_logprobs(policy: &Policy, packed: &Packed, temperature: f64) -> Result<Tensor> {
    let lp = policy.log_probs(&packed.inputs, temperature)?;
    lp.gather(&packed.targets, D::Minus1)
        .and_then(|t| t.squeeze(D::Minus1))
        .map_err(PolicyError::tensor("gathering target logprobs"))
}

/// Loss settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpoConfig {
    /// The ratio is clipped to `[1 - clip_eps, 1 + clip_eps]`.
    pub clip_eps: f64,
    /// The sampling temperature the server used (the logprobs are of that distribution).
    pub temperature: f64,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            clip_eps: 0.2,
            temperature: 1.0,
        }
    }
}

/// The loss of a batch and what it saw.
pub struct Loss {
    /// The scalar loss (differentiable).
    pub loss: Tensor,
    /// The recomputed logprob of every kept output token, per sample, in order.
    pub recomputed: Vec<Vec<f32>>,
    /// Kept tokens.
    pub tokens: usize,
    /// Share of kept tokens whose ratio was clipped.
    pub clipped: f64,
}

/// The GRPO loss of `samples` with advantages `adv`.
pub fn loss(policy: &Policy, samples: &[Sample], adv: &[f32], cfg: &GrpoConfig) -> Result<Loss> {
    let rows: Vec<(&[u32], &[u32], &[u8])> = samples
        .iter()
        .map(|s| (&s.prompt_ids[..], &s.output_ids[..], &s.loss_mask[..]))
        .collect();
    let packed = pack(&rows)?;
    let w = packed.width;
    // Recorded logprobs laid out like the targets (0 where masked: those terms are dropped).
    let mut old = vec![0f32; samples.len() * w];
    for (b, s) in samples.iter().enumerate() {
        for (k, &lp) in s.logprobs.iter().enumerate() {
            let i = s.prompt_ids.len() - 1 + k;
            if i < w {
                old[b * w + i] = lp;
            }
        }
    }
    let t = PolicyError::tensor("the GRPO loss");
    let new = token_logprobs(policy, &packed, cfg.temperature)?;
    let build = || -> candle_core::Result<(Tensor, Vec<f32>, f64)> {
        let old = Tensor::from_vec(old, (samples.len(), w), &Device::Cpu)?;
        let adv = Tensor::from_vec(adv.to_vec(), (samples.len(), 1), &Device::Cpu)?;
        // Masked positions: force the log-ratio to 0 so exp never overflows on padding.
        let log_ratio = ((&new - &old)? * &packed.mask)?;
        let ratio = log_ratio.exp()?;
        let s1 = ratio.broadcast_mul(&adv)?;
        let clipped = ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)?;
        let s2 = clipped.broadcast_mul(&adv)?;
        let obj = s1.minimum(&s2)?;
        let kept = packed.mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
        let loss = ((obj * &packed.mask)?.sum_all()? * (-1.0 / f64::from(kept)))?;
        let was_clipped = ((ratio - clipped)?
            .abs()?
            .gt(1e-6)?
            .to_dtype(candle_core::DType::F32)?
            * &packed.mask)?
            .sum_all()?
            .to_scalar::<f32>()?;
        let new_host = new.flatten_all()?.to_vec1::<f32>()?;
        Ok((loss, new_host, f64::from(was_clipped / kept)))
    };
    let (loss, new_host, clipped) = build().map_err(t)?;
    let mut recomputed = Vec::with_capacity(samples.len());
    let mut tokens = 0;
    for (b, s) in samples.iter().enumerate() {
        let mut r = Vec::with_capacity(s.output_ids.len());
        for k in 0..s.output_ids.len() {
            let i = s.prompt_ids.len() - 1 + k;
            r.push(new_host[b * w + i]);
            if packed.mask_host[b * w + i] != 0.0 {
                tokens += 1;
            }
        }
        recomputed.push(r);
    }
    Ok(Loss {
        loss,
        recomputed,
        tokens,
        clipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(group: &str, reward: f64) -> Sample {
        Sample {
            group: group.into(),
            prompt_ids: vec![0, 2],
            output_ids: vec![3, 1],
            logprobs: vec![-1.0, -1.0],
            loss_mask: vec![],
            reward,
            version: 0,
        }
    }

    #[test]
    fn advantages_are_z_scores_within_each_group_and_zero_for_a_flat_group() {
        let a = advantages(&[s("x", 1.0), s("x", 0.0), s("y", 0.5), s("y", 0.5)]);
        assert!(
            (a[0] - 1.0).abs() < 1e-3 && (a[1] + 1.0).abs() < 1e-3,
            "{a:?}"
        );
        assert_eq!(&a[2..], &[0.0, 0.0]);
    }

    #[test]
    fn the_mask_keeps_exactly_the_output_tokens() {
        let p = pack(&[
            (&[0, 5, 6], &[7, 1], &[]),
            (&[0, 5], &[9, 8, 1], &[1, 0, 1]),
        ])
        .unwrap();
        assert_eq!(p.width, 4);
        assert_eq!(p.mask_host, vec![0., 0., 1., 1., 0., 1., 0., 1.]);
    }
}
