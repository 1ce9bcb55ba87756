//! Engines every fleet node knows: small, deterministic, and useful for demos, health checks
//! and tests of the runtime itself.
//!
//! * `counter`: `incr(u64) -> u64` adds and returns the total, `get(()) -> u64`. Counts how
//!   often it really ran, which is how request-id deduplication is tested.
//! * `echo`: `echo(T) -> T` for any payload (returns the argument bytes unchanged),
//!   `len(()) -> u64` the byte length of the arguments.
//! * `sleep`: `sleep(u64 ms) -> u64` blocks its engine thread, to show that health and status
//!   are answered while an engine call is running; `fail(String)` returns that error;
//!   `fail_long(u64 n)` returns an error message of `n` bytes (at most 64 MiB);
//!   `panic(String)` panics (the worker survives and reports it).

use super::{Engine, EngineCall, EngineError, EngineRegistry};
use crate::payload::Payload;
use std::time::Duration;

/// The `counter` engine.
#[derive(Debug, Default)]
pub struct Counter {
    total: u64,
    runs: u64,
}

impl Engine for Counter {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "incr" => call.handle(|by: u64| {
                self.runs += 1;
                self.total = self.total.saturating_add(by);
                Ok(self.total)
            }),
            "get" => call.reply(&self.total),
            "runs" => call.reply(&self.runs),
            _ => Err(call.unknown_method()),
        }
    }
}

/// The `echo` engine.
#[derive(Debug, Default)]
pub struct Echo;

impl Engine for Echo {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "echo" => Ok(call.args().clone()),
            "len" => call.reply(&(call.args().len() as u64)),
            "meta" => call.reply(call.rpc_meta()),
            "env" => call.reply(call.env()),
            _ => Err(call.unknown_method()),
        }
    }
}

/// The `sleep` engine.
#[derive(Debug, Default)]
pub struct Sleeper;

impl Engine for Sleeper {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "sleep" => call.handle(|ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(ms)
            }),
            "fail" => {
                let msg: String = call.decode()?;
                Err(EngineError::Failed(msg))
            }
            "fail_long" => {
                // An error of `n` bytes (at most 64 MiB), for tests of the size guard.
                let n: u64 = call.decode()?;
                let n = usize::try_from(n.min(64 << 20)).unwrap_or(0);
                Err(EngineError::Failed("x".repeat(n)))
            }
            "panic" => {
                let msg: String = call.decode()?;
                panic!("{msg}");
            }
            _ => Err(call.unknown_method()),
        }
    }
}

/// A registry with `counter`, `echo` and `sleep`.
pub fn registry() -> EngineRegistry {
    let mut r = EngineRegistry::new();
    r.register_default::<Counter>("counter")
        .register_default::<Echo>("echo")
        .register_default::<Sleeper>("sleep");
    r
}
