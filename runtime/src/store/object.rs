//! What names an object across the cluster: its id, and the small, serializable
//! [`ObjectRef`] that travels instead of the bytes (as an engine-call argument, in a message,
//! in a log line).
//!
//! The checksum is XXH3-128 (crate `xxhash-rust`): it guards against truncation and corruption
//! on the way, not against an adversary (peers are authenticated by the store token before
//! they get a byte). XXH3 hashes at memory speed (tens of GB/s with AVX2), so checking every
//! byte costs a few percent of a loopback transfer, where a cryptographic hash such as BLAKE3
//! would take a large share of one of this machine's two cores.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The id of an object: 128 random bits, unique across nodes and restarts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub u128);

impl ObjectId {
    /// A fresh random id.
    pub fn generate() -> Self {
        ObjectId(rand::random::<u128>())
    }

    /// Parses the 32-hex-digit form that [`fmt::Display`] prints (and URLs carry).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(ObjectId)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// An XXH3-128 digest of an object's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checksum(pub u128);

impl Checksum {
    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Checksum(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// Parses the form [`fmt::Display`] prints (`xxh3-128:<32 hex digits>`).
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("xxh3-128:")?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(Checksum)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "xxh3-128:{:032x}", self.0)
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

/// A running checksum, fed chunk by chunk while bytes are written or received.
pub struct Hasher(Box<xxhash_rust::xxh3::Xxh3>);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(Box::new(xxhash_rust::xxh3::Xxh3::new()))
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The checksum of everything fed so far.
    pub fn finish(&self) -> Checksum {
        Checksum(self.0.digest128())
    }
}

/// A reference to an object in some node's store: everything a consumer on any node needs to
/// fetch it and check it, in a few hundred bytes. Pass this (not the bytes) as an engine-call
/// argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Its id.
    pub id: ObjectId,
    /// The name the producer gave it (for people and logs; ids are what is looked up).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The checksum of its bytes.
    pub checksum: Checksum,
    /// Who put it (a worker id, `driver`, ...): for stats and logs.
    pub owner: String,
    /// The node whose store holds the original (`NodeId`'s display form).
    pub node: String,
    /// That store's base URL, `http://HOST:PORT`; the object is at `{url}/v1/objects/{id}`.
    pub url: String,
}

impl ObjectRef {
    /// The URL the object is served at.
    pub fn object_url(&self) -> String {
        format!("{}/v1/objects/{}", self.url.trim_end_matches('/'), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_checksums_round_trip_through_their_text_forms() {
        let id = ObjectId::generate();
        assert_eq!(ObjectId::parse(&id.to_string()), Some(id));
        assert_eq!(ObjectId::parse("xyz"), None);
        assert_eq!(ObjectId::parse(&"g".repeat(32)), None);
        let c = Checksum::of(b"weights");
        assert_eq!(Checksum::parse(&c.to_string()), Some(c));
        assert_eq!(Checksum::parse("md5:00"), None);
    }

    #[test]
    fn a_running_hash_equals_the_one_shot_hash() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::default();
        for chunk in data.chunks(4093) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), Checksum::of(&data));
    }
}
