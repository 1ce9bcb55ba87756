//! `grpo-trainer` on a fleet node: `fleet_policy`'s GRPO trainer engine, with each new version's
//! weights put into the node's object store (the data plane) so the coordinator can hand them
//! to inference servers on any node.
//!
//! The engine is the policy crate's [`GrpoTrainer`] unchanged (every method of it answers as
//! documented there); this wrapper adds one method:
//!
//! - `train_batch_to_store(TrainBatch) -> StoredStep`: one optimizer step
//!   (`GrpoTrainer::train_batch`), then the weights file is put into the node's store as
//!   `weights-v<version>.safetensors` (and the file written by the step removed). Without a
//!   store the file stays in `out_dir` and `object` is `None`. A repeated request id is
//!   answered from the trainer's record with the same object: the step is not applied twice.

use crate::store::{ObjectRef, PutOptions, Store};
use fleet_actors::{Engine, EngineCall, EngineError, EngineInit, EngineRegistry, Payload};
use fleet_policy::engine::{GrpoTrainer, TrainBatch, TrainReport, TrainerConfig, ENGINE_TYPE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What `train_batch_to_store` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredStep {
    /// The trainer's report (`path` is the file in the store, or in `out_dir` without one).
    pub report: TrainReport,
    /// The store object holding the weights, when the node has a store.
    pub object: Option<ObjectRef>,
}

/// How long a version's weights object lives in the store unless deleted first.
const WEIGHTS_TTL: Duration = Duration::from_secs(3600);

/// The node's `grpo-trainer`.
#[derive(Debug)]
pub struct StoredGrpoTrainer {
    inner: GrpoTrainer,
    objects: BTreeMap<u64, (ObjectRef, std::path::PathBuf)>,
}

impl StoredGrpoTrainer {
    fn train_to_store(
        &mut self,
        b: TrainBatch,
        store: Option<Store>,
        owner: &str,
    ) -> Result<StoredStep, EngineError> {
        let mut report = self.inner.train_batch(b)?;
        if report.replayed {
            let object = self.objects.get(&report.version).map(|(o, path)| {
                report.path = path.clone();
                o.clone()
            });
            return Ok(StoredStep { report, object });
        }
        let Some(store) = store else {
            return Ok(StoredStep {
                report,
                object: None,
            });
        };
        let v = report.version;
        let opts = PutOptions::default().owner(owner).ttl(WEIGHTS_TTL);
        let failed = |e: crate::store::StoreError| {
            EngineError::failed(format!(
                "putting the weights of version {v} into the node's store: {e}"
            ))
        };
        let blocking = store.blocking();
        let obj = blocking
            .put_file(&format!("weights-v{v}.safetensors"), &report.path, &opts)
            .map_err(failed)?;
        // The object's own file (same node: no copy).
        let path = blocking.fetch_to_local(&obj, None).map_err(failed)?;
        let _ = std::fs::remove_file(&report.path);
        if let Some(d) = report.path.parent() {
            let _ = std::fs::remove_dir(d); // only if nothing else is in it
        }
        report.path = path.clone();
        self.objects.insert(v, (obj.clone(), path));
        while self.objects.len() > fleet_policy::engine::REPLAY_RECORDS {
            self.objects.pop_first();
        }
        Ok(StoredStep {
            report,
            object: Some(obj),
        })
    }
}

impl Engine for StoredGrpoTrainer {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "train_batch_to_store" => {
                let store = Store::for_engine(call.env()).ok();
                let owner = call.worker().to_string();
                call.handle(|b: TrainBatch| self.train_to_store(b, store, &owner))
            }
            _ => self.inner.call(call),
        }
    }
}

/// Registers `grpo-trainer` (constructor arguments: a [`TrainerConfig`]) in place of the policy
/// crate's plain one.
pub fn register(r: &mut EngineRegistry) {
    r.register(ENGINE_TYPE, |init: &EngineInit| {
        Ok(StoredGrpoTrainer {
            inner: GrpoTrainer::new(init.args::<TrainerConfig>()?)?,
            objects: BTreeMap::new(),
        })
    });
}
