//! The policy: a tiny decoder-only transformer (GPT-2 shaped) on candle, CPU only.
//!
//! Learned token and position embeddings, `layers` pre-norm blocks of causal multi-head
//! attention and a GELU MLP, a final layer norm and an untied output layer. Layer norm and
//! softmax are written with candle's elementary ops (not its fused CPU kernels) so that every
//! operation has a gradient and inference and training run exactly the same arithmetic: the
//! logprobs the server reports and the ones the trainer recomputes agree to float precision.
//!
//! Weights live in a candle `VarMap` and are saved and loaded as safetensors. Random
//! initialisation is a pure function of a seed (a SplitMix stream per parameter name, normal
//! with std 0.02, biases 0, norms 1), so two processes given one seed build identical weights
//! and nothing is ever downloaded. A model directory holds `config.json` ([`ModelConfig`]) and
//! `model.safetensors` (the initial weights, version 0).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::sample::SplitMix;
use crate::tokenizer::VOCAB;

/// The file name of a model directory's config.
pub const CONFIG_FILE: &str = "config.json";
/// The file name of a model directory's initial weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The architecture (and so the shapes of the weights).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Vocabulary size (the tokenizer's).
    pub vocab: usize,
    /// Longest sequence (prompt and completion together).
    pub context: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads (divides `d_model`).
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
}

impl Default for ModelConfig {
    /// 2 layers, 4 heads, width 64, context 32: fast enough on 2 CPU cores for a demo.
    fn default() -> Self {
        ModelConfig {
            vocab: VOCAB,
            context: 32,
            d_model: 64,
            heads: 4,
            layers: 2,
        }
    }
}

impl ModelConfig {
    /// Checks the shapes fit together.
    pub fn validate(&self) -> Result<()> {
        if self.vocab < VOCAB {
            return Err(PolicyError::Invalid(format!(
                "model config: vocab {} is smaller than the tokenizer's {VOCAB}",
                self.vocab
            )));
        }
        if self.heads == 0 || self.d_model == 0 || self.d_model % self.heads != 0 {
            return Err(PolicyError::Invalid(format!(
                "model config: d_model {} must be a positive multiple of heads {}",
                self.d_model, self.heads
            )));
        }
        if self.context < 4 || self.context > 4096 || self.layers == 0 || self.layers > 64 {
            return Err(PolicyError::Invalid(format!(
                "model config: context {} (4..=4096) or layers {} (1..=64) out of range",
                self.context, self.layers
            )));
        }
        Ok(())
    }

    /// Every parameter's name and shape, in a fixed order.
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let (d, v, c) = (self.d_model, self.vocab, self.context);
        let mut p = vec![
            ("wte.weight".to_string(), vec![v, d]),
            ("wpe.weight".to_string(), vec![c, d]),
        ];
        for i in 0..self.layers {
            let b = format!("h.{i}");
            for (name, shape) in [
                ("ln1.weight", vec![d]),
                ("ln1.bias", vec![d]),
                ("attn.c_attn.weight", vec![3 * d, d]),
                ("attn.c_attn.bias", vec![3 * d]),
                ("attn.c_proj.weight", vec![d, d]),
                ("attn.c_proj.bias", vec![d]),
                ("ln2.weight", vec![d]),
                ("ln2.bias", vec![d]),
                ("mlp.fc.weight", vec![4 * d, d]),
                ("mlp.fc.bias", vec![4 * d]),
                ("mlp.proj.weight", vec![d, 4 * d]),
                ("mlp.proj.bias", vec![d]),
            ] {
                p.push((format!("{b}.{name}"), shape));
            }
        }
        p.push(("ln_f.weight".into(), vec![d]));
        p.push(("ln_f.bias".into(), vec![d]));
        p.push(("lm_head.weight".into(), vec![v, d]));
        p
    }

    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(PolicyError::io("reading", &path))?;
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| PolicyError::Io {
            what: "parsing",
            path: path.clone(),
            message: format!("not a model config: {e}"),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Layer norm over the last dimension, from elementary ops (so it has a gradient).
#[derive(Clone, Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(d: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Norm {
            weight: vb.get(d, "weight")?,
            bias: vb.get(d, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_sub(&mean)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        x.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

#[derive(Clone, Debug)]
struct Block {
    ln1: Norm,
    c_attn: Linear,
    c_proj: Linear,
    ln2: Norm,
    fc: Linear,
    proj: Linear,
}

/// The transformer, over weights held in a [`VarMap`].
#[derive(Clone)]
pub struct Policy {
    config: ModelConfig,
    vars: VarMap,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: Norm,
    lm_head: Linear,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("config", &self.config)
            .finish()
    }
}

fn gaussian(rng: &mut SplitMix) -> f32 {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed: a parameter's values do not depend on order.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Policy {
    /// A model with random weights, a pure function of `seed`.
    pub fn init(config: &ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let vars = VarMap::new();
        {
            let mut data = vars
                .data()
                .lock()
                .map_err(|_| PolicyError::Invalid("weights lock poisoned".into()))?;
            for (name, shape) in config.parameters() {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = if name.contains("ln") && name.ends_with(".weight") {
                    vec![1.0; n]
                } else if name.ends_with(".bias") {
                    vec![0.0; n]
                } else {
                    let mut rng = SplitMix::new(name_seed(seed, &name));
                    (0..n).map(|_| 0.02 * gaussian(&mut rng)).collect()
                };
                let t = Tensor::from_vec(values, shape, &Device::Cpu)
                    .map_err(PolicyError::tensor(format!("initialising {name}")))?;
                let var = Var::from_tensor(&t)
                    .map_err(PolicyError::tensor(format!("initialising {name}")))?;
                data.insert(name, var);
            }
        }
        Self::build(config.clone(), vars)
    }

    /// A model with the weights of a safetensors file (every parameter must be there).
    pub fn load(config: &ModelConfig, path: &Path) -> Result<Self> {
        let mut p = Self::init(config, 0)?;
        p.load_weights(path)?;
        Ok(p)
    }

    /// Replaces the weights with those of a safetensors file.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(PolicyError::Io {
                what: "loading weights from",
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        self.vars.load(path).map_err(|e| PolicyError::Io {
            what: "loading weights from",
            path: path.to_path_buf(),
            message: format!("{e} (is it a safetensors file of this model config?)"),
        })
    }

    /// An independent copy (its own variables: training one does not change the other).
    pub fn deep_clone(&self) -> Result<Self> {
        let vars = VarMap::new();
        {
            let src = self
                .vars
                .data()
                .lock()
                .map_err(|_| PolicyError::Invalid("weights lock poisoned".into()))?;
            let mut dst = vars
                .data()
                .lock()
                .map_err(|_| PolicyError::Invalid("weights lock poisoned".into()))?;
            for (k, v) in src.iter() {
                let t = v
                    .as_tensor()
                    .copy()
                    .map_err(PolicyError::tensor("copying weights"))?;
                let var = Var::from_tensor(&t).map_err(PolicyError::tensor("copying weights"))?;
                dst.insert(k.clone(), var);
            }
        }
        Self::build(self.config.clone(), vars)
    }

    fn build(config: ModelConfig, vars: VarMap) -> Result<Self> {
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let (d, v, c) = (config.d_model, config.vocab, config.context);
        let t = PolicyError::tensor("building the model");
        let built = (|| -> candle_core::Result<Self> {
            let wte = candle_nn::embedding(v, d, vb.pp("wte"))?;
            let wpe = candle_nn::embedding(c, d, vb.pp("wpe"))?;
            let mut blocks = Vec::with_capacity(config.layers);
            for i in 0..config.layers {
                let b = vb.pp(format!("h.{i}"));
                blocks.push(Block {
                    ln1: Norm::new(d, b.pp("ln1"))?,
                    c_attn: candle_nn::linear(d, 3 * d, b.pp("attn.c_attn"))?,
                    c_proj: candle_nn::linear(d, d, b.pp("attn.c_proj"))?,
                    ln2: Norm::new(d, b.pp("ln2"))?,
                    fc: candle_nn::linear(d, 4 * d, b.pp("mlp.fc"))?,
                    proj: candle_nn::linear(4 * d, d, b.pp("mlp.proj"))?,
                });
            }
            let ln_f = Norm::new(d, vb.pp("ln_f"))?;
            let lm_head = candle_nn::linear_no_bias(d, v, vb.pp("lm_head"))?;
            Ok(Policy {
                config: config.clone(),
                vars: vars.clone(),
                wte,
                wpe,
                blocks,
                ln_f,
                lm_head,
            })
        })();
        built.map_err(t)
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The trainable variables (for an optimizer).
    pub fn vars(&self) -> Vec<Var> {
        // Sorted by name so an optimizer sees them in a fixed order.
        let data = match self.vars.data().lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let mut named: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, v)| v).collect()
    }

    /// Writes the weights to `path` as safetensors, through a temporary file renamed at the end
    /// (a server never loads a half-written file).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(PolicyError::io("creating", d))?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        self.vars.save(&tmp).map_err(|e| PolicyError::Io {
            what: "writing weights to",
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        std::fs::rename(&tmp, path).map_err(PolicyError::io("renaming weights to", path))
    }

    /// Creates a model directory: `config.json` and random `model.safetensors` from `seed`.
    pub fn create_dir(dir: &Path, config: &ModelConfig, seed: u64) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(PolicyError::io("creating", dir))?;
        let p = Self::init(config, seed)?;
        let cfg_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(config)
            .map_err(|e| PolicyError::Invalid(format!("serialising the model config: {e}")))?;
        std::fs::write(&cfg_path, text).map_err(PolicyError::io("writing", &cfg_path))?;
        let w = dir.join(WEIGHTS_FILE);
        p.save(&w)?;
        Ok(w)
    }

    /// Logits `[batch, time, vocab]` for token ids `[batch, time]` (u32). Attention is causal,
    /// so the logits at position `t` depend only on tokens `0..=t`: right padding is harmless.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_inner(ids)
            .map_err(PolicyError::tensor("the model's forward pass"))
    }

    fn forward_inner(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.context {
            candle_core::bail!(
                "sequence of {t} tokens is longer than the context {}",
                self.config.context
            );
        }
        let dev = ids.device();
        let pos = Tensor::arange(0u32, t as u32, dev)?;
        let mut x = self
            .wte
            .forward(ids)?
            .broadcast_add(&self.wpe.forward(&pos)?)?;
        let (d, h) = (self.config.d_model, self.config.heads);
        let hd = d / h;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), dev)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for blk in &self.blocks {
            let a = blk.ln1.forward(&x)?;
            let qkv = blk.c_attn.forward(&a)?.reshape((b, t, 3, h, hd))?;
            let q = qkv
                .narrow(2, 0, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let k = qkv
                .narrow(2, 1, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let v = qkv
                .narrow(2, 2, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let att = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, d))?;
            x = (x + blk.c_proj.forward(&y)?)?;
            let m = blk.ln2.forward(&x)?;
            let m = blk.proj.forward(&blk.fc.forward(&m)?.gelu()?)?;
            x = (x + m)?;
        }
        self.lm_head.forward(&self.ln_f.forward(&x)?)
    }

    /// Log-probabilities `[batch, time, vocab]` under temperature `temperature` (the
    /// distribution the sampler draws from).
    pub fn log_probs(&self, ids: &Tensor, temperature: f64) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        scaled_log_softmax(&logits, temperature).map_err(PolicyError::tensor("log_softmax"))
    }

    /// A stable checksum of the weights (FNV-1a over names and f32 bits, in name order): two
    /// policies with the same checksum have bitwise identical weights.
    pub fn checksum(&self) -> Result<u64> {
        let data = self
            .vars
            .data()
            .lock()
            .map_err(|_| PolicyError::Invalid("weights lock poisoned".into()))?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        for n in names {
            n.bytes().for_each(&mut mix);
            let vals = data[n]
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(PolicyError::tensor("reading weights"))?;
            for v in vals {
                v.to_bits().to_le_bytes().into_iter().for_each(&mut mix);
            }
        }
        Ok(h)
    }
}

/// `log_softmax(logits / temperature)` over the last dimension (temperature 0 counts as 1:
/// greedy decoding reports the model's own distribution).
pub fn scaled_log_softmax(logits: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let x = if (t - 1.0).abs() > f64::EPSILON {
        (logits / t)?
    } else {
        logits.clone()
    };
    let max = x.max_keepdim(D::Minus1)?;
    let x = x.broadcast_sub(&max)?;
    let lse = x.exp()?.sum_keepdim(D::Minus1)?.log()?;
    x.broadcast_sub(&lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialisation_is_a_function_of_the_seed_and_safetensors_round_trip_bitwise() {
        let cfg = ModelConfig::default();
        let a = Policy::init(&cfg, 1).unwrap();
        assert_eq!(
            a.checksum().unwrap(),
            Policy::init(&cfg, 1).unwrap().checksum().unwrap()
        );
        assert_ne!(
            a.checksum().unwrap(),
            Policy::init(&cfg, 2).unwrap().checksum().unwrap()
        );
        let dir = std::env::temp_dir().join(format!("fleet-policy-model-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        a.save(&path).unwrap();
        let b = Policy::load(&cfg, &path).unwrap();
        assert_eq!(a.checksum().unwrap(), b.checksum().unwrap());
        let missing = Policy::load(&cfg, &dir.join("nope.safetensors")).unwrap_err();
        assert!(
            missing.to_string().contains("nope.safetensors"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
