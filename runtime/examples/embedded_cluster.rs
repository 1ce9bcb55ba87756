//! A Rust program that embeds fleet: start the single-node cluster in this process, register an
//! engine type of its own, create workers, call them, and tear down.
//!
//! Run it with `cargo run --example embedded_cluster -p fleet-runtime`.

use fleet_actors::{CallOptions, Engine, EngineCall, EngineError, Job, Payload, SchedulingSpec};
use fleet_runtime::Cluster;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A toy "policy" engine: keeps a weight vector and scores inputs against it.
struct Scorer {
    weights: Vec<f32>,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct Init {
    dim: usize,
}

#[derive(Serialize, Deserialize)]
struct Update {
    weights: Vec<f32>,
    version: u64,
}

impl Engine for Scorer {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "score" => call.handle(|x: Vec<f32>| {
                if x.len() != self.weights.len() {
                    return Err(EngineError::BadArgs(format!(
                        "input has {} values, the model has {}",
                        x.len(),
                        self.weights.len()
                    )));
                }
                Ok(x.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f32>())
            }),
            "update_weights" => call.handle(|u: Update| {
                self.weights = u.weights;
                self.version = u.version;
                Ok(self.version)
            }),
            "version" => call.reply(&self.version),
            _ => Err(call.unknown_method()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The embedded cluster, with our engine type registered (and two fake GPUs to place on).
    let cluster = Cluster::local()
        .gpus([0, 1])
        .engine("scorer", |init| {
            let Init { dim } = init.args()?;
            Ok(Scorer {
                weights: vec![1.0; dim],
                version: 0,
            })
        })
        .start()
        .await?;
    let s = cluster.scheduler();

    // 2. Two workers with one GPU each; wait until they answer.
    s.create_workers(Job::new("policy", 2).spec(SchedulingSpec::default().gpu(1)))
        .await?;
    let workers = s.get_workers("policy", Duration::from_secs(5)).await?;

    // 3. An engine on each, then typed calls.
    let opts = CallOptions::default().timeout(Duration::from_secs(5));
    for w in &workers {
        let engine = s
            .create_engine(&w.id, "model", "scorer", &Init { dim: 3 })
            .await?;
        let v: u64 = engine
            .call(
                "update_weights",
                &Update {
                    weights: vec![0.5, 1.0, 2.0],
                    version: 1,
                },
                &opts.clone().request_id(format!("update-v1-{}", w.id)),
            )
            .await?;
        let score: f32 = engine.call("score", &vec![1.0f32, 2.0, 3.0], &opts).await?;
        println!(
            "{} on {} (CUDA_VISIBLE_DEVICES={}): version {v}, score {score}",
            w.id,
            w.node,
            w.env
                .get("CUDA_VISIBLE_DEVICES")
                .map(String::as_str)
                .unwrap_or("-")
        );
    }

    // 4. A typed error: the wrong input size is the caller's mistake, and says so.
    let err = s
        .engine(&workers[0].id, "model")
        .call::<_, f32>("score", &vec![1.0f32], &opts)
        .await
        .unwrap_err();
    println!("as expected: {err}");

    // 5. Teardown: engine destroy hooks, then the workers stop and free their GPUs.
    s.delete_workers(None, false).await?;
    cluster.shutdown().await?;
    Ok(())
}
