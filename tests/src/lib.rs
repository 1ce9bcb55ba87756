//! fleet-tests: the harness that fleet's integration tests use, public so that users can write
//! actor-level integration tests of their own against real processes.
//!
//! Everything here waits with a deadline and cleans up what it started: a [`ChildGuard`] kills
//! its process group when dropped, so a panicking test leaves no process behind.

pub mod cluster;
pub mod engine_suite;
pub mod head_proc;
pub mod http_client;
pub mod jobs_cli;
pub mod listening;
pub mod piped;
pub mod process;
pub mod relay;
pub mod rollout;
pub mod scrape;
pub mod wait;

pub use cluster::{ClusterBuilder, NodeSpec, TestCluster};
pub use engine_suite::{run_engine_suite, WorkerCaller};
pub use http_client::{next_chunk, JsonResponse, TestHttp};
pub use listening::spawn_listening;
pub use piped::{start_listening_server, PipedChild};
pub use process::{fleet_bin, free_port, pid_alive, ChildGuard};
pub use relay::Relay;
pub use wait::wait_until;
