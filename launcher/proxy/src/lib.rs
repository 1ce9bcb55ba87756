//! fleet-proxy: `fleet proxy`, the OpenAI-compatible proxy forked next to each rollout worker,
//! and its [`router`] over a role's inference servers.
//!
//! An agent program, in any language and with any OpenAI client, talks to the proxy as if it
//! were OpenAI, using a per-session API key; the proxy forwards each request to the worker's
//! inference backend (vLLM, SGLang, llama.cpp, or `fleet mock-llm` in tests) and records every turn for
//! training: the request, the answer, prompt and output token ids, per-token logprobs, the
//! policy version current when the generation started, the reward, and the parent turn. The
//! rollout controller drives it with the admin key: it grants capacity (the staleness gate),
//! starts sessions, pushes policy versions, and exports finished sessions as discounted
//! per-turn training records.
//!
//! It improves on AReaL's gateway in the ways that matter for training and for operators:
//! streams are passed through event by event instead of buffered; a client that disconnects
//! cancels the backend's generation; export waits on a notification instead of polling; every
//! limit (body size, sessions, turns, idle time) refuses with a clear error instead of growing
//! memory; and the admin key is random unless configured, and refused if weak on a
//! non-loopback address.
//!
//! Use it as a library with [`serve`] (the `fleet proxy` command is a thin wrapper):
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleet_proxy::ProxyError> {
//! let mut config = fleet_proxy::ProxyConfig::new("http://127.0.0.1:8000");
//! config.admin_key = Some("a-long-random-admin-key".into());
//! let proxy = fleet_proxy::serve(config).await?;
//! println!("proxy on {}", proxy.addr());
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Routes are listed in `routes`; the fields read from backend answers in `openai`; the export
//! format in [`Trajectory`] and [`TurnExport`].

mod auth;
mod config;
mod errors;
mod export;
mod forward;
mod openai;
mod rawjson;
pub mod router;
mod routes;
mod server;
mod sessions;
mod sse;
mod upstream;

pub use config::random_token;
pub(crate) use config::BackendUrl;
pub use config::{MetricsText, ProxyConfig, MIN_REMOTE_KEY_LEN};
pub use errors::BACKEND_ERROR_HEADER;
pub use errors::{ApiError, ProxyError};
pub use export::{discount_rewards, Trajectory, TurnExport};
pub use forward::{INTERACTION_HEADER, INTERACTION_IDS_HEADER};
pub use server::{serve, ProxyHandle};
pub use sessions::{Endpoint, TurnRecord, TurnStatus};
pub(crate) use upstream::{SendFailure, Upstream};
