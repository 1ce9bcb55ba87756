//! The placement decision alone: `placement::choose` plus the ledger update, for many workers
//! over many simulated nodes, without actors or I/O. Shows the cost per decision and how it
//! grows with the number of nodes (one pass over the nodes per decision: linear).

use super::stats::{fmt, Samples};
use crate::node::resources::{Ledger, NodeResources};
use crate::scheduler::placement::{choose, Policy};
use fleet_actors::{SchedulingSpec, WorkerId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn nodes(n: usize) -> Vec<Ledger> {
    (0..n)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("zone".to_string(), format!("z{}", i % 4));
            Ledger::new(NodeResources {
                cpu_millis: 64_000,
                mem_mib: 512 * 1024,
                gpus: (0..8).collect(),
                port_range: (40000, 40999),
                labels,
            })
        })
        .collect()
}

/// Places `workers` workers (alternating 1-GPU and CPU-only specs) on `n` nodes with
/// `policy`; returns the per-decision samples.
fn run_one(n: usize, workers: usize, policy: Policy) -> Vec<Duration> {
    let mut ledgers = nodes(n);
    let gpu = SchedulingSpec::default().cpu(4.0).gpu(1).mem(16 * 1024);
    let cpu = SchedulingSpec::default().cpu(1.0).mem(1024);
    let mut samples = Vec::with_capacity(workers);
    for i in 0..workers {
        let spec = if i % 2 == 0 { &gpu } else { &cpu };
        let id = WorkerId::new("w", i as u32);
        let t = Instant::now();
        let k = match choose(&ledgers, spec, policy) {
            Ok(k) => k,
            Err(_) => break,
        };
        let gpus = ledgers[k].pick_gpus(spec.gpu);
        let ok = ledgers[k].allocate(&id, spec, &gpus).is_ok();
        samples.push(t.elapsed());
        if !ok {
            break;
        }
    }
    samples
}

/// Runs the placement benchmark and returns its table.
pub fn run(workers: usize, node_counts: &[usize]) -> String {
    let mut out = String::from(
        "| nodes | policy | decisions | p50 / decision | p90 | p99 | mean | total |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for &n in node_counts {
        for policy in [Policy::Pack, Policy::Spread] {
            let samples = run_one(n, workers, policy);
            let total: Duration = samples.iter().sum();
            let count = samples.len().max(1) as u32;
            let s = Samples::new("", samples);
            out.push_str(&format!(
                "| {n} | {policy:?} | {} | {} | {} | {} | {} | {} |\n",
                s.len(),
                fmt(s.p50()),
                fmt(s.pct(90.0)),
                fmt(s.pct(99.0)),
                fmt(total / count),
                fmt(total),
            ));
        }
    }
    out
}
