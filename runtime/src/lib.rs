//! fleet-runtime: the cluster, node agent, scheduler, the user-facing API and the `fleet` binary.

pub mod cli;
