//! `fleet mock-llm`: a test double of an OpenAI-compatible inference server.
//!
//! It exists so that the proxy, the launcher and rollout code can be tested and demonstrated
//! without a GPU: it speaks the parts of the OpenAI API an RL rollout uses
//! (`/v1/chat/completions`, `/v1/completions`, streamed or not, `/v1/models`, `/health`), and
//! answers like vLLM does when asked for token ids (`"return_token_ids": true`) and logprobs.
//! Its "model" is a deterministic toy (see `tokenizer`): the same seed and request always give
//! the same tokens and logprobs. Latency, token rate and failures (503s, dropped connections)
//! are configurable, and `GET /stats` exposes counters (requests, streams started, completed,
//! cancelled) through which tests observe what reached the backend.
//!
//! It also serves SGLang's and vLLM's weight-update and pause routes (see `control`): its
//! outputs are a deterministic function of the weights file it loaded, and every answer's
//! `system_fingerprint` names that file's version (`fleet-mock-v<N>-<hash>`), so a test can
//! check that each recorded turn's version is the version of the weights that generated it.
//!
//! Real deployments point `fleet proxy --backend` at vLLM or SGLang instead.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleet_mock_llm::MockError> {
//! let mock = fleet_mock_llm::serve(Default::default()).await?;
//! println!("mock on {}", mock.addr());
//! mock.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod control;
mod gate;
mod request;
mod respond;
mod server;
mod stats;
pub mod tokenizer;
pub mod weights;

pub use config::{FailMode, MockConfig, MockError};
pub use server::{serve, MockHandle};
pub use stats::{MockStats, StatsSnapshot};
