//! A node's resources and the ledger that accounts for them.
//!
//! The same [`Ledger`] type is the node agent's authoritative record and the scheduler's mirror
//! used for placement decisions: the scheduler picks the node and the concrete GPU ids, the agent
//! checks and records them.

use fleet_actors::{FleetError, SchedulingSpec, WorkerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a node offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeResources {
    /// CPU capacity in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Physical GPU ids.
    pub gpus: Vec<u32>,
    /// Ports handed to workers: `lo..=hi`.
    pub port_range: (u16, u16),
    /// `key=value` labels for placement constraints.
    pub labels: BTreeMap<String, String>,
}

/// What one worker holds on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Allocation {
    /// CPU in thousandths.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Physical GPU ids, exclusive to this worker.
    pub gpus: Vec<u32>,
}

/// Used versus total resources of one node.
#[derive(Clone, Debug)]
pub struct Ledger {
    total: NodeResources,
    used_cpu: u64,
    used_mem: u64,
    free_gpus: BTreeSet<u32>,
    held: BTreeMap<WorkerId, Allocation>,
}

/// The resource that is short, and by how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortage {
    /// `cpu`, `mem` or `gpu`.
    pub resource: &'static str,
    /// Needed versus free, human readable.
    pub detail: String,
}

impl Ledger {
    /// A ledger with nothing used.
    pub fn new(total: NodeResources) -> Self {
        Ledger {
            free_gpus: total.gpus.iter().copied().collect(),
            total,
            used_cpu: 0,
            used_mem: 0,
            held: BTreeMap::new(),
        }
    }

    /// The node's totals.
    pub fn total(&self) -> &NodeResources {
        &self.total
    }

    /// Free CPU (thousandths).
    pub fn free_cpu(&self) -> u64 {
        self.total.cpu_millis.saturating_sub(self.used_cpu)
    }

    /// Free memory (MiB).
    pub fn free_mem(&self) -> u64 {
        self.total.mem_mib.saturating_sub(self.used_mem)
    }

    /// Free GPU count.
    pub fn free_gpu_count(&self) -> usize {
        self.free_gpus.len()
    }

    /// Free GPU ids.
    pub fn free_gpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.free_gpus.iter().copied()
    }

    /// Whether `spec` fits now; the first resource that is short otherwise.
    pub fn fits(&self, spec: &SchedulingSpec) -> Result<(), Shortage> {
        let cpu = spec.cpu_millis();
        if cpu > self.free_cpu() {
            return Err(Shortage {
                resource: "cpu",
                detail: format!(
                    "need {:.3} cores, {:.3} of {:.3} free",
                    cpu as f64 / 1000.0,
                    self.free_cpu() as f64 / 1000.0,
                    self.total.cpu_millis as f64 / 1000.0
                ),
            });
        }
        if spec.mem > self.free_mem() {
            return Err(Shortage {
                resource: "mem",
                detail: format!(
                    "need {} MiB, {} of {} MiB free",
                    spec.mem,
                    self.free_mem(),
                    self.total.mem_mib
                ),
            });
        }
        if spec.gpu as usize > self.free_gpus.len() {
            return Err(Shortage {
                resource: "gpu",
                detail: format!(
                    "need {} GPUs, {} of {} free",
                    spec.gpu,
                    self.free_gpus.len(),
                    self.total.gpus.len()
                ),
            });
        }
        Ok(())
    }

    /// Picks GPU ids for `spec` (lowest free ids first) without recording anything.
    pub fn pick_gpus(&self, count: u32) -> Vec<u32> {
        self.free_gpus
            .iter()
            .take(count as usize)
            .copied()
            .collect()
    }

    /// Records `worker` holding `spec`'s CPU and memory and exactly the GPU ids `gpus`.
    pub fn allocate(
        &mut self,
        worker: &WorkerId,
        spec: &SchedulingSpec,
        gpus: &[u32],
    ) -> Result<Allocation, FleetError> {
        if self.held.contains_key(worker) {
            return Err(FleetError::internal(format!(
                "worker {worker} already holds resources on this node"
            )));
        }
        let short = |s: Shortage| FleetError::InsufficientResources {
            what: worker.to_string(),
            resource: s.resource.to_string(),
            detail: s.detail,
        };
        self.fits(spec).map_err(short)?;
        if gpus.len() != spec.gpu as usize {
            return Err(FleetError::internal(format!(
                "worker {worker}: {} GPU ids given for {} GPUs",
                gpus.len(),
                spec.gpu
            )));
        }
        if let Some(busy) = gpus.iter().find(|g| !self.free_gpus.contains(g)) {
            return Err(FleetError::InsufficientResources {
                what: worker.to_string(),
                resource: "gpu".into(),
                detail: format!("GPU {busy} is not free on this node"),
            });
        }
        for g in gpus {
            self.free_gpus.remove(g);
        }
        let alloc = Allocation {
            cpu_millis: spec.cpu_millis(),
            mem_mib: spec.mem,
            gpus: gpus.to_vec(),
        };
        self.used_cpu += alloc.cpu_millis;
        self.used_mem += alloc.mem_mib;
        self.held.insert(worker.clone(), alloc.clone());
        Ok(alloc)
    }

    /// Returns what `worker` held (nothing if it held nothing).
    pub fn release(&mut self, worker: &WorkerId) -> Option<Allocation> {
        let alloc = self.held.remove(worker)?;
        self.used_cpu = self.used_cpu.saturating_sub(alloc.cpu_millis);
        self.used_mem = self.used_mem.saturating_sub(alloc.mem_mib);
        self.free_gpus.extend(alloc.gpus.iter().copied());
        Some(alloc)
    }

    /// Moves what `from` holds to the key `to` (a worker that is going away but still holds
    /// its resources, so its id can be reused meanwhile). False if `from` held nothing.
    pub fn rekey(&mut self, from: &WorkerId, to: WorkerId) -> bool {
        match self.held.remove(from) {
            Some(alloc) => {
                self.held.insert(to, alloc);
                true
            }
            None => false,
        }
    }

    /// What `worker` holds, if anything.
    pub fn allocation(&self, worker: &WorkerId) -> Option<&Allocation> {
        self.held.get(worker)
    }

    /// Workers holding resources here.
    pub fn holders(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(gpus: Vec<u32>) -> Ledger {
        Ledger::new(NodeResources {
            cpu_millis: 4000,
            mem_mib: 1024,
            gpus,
            port_range: (20000, 20100),
            labels: BTreeMap::new(),
        })
    }

    #[test]
    fn gpus_are_exclusive_until_released() {
        let mut l = node(vec![0, 1, 2]);
        let a = WorkerId::new("a", 0);
        let b = WorkerId::new("a", 1);
        let spec = SchedulingSpec::default().gpu(2);
        let ids = l.pick_gpus(2);
        l.allocate(&a, &spec, &ids).unwrap();
        let err = l.allocate(&b, &spec, &l.pick_gpus(2)).unwrap_err();
        assert!(
            matches!(err, FleetError::InsufficientResources { ref resource, .. } if resource == "gpu"),
            "{err}"
        );
        l.release(&a);
        l.allocate(&b, &spec, &l.pick_gpus(2)).unwrap();
    }

    #[test]
    fn the_short_resource_is_named() {
        let l = node(vec![]);
        assert_eq!(
            l.fits(&SchedulingSpec::default().cpu(5.0))
                .unwrap_err()
                .resource,
            "cpu"
        );
        assert_eq!(
            l.fits(&SchedulingSpec::default().mem(2048))
                .unwrap_err()
                .resource,
            "mem"
        );
        assert_eq!(
            l.fits(&SchedulingSpec::default().gpu(1))
                .unwrap_err()
                .resource,
            "gpu"
        );
    }
}
