//! Engines: the user code a worker hosts, called by method name with serialized arguments.
//!
//! An engine is plain synchronous Rust (`&mut self`): a worker runs its engines' calls one at a
//! time on a thread of its own, the way a GPU engine needs, so an engine never has to be
//! `Sync` and may block. Engines are created by registered type name from an
//! [`EngineRegistry`] the program fills at start-up; nothing is loaded dynamically.
//!
//! ```
//! use fleet_actors::{Engine, EngineCall, EngineError, Payload};
//!
//! #[derive(Default)]
//! struct Counter { n: u64 }
//!
//! impl Engine for Counter {
//!     fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
//!         match call.method() {
//!             "incr" => call.handle(|by: u64| { self.n += by; Ok(self.n) }),
//!             "get" => call.reply(&self.n),
//!             _ => Err(call.unknown_method()),
//!         }
//!     }
//! }
//! ```

pub mod builtin;
mod registry;

pub use registry::{EngineFactory, EngineRegistry};

use crate::ids::WorkerId;
use crate::payload::Payload;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an engine method can fail with; the worker adds where (worker, engine, method).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The engine has no such method.
    #[error("no such method")]
    MethodNotFound,
    /// The arguments did not decode into what the method takes.
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// The method ran and failed.
    #[error("{0}")]
    Failed(String),
}

impl EngineError {
    /// A [`EngineError::Failed`] from anything displayable.
    pub fn failed(msg: impl std::fmt::Display) -> Self {
        EngineError::Failed(msg.to_string())
    }
}

/// Everything an engine is created with.
#[derive(Clone, Debug)]
pub struct EngineInit {
    /// The hosting worker.
    pub worker: WorkerId,
    /// The engine's name on that worker.
    pub name: String,
    /// Constructor arguments, as sent by the caller.
    pub args: Payload,
    /// The worker's environment (its spec's env, plus `set_env` and `CUDA_VISIBLE_DEVICES`).
    pub env: BTreeMap<String, String>,
}

impl EngineInit {
    /// Decodes the constructor arguments.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, EngineError> {
        self.args
            .decode()
            .map_err(|e| EngineError::BadArgs(e.to_string()))
    }
}

/// A worker's `configure` request: its role, its rank in the role, and role-specific config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Configure {
    /// The role.
    pub role: String,
    /// The worker's rank (index) in the role.
    pub rank: u32,
    /// Role-specific configuration, decoded by each engine as it needs.
    pub config: Payload,
}

/// One call of an engine method: its name, its arguments and the caller's metadata.
#[derive(Debug)]
pub struct EngineCall<'a> {
    method: &'a str,
    args: &'a Payload,
    rpc_meta: &'a BTreeMap<String, String>,
    env: &'a BTreeMap<String, String>,
    worker: &'a WorkerId,
}

impl<'a> EngineCall<'a> {
    /// Builds a call (used by workers, and by tests that drive an engine directly).
    pub fn new(
        method: &'a str,
        args: &'a Payload,
        rpc_meta: &'a BTreeMap<String, String>,
        env: &'a BTreeMap<String, String>,
        worker: &'a WorkerId,
    ) -> Self {
        EngineCall {
            method,
            args,
            rpc_meta,
            env,
            worker,
        }
    }
    /// The method name.
    pub fn method(&self) -> &str {
        self.method
    }
    /// The raw arguments.
    pub fn args(&self) -> &Payload {
        self.args
    }
    /// The caller's `rpc_meta`, forwarded unchanged.
    pub fn rpc_meta(&self) -> &BTreeMap<String, String> {
        self.rpc_meta
    }
    /// The worker's environment (process environment is shared by all workers of a node and is
    /// never changed by fleet: read configuration from here).
    pub fn env(&self) -> &BTreeMap<String, String> {
        self.env
    }
    /// The hosting worker.
    pub fn worker(&self) -> &WorkerId {
        self.worker
    }
    /// Decodes the arguments as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, EngineError> {
        self.args
            .decode()
            .map_err(|e| EngineError::BadArgs(e.to_string()))
    }
    /// Encodes `value` as the reply, with the codec the arguments came in.
    pub fn reply<T: Serialize + ?Sized>(&self, value: &T) -> Result<Payload, EngineError> {
        Payload::encode(self.args.codec, value).map_err(|e| EngineError::Failed(e.to_string()))
    }
    /// Decodes the arguments, runs `f`, encodes its result: the usual shape of a method.
    pub fn handle<Req, Resp, F>(&self, f: F) -> Result<Payload, EngineError>
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: FnOnce(Req) -> Result<Resp, EngineError>,
    {
        let req = self.decode::<Req>()?;
        let resp = f(req)?;
        self.reply(&resp)
    }
    /// The error for a method this engine does not have.
    pub fn unknown_method(&self) -> EngineError {
        EngineError::MethodNotFound
    }
}

/// User code hosted by a worker.
pub trait Engine: Send + 'static {
    /// Runs one method. Called on the worker's engine thread, one call at a time.
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError>;

    /// Per-role/rank set-up (seeding and the like). Default: nothing.
    fn configure(&mut self, _cfg: &Configure) -> Result<(), EngineError> {
        Ok(())
    }

    /// Called once before the worker stops, to release what the engine holds. Default: nothing.
    fn destroy(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}
