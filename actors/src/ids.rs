//! Identifiers: workers (`role/index`), nodes (our own stable id, not ractor_cluster's
//! per-connection counter) and request ids for deduplicating non-idempotent calls.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A worker's name: the `index`-th replica of `role`, shown as `role/index`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId {
    /// The role the worker belongs to (`actor`, `rollout`, ...).
    pub role: String,
    /// The replica index inside the role, from 0.
    pub index: u32,
}

impl WorkerId {
    /// Builds `role/index`.
    pub fn new(role: impl Into<String>, index: u32) -> Self {
        WorkerId {
            role: role.into(),
            index,
        }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.index)
    }
}

impl FromStr for WorkerId {
    type Err = String;

    /// Parses `role/index`; the role may itself contain `/`, the index is after the last one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (role, index) = s
            .rsplit_once('/')
            .ok_or_else(|| format!("worker id {s:?} is not of the form role/index"))?;
        if role.is_empty() {
            return Err(format!("worker id {s:?} has an empty role"));
        }
        let index = index
            .parse()
            .map_err(|_| format!("worker id {s:?}: index {index:?} is not a number"))?;
        Ok(WorkerId::new(role, index))
    }
}

/// A node's stable identity: a human name plus a random id drawn when the node process starts,
/// so that a node that restarts under the same name is a different node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// The name given on the command line or derived from the host name.
    pub name: String,
    /// Random per process start.
    pub uid: u64,
}

impl NodeId {
    /// A new id for a node called `name`, with a fresh random uid.
    pub fn generate(name: impl Into<String>) -> Self {
        NodeId {
            name: name.into(),
            uid: rand::random::<u64>() & 0xffff_ffff,
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:08x}", self.name, self.uid)
    }
}

/// The id of one logical call; a repeat of a completed id is answered from the server's record
/// instead of running the method again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random id (128 bits, hex).
    pub fn generate() -> Self {
        RequestId(format!("{:032x}", rand::random::<u128>()))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        RequestId(s.to_string())
    }
}

impl From<String> for RequestId {
    fn from(s: String) -> Self {
        RequestId(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_id_round_trips_through_its_display_form() {
        let id = WorkerId::new("actor", 3);
        assert_eq!(id.to_string(), "actor/3");
        assert_eq!("actor/3".parse::<WorkerId>().unwrap(), id);
        assert_eq!(
            "a/b/7".parse::<WorkerId>().unwrap(),
            WorkerId::new("a/b", 7)
        );
        assert!("actor".parse::<WorkerId>().is_err());
        assert!("actor/x".parse::<WorkerId>().is_err());
        assert!("/1".parse::<WorkerId>().is_err());
    }
}
