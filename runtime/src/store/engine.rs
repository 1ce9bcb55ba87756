//! The built-in `store` engine: a worker's hands on its node's store, so a driver can have
//! objects put and fetched on any node without engine code of its own (and tests and demos
//! can show an [`ObjectRef`] crossing nodes as an engine-call argument).
//!
//! Methods (arguments → result):
//! * `put_pattern` [`PatternArgs`] → [`ObjectRef`]: writes `size` deterministic bytes
//!   ([`fill_pattern`]) straight into the store, like a trainer writing weights;
//! * `put` [`PutArgs`] → [`ObjectRef`]: small bytes sent in the call;
//! * `fetch` [`ObjectRef`] → [`Fetched`]: makes the object a local file and returns its path
//!   with the size and checksum *re-read from that file*;
//! * `read` [`ObjectRef`] → `Vec<u8>` (objects up to [`READ_LIMIT`] bytes);
//! * `delete` [`ObjectId`] → `bool`; `renew` `(ObjectId, Option<u64> ms)` → `()`;
//! * `stats` `()` → [`StoreStats`].

use super::files::checksum_file;
use super::{Checksum, ObjectId, ObjectRef, PutOptions, Store, StoreStats};
use fleet_actors::{Engine, EngineCall, EngineError, EngineRegistry, Payload};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

/// The largest object `read` returns in a call reply.
pub const READ_LIMIT: u64 = 4 << 20;

/// Arguments of `put_pattern`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatternArgs {
    /// The object's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The pattern's seed.
    pub seed: u64,
    /// Its TTL in milliseconds, if any.
    pub ttl_ms: Option<u64>,
}

/// Arguments of `put`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutArgs {
    /// The object's name.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its TTL in milliseconds, if any.
    pub ttl_ms: Option<u64>,
}

/// The result of `fetch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// The local path.
    pub path: String,
    /// The node it is local to.
    pub node: String,
    /// Bytes in the file.
    pub size: u64,
    /// Checksum of the file's bytes.
    pub checksum: Checksum,
}

/// Fills `buf` with the pattern of `seed` at byte `offset` (a multiple of 8): the same bytes
/// for the same seed and position, whoever writes them.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (idx, word) in (offset / 8..).zip(buf.chunks_mut(8)) {
        let mut z = seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let bytes = z.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// Writes `size` pattern bytes into `w` in 1 MiB pieces.
pub fn write_pattern(w: &mut impl Write, seed: u64, size: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        fill_pattern(seed, off, &mut buf[..n]);
        w.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// The `store` engine (stateless: it finds its node's store from the worker env).
#[derive(Debug, Default)]
pub struct StoreEngine;

fn failed(e: impl std::fmt::Display) -> EngineError {
    EngineError::Failed(e.to_string())
}

impl Engine for StoreEngine {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        let store = Store::for_engine(call.env()).map_err(failed)?;
        let owner = call.worker().to_string();
        match call.method() {
            "put_pattern" => call.handle(|a: PatternArgs| {
                let mut opts = PutOptions::default().owner(owner);
                opts.ttl = a.ttl_ms.map(Duration::from_millis);
                let mut w = store.writer(&a.name, Some(a.size), &opts).map_err(failed)?;
                write_pattern(&mut w, a.seed, a.size).map_err(failed)?;
                w.commit().map(|(o, _)| o).map_err(failed)
            }),
            "put" => call.handle(|a: PutArgs| {
                let mut opts = PutOptions::default().owner(owner);
                opts.ttl = a.ttl_ms.map(Duration::from_millis);
                store
                    .blocking()
                    .put_bytes(&a.name, &a.bytes, &opts)
                    .map_err(failed)
            }),
            "fetch" => call.handle(|o: ObjectRef| {
                let path = store.blocking().fetch_to_local(&o, None).map_err(failed)?;
                let (size, checksum) = checksum_file(&path, 4 << 20).map_err(failed)?;
                Ok(Fetched {
                    path: path.display().to_string(),
                    node: store.node().to_string(),
                    size,
                    checksum,
                })
            }),
            "read" => call.handle(|o: ObjectRef| {
                if o.size > READ_LIMIT {
                    return Err(EngineError::BadArgs(format!(
                        "object {} is {} bytes; `read` returns at most {READ_LIMIT}: use `fetch` and read the path",
                        o.id, o.size
                    )));
                }
                let path = store.blocking().fetch_to_local(&o, None).map_err(failed)?;
                std::fs::read(&path).map_err(failed)
            }),
            "delete" => call.handle(|id: ObjectId| Ok(store.delete(&id))),
            "renew" => call.handle(|(id, ms): (ObjectId, Option<u64>)| {
                store
                    .renew(&id, ms.map(Duration::from_millis))
                    .map_err(failed)
            }),
            "stats" => call.reply::<StoreStats>(&store.stats()),
            _ => Err(call.unknown_method()),
        }
    }
}

/// Registers the `store` engine.
pub fn register(registry: &mut EngineRegistry) {
    registry.register("store", |_| Ok(StoreEngine));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_the_same_whatever_the_piece_sizes() {
        let mut whole = vec![0u8; 10_000];
        fill_pattern(7, 0, &mut whole);
        let mut pieces = Vec::new();
        write_pattern(&mut pieces, 7, 10_000).unwrap();
        assert_eq!(whole, pieces);
        let mut tail = vec![0u8; 16];
        fill_pattern(7, 800, &mut tail);
        assert_eq!(&whole[800..816], &tail[..]);
        let mut other = vec![0u8; 16];
        fill_pattern(8, 0, &mut other);
        assert_ne!(&whole[..16], &other[..]);
    }
}
