//! Sampling: one batched decoding step over sequences of different lengths, temperature
//! sampling, and a whole-batch generator built from them.
//!
//! A step right-pads the sequences into one `[batch, longest]` tensor and reads each row's
//! distribution at its own last position; attention is causal, so the padding never changes a
//! real position's logits. There is no key-value cache: the model and its context are so small
//! that recomputing the sequence is cheap, and it keeps inference and training on one code path
//! (the trainer's recomputed logprobs are the server's to float precision).

use candle_core::{Device, IndexOp, Tensor};

use crate::error::{PolicyError, Result};
use crate::model::Policy;
use crate::tokenizer::EOS;

/// A small, fast, seedable generator (SplitMix64): sampling is reproducible from a seed.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A uniform draw in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A uniform index below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The log-distribution of the next token of each sequence, at `temperature`: one forward
/// pass over the right-padded batch.
pub fn next_token_logprobs(
    policy: &Policy,
    seqs: &[&[u32]],
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    if longest == 0 || seqs.iter().any(|s| s.is_empty()) {
        return Err(PolicyError::Invalid(
            "an empty sequence cannot be extended".into(),
        ));
    }
    let mut flat = Vec::with_capacity(seqs.len() * longest);
    for s in seqs {
        flat.extend_from_slice(s);
        flat.extend(std::iter::repeat_n(0u32, longest - s.len()));
    }
    let ids = Tensor::from_vec(flat, (seqs.len(), longest), &Device::Cpu)
        .map_err(PolicyError::tensor("building a decoding batch"))?;
    let lp = policy.log_probs(&ids, temperature)?;
    seqs.iter()
        .enumerate()
        .map(|(b, s)| {
            lp.i((b, s.len() - 1))
                .and_then(|row| row.to_vec1::<f32>())
                .map_err(PolicyError::tensor("reading next-token logprobs"))
        })
        .collect()
}

/// Draws a token from a log-distribution: greedy at temperature 0, else by inverse CDF.
/// Returns the token and its logprob.
pub fn draw(logprobs: &[f32], temperature: f64, rng: &mut SplitMix) -> (u32, f32) {
    let argmax = || {
        logprobs
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
    };
    if temperature <= 0.0 {
        let (i, v) = argmax();
        return (i as u32, v);
    }
    let u = rng.next_f64();
    let mut acc = 0.0f64;
    for (i, &lp) in logprobs.iter().enumerate() {
        acc += f64::from(lp).exp();
        if u < acc {
            return (i as u32, lp);
        }
    }
    // Rounding left a sliver of mass past the end: the most likely token.
    let (i, v) = argmax();
    (i as u32, v)
}

/// How a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model sampled the end-of-sequence token (which is part of the output).
    Stop,
    /// `max_tokens` or the context ran out.
    Length,
}

/// One sampled completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The prompt it continues.
    pub prompt_ids: Vec<u32>,
    /// Output token ids (ending with `EOS` when `finish` is `Stop`).
    pub output_ids: Vec<u32>,
    /// The logprob of each output token under the sampling distribution.
    pub logprobs: Vec<f32>,
    /// How it ended.
    pub finish: Finish,
}

/// Samples one completion per prompt, all decoded together step by step.
pub fn generate(
    policy: &Policy,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    temperature: f64,
    rng: &mut SplitMix,
) -> Result<Vec<Completion>> {
    let context = policy.config().context;
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut out: Vec<Completion> = prompts
        .iter()
        .map(|p| Completion {
            prompt_ids: p.clone(),
            output_ids: Vec::new(),
            logprobs: Vec::new(),
            finish: Finish::Length,
        })
        .collect();
    let mut active: Vec<usize> = (0..prompts.len())
        .filter(|&i| !prompts[i].is_empty() && prompts[i].len() < context)
        .collect();
    while !active.is_empty() {
        let views: Vec<&[u32]> = active.iter().map(|&i| seqs[i].as_slice()).collect();
        let dists = next_token_logprobs(policy, &views, temperature)?;
        let mut still = Vec::with_capacity(active.len());
        for (&i, d) in active.iter().zip(&dists) {
            let (tok, lp) = draw(d, temperature, rng);
            seqs[i].push(tok);
            out[i].output_ids.push(tok);
            out[i].logprobs.push(lp);
            if tok == EOS {
                out[i].finish = Finish::Stop;
            } else if out[i].output_ids.len() < max_tokens && seqs[i].len() < context {
                still.push(i);
            }
        }
        active = still;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_is_greedy_at_temperature_zero_and_follows_the_distribution_otherwise() {
        let lp = [0.1f32.ln(), 0.7f32.ln(), 0.2f32.ln()];
        let mut rng = SplitMix::new(1);
        assert_eq!(draw(&lp, 0.0, &mut rng).0, 1);
        let mut counts = [0usize; 3];
        for _ in 0..2000 {
            counts[draw(&lp, 1.0, &mut rng).0 as usize] += 1;
        }
        assert!(counts[1] > counts[2] && counts[2] > counts[0], "{counts:?}");
    }
}
