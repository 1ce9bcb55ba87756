//! fleet-runtime: the cluster, node agent, scheduler, the user-facing API and the `fleet` binary.
//!
//! Start here: [`Cluster::local`] starts an embedded single-node cluster in this process and
//! gives a [`Scheduler`] with AReaL's API shape: `create_workers`, `get_workers`,
//! `create_engine`, `call`, `set_worker_env`, `delete_workers`.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod duration;
pub mod exe;
pub mod membership;
pub mod node;
pub(crate) mod remote;
pub mod rollout;
pub mod rpc_http;
pub mod scheduler;
pub mod secrets;
pub mod store;
pub mod weights;

pub use cluster::{Cluster, LocalBuilder};
pub use membership::{MemberEvent, MembershipConfig, StatusReport};
pub use scheduler::{EngineHandle, Scheduler, WorkerInfo, WorkerState};
