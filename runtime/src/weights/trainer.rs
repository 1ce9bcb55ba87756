//! The simulated trainer: an engine (`sim-trainer`) that, per optimizer step, takes as long as a
//! step is told to and writes a weights file of a configurable size for the new version.
//!
//! It stands where a real trainer stands (an RpcServer worker called with `train_step`), so the
//! whole weight path is exercised with real bytes: the file is written to a temporary name,
//! flushed and renamed (a server never loads a half-written file), and its contents are a
//! deterministic function of the version (so `fleet mock-llm`, whose outputs are a function of
//! the file it loaded, generates differently at each version). `train_step` is not idempotent
//! in a real trainer; here it carries the step's version, and a repeated call for a version
//! already written answers from the file on disk without writing again.
//!
//! Methods:
//! - `train_step(TrainStep) -> Trained`: sleeps `step_ms`, writes `dir/weights-v<version>.bin`
//!   of `size` bytes, returns its path and size.

use fleet_actors::{Engine, EngineCall, EngineError, EngineRegistry, Payload};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The engine's type name.
pub const ENGINE_TYPE: &str = "sim-trainer";

/// One optimizer step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainStep {
    /// The version the step produces.
    pub version: u64,
    /// Episodes in the batch (reported, not used).
    pub episodes: u64,
    /// How long the step takes.
    pub step_ms: u64,
    /// The weights file's size in bytes.
    pub size: u64,
    /// Where the weights file goes (a directory on the trainer's node).
    pub dir: PathBuf,
}

/// What a step produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Trained {
    /// The version.
    pub version: u64,
    /// The weights file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
}

/// The path of version `v`'s weights under `dir` (the mock reads the version from the name too).
pub fn weights_path(dir: &Path, v: u64) -> PathBuf {
    dir.join(format!("weights-v{v}.bin"))
}

/// Writes `size` bytes for version `v` (a xorshift stream seeded by the version) to `path`,
/// through a temporary file renamed at the end.
pub fn write_weights(path: &Path, v: u64, size: u64) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    let mut x = v.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The `sim-trainer` engine.
#[derive(Debug, Default)]
pub struct SimTrainer {
    steps: u64,
}

impl Engine for SimTrainer {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "train_step" => call.handle(|s: TrainStep| {
                let path = weights_path(&s.dir, s.version);
                let done = std::fs::metadata(&path)
                    .map(|m| m.len() == s.size)
                    .unwrap_or(false);
                if !done {
                    std::thread::sleep(Duration::from_millis(s.step_ms.min(3_600_000)));
                    write_weights(&path, s.version, s.size).map_err(|e| {
                        EngineError::failed(format!(
                            "writing the weights of version {} to {}: {e}",
                            s.version,
                            path.display()
                        ))
                    })?;
                    self.steps += 1;
                }
                Ok(Trained {
                    version: s.version,
                    path,
                    size: s.size,
                })
            }),
            "steps" => call.reply(&self.steps),
            _ => Err(call.unknown_method()),
        }
    }
}

/// The engines every fleet node registers: the built-in ones, `sim-trainer` and
/// `grpo-trainer` (the real GRPO trainer of `fleet_policy::engine`).
pub fn node_registry() -> EngineRegistry {
    let mut r = fleet_actors::engine::builtin::registry();
    register(&mut r);
    fleet_policy::engine::register(&mut r);
    r
}

/// Adds `sim-trainer` to a registry.
pub fn register(r: &mut EngineRegistry) {
    r.register_default::<SimTrainer>(ENGINE_TYPE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_a_function_of_the_version_and_have_the_size_asked_for() {
        let d = std::env::temp_dir().join(format!("fleet-sim-trainer-{}", std::process::id()));
        let a = weights_path(&d, 1);
        let b = weights_path(&d, 2);
        write_weights(&a, 1, 100_003).unwrap();
        write_weights(&b, 2, 100_003).unwrap();
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(x.len(), 100_003);
        assert_ne!(x, y);
        write_weights(&a, 1, 100_003).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), x);
        let _ = std::fs::remove_dir_all(d);
    }
}
