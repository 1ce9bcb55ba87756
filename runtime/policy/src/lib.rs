//! fleet's tiny policy: a character-level transformer on candle that a demo can train with
//! GRPO on 2 CPU cores in minutes, with nothing downloaded.
//!
//! The pieces, one module each:
//! - [`tokenizer`]: a fixed character alphabet (46 tokens) and the chat template;
//! - [`model`]: the transformer ([`Policy`]), seeded initialisation, safetensors save/load;
//! - [`sample`]: batched decoding steps and temperature sampling;
//! - [`task`]: the verifiable tasks (reverse a string, add numbers) and their reward;
//! - [`export`]: the rollout output's episodes as training samples;
//! - [`grpo`]: group-normalised advantages and the clipped-ratio loss;
//! - [`train`]: supervised warm-up and GRPO steps (AdamW), evaluation;
//! - [`engine`]: `grpo-trainer`, the trainer engine an RpcServer worker hosts;
//! - [`server`]: `fleet infer`, the OpenAI-compatible inference server over the policy.
//!
//! candle (Hugging Face's Rust ML crate) was chosen because it is maintained, pure Rust on CPU
//! (no libtorch to install), has autograd, AdamW and safetensors, and builds with default
//! features on this toolchain.

pub mod engine;
pub mod error;
pub mod export;
pub mod grpo;
pub mod model;
pub mod sample;
pub mod server;
pub mod task;
pub mod tokenizer;
pub mod train;

pub use error::{PolicyError, Result};
pub use model::{ModelConfig, Policy};
