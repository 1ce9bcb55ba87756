//! What a caller asks for: a [`Job`] of `replicas` workers of one role, each with a
//! [`SchedulingSpec`] (resources), a [`Strategy`] (where) and a [`WorkerKind`] (what).
//!
//! The kind is always chosen explicitly by the caller. AReaL's Ray launcher guessed it from the
//! command string (`"rpc.rpc_server" not in command`); fleet never does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resources and environment of one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulingSpec {
    /// CPU cores; fractions allowed (accounted in thousandths).
    pub cpu: f64,
    /// Whole GPUs. Each gets an exclusive physical id on its node, exported to the worker as
    /// `CUDA_VISIBLE_DEVICES`.
    pub gpu: u32,
    /// Memory in MiB.
    pub mem: u64,
    /// How many TCP ports to reserve on the worker's node (held until the worker is deleted).
    pub ports: u16,
    /// Environment for the worker's engines and for processes it forks.
    pub env: BTreeMap<String, String>,
}

impl Default for SchedulingSpec {
    fn default() -> Self {
        SchedulingSpec {
            cpu: 0.0,
            gpu: 0,
            mem: 0,
            ports: 0,
            env: BTreeMap::new(),
        }
    }
}

impl SchedulingSpec {
    /// Sets the CPU cores.
    pub fn cpu(mut self, cpu: f64) -> Self {
        self.cpu = cpu;
        self
    }
    /// Sets the GPU count.
    pub fn gpu(mut self, gpu: u32) -> Self {
        self.gpu = gpu;
        self
    }
    /// Sets the memory in MiB.
    pub fn mem(mut self, mib: u64) -> Self {
        self.mem = mib;
        self
    }
    /// Sets the number of ports to reserve.
    pub fn ports(mut self, ports: u16) -> Self {
        self.ports = ports;
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
    /// CPU in thousandths of a core, as the ledgers account it.
    pub fn cpu_millis(&self) -> u64 {
        if self.cpu.is_finite() && self.cpu > 0.0 {
            (self.cpu * 1000.0).round() as u64
        } else {
            0
        }
    }
}

/// Where a role's workers go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Strategy {
    /// Each worker is placed on its own merits (the scheduler's packing policy).
    #[default]
    Separate,
    /// Next to the workers of `target`: worker `i` of this role goes with worker `i` of the
    /// target.
    Colocate {
        /// The role to colocate with.
        target: String,
        /// `false`: this role *is* the target's workers under another name (same actors, no new
        /// resources). `true`: a new worker is started on the target worker's node, with gpu 0
        /// and the target's `CUDA_VISIBLE_DEVICES`.
        fork: bool,
    },
}

/// How an in-process RPC server worker is hosted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RpcServerSpec {}

/// What a worker is. Chosen by the caller, never inferred.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerKind {
    /// An actor that hosts named engines in the node process and calls them by method name.
    RpcServer(RpcServerSpec),
}

impl Default for WorkerKind {
    fn default() -> Self {
        WorkerKind::RpcServer(RpcServerSpec::default())
    }
}

impl WorkerKind {
    /// A short name for logs and tables.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerKind::RpcServer(_) => "rpc-server",
        }
    }
}

/// A request for `replicas` workers of one role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The role name; workers are `role/0 .. role/(replicas-1)`.
    pub role: String,
    /// How many workers.
    pub replicas: u32,
    /// One spec for all replicas, or exactly one per replica.
    pub specs: Vec<SchedulingSpec>,
    /// Where they go.
    pub strategy: Strategy,
    /// What they are.
    pub kind: WorkerKind,
}

impl Job {
    /// `replicas` RPC-server workers of `role`, no resources, placed separately.
    pub fn new(role: impl Into<String>, replicas: u32) -> Self {
        Job {
            role: role.into(),
            replicas,
            specs: vec![SchedulingSpec::default()],
            strategy: Strategy::Separate,
            kind: WorkerKind::default(),
        }
    }
    /// Uses `spec` for every replica.
    pub fn spec(mut self, spec: SchedulingSpec) -> Self {
        self.specs = vec![spec];
        self
    }
    /// Uses one spec per replica (must have `replicas` entries).
    pub fn specs(mut self, specs: Vec<SchedulingSpec>) -> Self {
        self.specs = specs;
        self
    }
    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Colocates with `target` (`fork = false`: share its workers; `true`: start new ones next
    /// to them).
    pub fn colocate(mut self, target: impl Into<String>, fork: bool) -> Self {
        self.strategy = Strategy::Colocate {
            target: target.into(),
            fork,
        };
        self
    }
    /// Sets the worker kind.
    pub fn kind(mut self, kind: WorkerKind) -> Self {
        self.kind = kind;
        self
    }
    /// The spec of replica `i`, if the job is well formed.
    pub fn spec_for(&self, i: u32) -> Option<&SchedulingSpec> {
        if self.specs.len() == 1 {
            self.specs.first()
        } else {
            self.specs.get(i as usize)
        }
    }
}
