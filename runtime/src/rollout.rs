//! Rollout: many agent episodes against inference servers, each turn recorded with its tokens,
//! logprobs, policy version and reward, ready for training.
//!
//! - [`worker`]: the rollout worker actor. It owns its inference backend (a command started
//!   through the HTTP launcher, or an attached URL) and an OpenAI-compatible proxy forked next
//!   to it, and runs episodes: grant capacity, start a session, run the agent, set the reward,
//!   end the session, export. The trajectory goes back to the controller as the reply to its
//!   `run_episode` call: no callback server, no polling.
//! - [`agent`]: the agents: a Rust [`Agent`](agent::Agent) trait with a registry (built in:
//!   `multi-turn` and [`answer_agent`]'s `answer`), and external commands in any language
//!   ([`command`]).
//! - [`grpo`]: the GRPO trainer in a job (batches of whole groups); [`learning_curve`]: a
//!   run's `metrics.jsonl` and reward picture.
//! - [`controller`]: dispatches episodes under AReaL's staleness bound, least-loaded first, with
//!   a deadline per episode (cancellation sent to the worker), pause/resume and policy versions.
//! - [`protocol`]: the messages between controller and workers.

pub mod agent;
pub mod answer_agent;
pub mod command;
pub mod controller;
pub mod episode;
pub mod grpo;
pub mod job;
pub mod latency;
pub mod learning_curve;
pub mod output;
pub mod pool;
pub mod protocol;
pub mod run;
pub mod updates;
pub mod worker;

pub use agent::{Agent, AgentContext, AgentOutcome, AgentRegistry};
pub use controller::{Episode, EpisodeTicket, RolloutConfig, RolloutController, RolloutStats};
pub use protocol::{EpisodeOutcome, EpisodeRequest, EpisodeResult};
