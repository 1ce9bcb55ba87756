//! A node: one process's share of the cluster, run by its [`agent::NodeAgent`].
//!
//! The agent owns the node's resources ([`resources`], [`ports`]), spawns worker actors when the
//! scheduler asks (ractor_cluster has no remote spawn, so "spawn on node X" is a message to X's
//! agent), forwards calls to its workers without awaiting them, and reports worker deaths.
//! [`directory`] lets an in-process scheduler reach local workers without the agent hop.

pub mod agent;
pub mod directory;
pub mod engines;
pub mod leftovers;
pub mod messages;
pub mod ports;
pub mod resources;
pub mod run_dirs;
pub mod system;
pub mod tombstones;
pub mod worker_logs;

pub use agent::{AgentArgs, NodeAgent};
pub use directory::LocalDirectory;
pub use leftovers::Leftovers;
pub use messages::{AgentMsg, NodeInfo, SpawnRequest, SpawnedWorker, WorkerEvent, WorkerEventKind};
pub use ports::{PortAllocator, PortLease};
pub use resources::{Allocation, Ledger, NodeResources};
