//! fleet-launcher: child processes, the retrying HTTP client, the HTTP launcher actor, and the
//! external HTTP services it forks (the OpenAI-compatible proxy and a mock inference server).

pub mod mock_llm;
pub mod proxy;
