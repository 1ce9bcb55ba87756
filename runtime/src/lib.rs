//! fleet-runtime: the cluster, node agent, scheduler, the user-facing API and the `fleet` binary.
//!
//! Start here: [`Cluster::local`] starts an embedded single-node cluster in this process and
//! gives a [`Scheduler`] with AReaL's API shape: `create_workers`, `get_workers`,
//! `create_engine`, `call`, `set_worker_env`, `delete_workers`. The README's example, run as a
//! test:
//!
//! ```
//! use fleet_actors::{CallOptions, Engine, EngineCall, EngineError, Job, Payload, SchedulingSpec};
//! use fleet_runtime::Cluster;
//! use std::time::Duration;
//!
//! /// Your engine: called by method name, one call at a time, on a thread of its worker's own.
//! struct Scorer {
//!     weights: Vec<f32>,
//! }
//!
//! impl Engine for Scorer {
//!     fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
//!         match call.method() {
//!             "score" => call.handle(|x: Vec<f32>| {
//!                 Ok(x.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f32>())
//!             }),
//!             _ => Err(call.unknown_method()),
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let cluster = Cluster::local() // node server + node agent + scheduler, in-process
//!         .gpus([0, 1]) // or CUDA_VISIBLE_DEVICES / the driver's GPUs
//!         .engine("scorer", |init| Ok(Scorer { weights: init.args()? })) // engine types by name
//!         .start()
//!         .await?;
//!     let s = cluster.scheduler();
//!     let job = Job::new("policy", 2).spec(SchedulingSpec::default().gpu(1));
//!     s.create_workers(job).await?;
//!     s.get_workers("policy", Duration::from_secs(5)).await?; // all answer, or a typed error
//!     let w = "policy/0".parse()?;
//!     let engine = s.create_engine(&w, "model", "scorer", &vec![0.5f32; 3]).await?;
//!     let x = vec![1.0f32, 2.0, 3.0];
//!     let score: f32 = engine.call("score", &x, &CallOptions::default()).await?;
//!     assert_eq!(score, 3.0);
//!     cluster.shutdown().await?; // destroy hooks, then stop; no child left
//!     Ok(())
//! }
//! ```

pub mod attach;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod dashboard;
pub mod duration;
pub mod exe;
pub mod jobs;
pub mod membership;
pub mod metrics;
pub mod node;
pub(crate) mod remote;
pub mod rollout;
pub mod rpc_http;
pub mod scheduler;
pub mod secrets;
pub mod store;
pub mod weights;

pub use attach::{ConnectBuilder, ConnectedCluster};
pub use cluster::{Cluster, LocalBuilder};
pub use membership::{MemberEvent, MembershipConfig, StatusReport};
pub use scheduler::{EngineHandle, Scheduler, WorkerInfo, WorkerState};

#[cfg(test)]
mod readme {
    /// The Rust code of a fenced block that starts with `open`, up to its closing fence.
    fn block(text: &str, prefix: &str, open: &str) -> String {
        let mut lines = text
            .lines()
            .map(|l| match l.strip_prefix(prefix) {
                Some(rest) if !prefix.is_empty() => rest.strip_prefix(' ').unwrap_or(rest),
                _ => l,
            })
            .skip_while(|l| *l != open)
            .skip(1);
        let mut out = Vec::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            out.push(l.to_string());
        }
        out.join("\n")
    }

    #[test]
    fn the_readme_shows_the_code_of_the_crate_doc_test() {
        let readme = block(include_str!("../../README.md"), "", "```rust");
        let doc = block(include_str!("lib.rs"), "//!", "```");
        assert!(!readme.is_empty());
        assert_eq!(
            readme, doc,
            "README.md's Rust example and the crate doc-test differ"
        );
    }
}
