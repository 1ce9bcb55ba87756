//! The mock's configuration and the errors that stop it from starting.

use std::net::SocketAddr;
use std::time::Duration;

/// How an injected failure looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Answer 503 with an OpenAI-shaped error.
    Status503,
    /// Close the connection without answering.
    Drop,
    /// Each failure is a 503 or a drop, half and half.
    #[default]
    Mixed,
}

impl std::str::FromStr for FailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<FailMode, String> {
        match s {
            "503" => Ok(FailMode::Status503),
            "drop" => Ok(FailMode::Drop),
            "mixed" => Ok(FailMode::Mixed),
            other => Err(format!(
                "unknown fail mode {other:?}: use 503, drop or mixed"
            )),
        }
    }
}

/// Everything `fleet mock-llm` and [`super::serve`] need.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Seed of the toy sampler: the same seed and request give the same tokens.
    pub seed: u64,
    /// Delay before the first token.
    pub latency: Duration,
    /// If set, the delay before the first token is drawn per request, uniformly between
    /// `latency` and this (a backend whose requests vary, as real ones do).
    pub latency_max: Option<Duration>,
    /// Token rate; `None` generates instantly.
    pub tokens_per_s: Option<f64>,
    /// Probability in [0, 1] that a completion request fails.
    pub fail_rate: f64,
    /// How failures look.
    pub fail_mode: FailMode,
    /// Tokens generated when the request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Upper bound on `max_tokens`.
    pub max_tokens_limit: u32,
    /// The model name reported by `/v1/models` and used when a request names none.
    pub model: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a generation request is held while the mock is paused (503 after it).
    pub hold_timeout: Duration,
    /// A weights file loaded at start (see `weights`); `None`: the initial weights.
    pub weights: Option<std::path::PathBuf>,
    /// The version of the weights at start (default: from the file name, else 0).
    pub weight_version: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> MockConfig {
        MockConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
            latency: Duration::ZERO,
            latency_max: None,
            tokens_per_s: None,
            fail_rate: 0.0,
            fail_mode: FailMode::Mixed,
            default_max_tokens: 16,
            max_tokens_limit: 4096,
            model: "fleet-mock".into(),
            max_body_bytes: 32 * 1024 * 1024,
            hold_timeout: Duration::from_secs(600),
            weights: None,
            weight_version: None,
        }
    }
}

impl MockConfig {
    pub(crate) fn validate(&self) -> Result<(), MockError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(MockError::BadConfig(format!(
                "fail rate {} is not between 0 and 1",
                self.fail_rate
            )));
        }
        if let Some(t) = self.tokens_per_s {
            if !(t.is_finite() && t > 0.0) {
                return Err(MockError::BadConfig(format!(
                    "tokens per second {t} must be a positive number"
                )));
            }
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_limit {
            return Err(MockError::BadConfig(
                "default max tokens must be between 1 and the max-tokens limit".into(),
            ));
        }
        Ok(())
    }

    /// Delay before the first token of one request.
    pub(crate) fn first_token_delay(&self) -> Duration {
        match self.latency_max {
            Some(max) if max > self.latency => {
                let (lo, hi) = (self.latency.as_micros() as u64, max.as_micros() as u64);
                Duration::from_micros(rand::random_range(lo..=hi))
            }
            _ => self.latency,
        }
    }

    /// Delay between two tokens.
    pub(crate) fn token_delay(&self) -> Duration {
        self.tokens_per_s
            .map(|t| Duration::from_secs_f64(1.0 / t))
            .unwrap_or(Duration::ZERO)
    }
}

/// Why the mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A setting is out of range.
    #[error("invalid mock-llm configuration: {0}")]
    BadConfig(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another port or use --port 0")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--weights` file could not be loaded.
    #[error("cannot load the initial weights: {0}")]
    Weights(#[from] super::weights::WeightsError),
}
