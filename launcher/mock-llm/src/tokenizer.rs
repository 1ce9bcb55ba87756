//! A deterministic toy tokenizer and sampler: NOT a language model, NOT a real tokenizer.
//!
//! Words (whitespace-separated) are hashed to ids with FNV-1a, so the same text always gives
//! the same ids on any machine. Generation picks words from a small fixed vocabulary with a
//! SplitMix64 generator seeded from the server seed and the prompt ids, so the same request to
//! a mock started with the same seed gets the same tokens and logprobs. That is all tests need:
//! realistic-looking, reproducible token ids and logprobs.

/// First id used for hashed words; ids below are the special tokens.
const FIRST_WORD_ID: u32 = 100;
/// Hashed word ids fall in `FIRST_WORD_ID..FIRST_WORD_ID + WORD_ID_SPACE`.
const WORD_ID_SPACE: u32 = 50_000;

/// Words the mock "generates".
const VOCAB: &[&str] = &[
    "the", "agent", "reads", "a", "file", "and", "writes", "tests", "policy", "reward", "turn",
    "token", "model", "answer", "is", "42", "because", "we", "sample", "from", "actor", "worker",
    "proxy", "session", "fleet", "rollout", "trainer", "version", "stale", "fresh", "gradient",
    "step", "loss", "mask", "prompt", "output", "stream", "chunk", "done", "okay", "yes", "no",
    "maybe", "then", "so", "it", "runs", "fast", "slow", "again", "plan", "tool", "call", "result",
    "check", "fix", "bug", "ship", "code", "in", "rust", "on", "loopback", ".",
];

/// The id of a word.
pub fn word_id(word: &str) -> u32 {
    FIRST_WORD_ID + (fnv1a(word.as_bytes()) % u64::from(WORD_ID_SPACE)) as u32
}

/// The special id of a chat role marker (`<|system|>`, `<|user|>`, ...).
pub fn role_id(role: &str) -> u32 {
    match role {
        "system" | "developer" => 1,
        "user" => 2,
        "assistant" => 3,
        "tool" | "function" => 4,
        _ => 5,
    }
}

/// Token ids of a text: one per whitespace-separated word.
pub fn encode(text: &str) -> Vec<u32> {
    text.split_whitespace().map(word_id).collect()
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64: tiny, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One sampled token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// Its id.
    pub id: u32,
    /// Its text, with a leading space after the first token, so texts concatenate.
    pub text: String,
    /// Its logprob.
    pub logprob: f64,
    /// Alternatives with lower logprobs: (id, text, logprob).
    pub top: Vec<(u32, String, f64)>,
}

/// Samples `n` tokens for `prompt` from a generator seeded by `seed`, `prompt` and `stream_no`
/// (the choice index).
pub fn sample(seed: u64, prompt: &[u32], choice: u32, n: usize, top_k: usize) -> Vec<Sampled> {
    let mut h = fnv1a(&seed.to_le_bytes());
    for id in prompt {
        h = (h ^ u64::from(*id)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SplitMix::new(h ^ u64::from(choice).wrapping_mul(0x9e37_79b9));
    (0..n)
        .map(|i| {
            let w = VOCAB[(rng.next_u64() % VOCAB.len() as u64) as usize];
            let text = if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            };
            // Between -0.01 and about -3: a plausible spread for sampled tokens.
            let logprob = -(0.01 + 3.0 * rng.next_f64() * rng.next_f64());
            let top = (0..top_k)
                .map(|k| {
                    let alt = VOCAB[(rng.next_u64() % VOCAB.len() as u64) as usize];
                    let alt_text = if i == 0 {
                        alt.to_string()
                    } else {
                        format!(" {alt}")
                    };
                    (word_id(alt), alt_text, logprob - 0.5 * (k as f64 + 1.0))
                })
                .collect();
            Sampled {
                id: word_id(w),
                text,
                logprob,
                top,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_prompt_give_the_same_tokens() {
        let p = encode("hello there world");
        assert_eq!(p.len(), 3);
        assert_eq!(sample(7, &p, 0, 8, 2), sample(7, &p, 0, 8, 2));
        assert_ne!(sample(7, &p, 0, 8, 0), sample(8, &p, 0, 8, 0));
        assert_ne!(sample(7, &p, 0, 8, 0), sample(7, &p, 1, 8, 0));
        for s in sample(7, &p, 0, 8, 0) {
            assert!(s.logprob < 0.0);
            assert_eq!(s.id, word_id(s.text.trim()));
        }
    }
}
