//! The cross-node call against a raw ractor_cluster call, by latency *and* CPU.
//!
//! Latency alone hides a path that buys its speed with CPU (a spinning poller makes p50 look
//! good and burns a core). So each kind is charged with the CPU time of every process involved
//! (this caller, the node process and its children: utime + stime from `/proc`), per 10,000
//! calls, and the cores it kept busy during a sequential loop (CPU seconds / wall seconds). Each
//! kind runs in a block of its own (where its CPU can be told apart) and interleaved with the
//! others (where load drift hits all alike); `--load` runs one CPU hog per core meanwhile.
//!
//! The node is this executable again as `fleet bench cluster-peer`, which also hosts the raw
//! baseline actor (see `cluster.rs`), on loopback, over the same ractor_cluster session.

use super::baseline::RawMsg;
use super::cluster::{find_raw, head_with_peers, raw_call};
use super::cpu::{cores, tree_time, Hogs};
use super::stats::{fmt, Samples};
use crate::EngineHandle;
use fleet_actors::{CallOptions, FleetError, Job};
use ractor::ActorRef;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Raw,
    Idempotent,
    Recorded,
}

const KINDS: [Kind; 3] = [Kind::Raw, Kind::Idempotent, Kind::Recorded];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw ractor_cluster call → actor in the node process",
            Kind::Idempotent => "engine call → worker on the node, idempotent",
            Kind::Recorded => "engine call → worker on the node, default (request id recorded)",
        }
    }
}

struct Target {
    raw: ActorRef<RawMsg>,
    engine: EngineHandle,
    idem: CallOptions,
    recorded: CallOptions,
}

impl Target {
    async fn call(&self, kind: Kind) -> Result<(), FleetError> {
        match kind {
            Kind::Raw => raw_call(self.raw.clone()).await.map(drop),
            Kind::Idempotent => self
                .engine
                .call::<_, u64>("incr", &1u64, &self.idem)
                .await
                .map(drop),
            Kind::Recorded => self
                .engine
                .call::<_, u64>("incr", &1u64, &self.recorded)
                .await
                .map(drop),
        }
    }
}

/// CPU of the caller (this process, without the node and the hogs) and of the node tree.
struct Cpu {
    me: u32,
    node: u32,
    exclude: Vec<u32>,
}

impl Cpu {
    fn now(&self) -> (Duration, Duration) {
        let mut ex = self.exclude.clone();
        ex.push(self.node);
        (tree_time(&[self.me], &ex), tree_time(&[self.node], &[]))
    }
}

struct Block {
    samples: Samples,
    caller: Duration,
    node: Duration,
    wall: Duration,
}

fn per10k(d: Duration, n: usize) -> Duration {
    d.mul_f64(10_000.0 / n.max(1) as f64)
}

fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "—".into();
    }
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}

/// Runs the comparison with `iters` calls of each kind per block and per interleaved run.
pub async fn run(iters: usize, load: bool) -> Result<String, FleetError> {
    // Other work on the machine moves every number: say how much there was.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let hogs = if load {
        Some(
            Hogs::start(cores(), Duration::from_secs(900))
                .map_err(|e| FleetError::internal(format!("starting the CPU hogs: {e}")))?,
        )
    } else {
        None
    };
    let (head, peers) = head_with_peers(1).await?;
    let s = head.scheduler().clone();
    s.create_workers(Job::new("bench", 1)).await?;
    let w = s.get_workers("bench", Duration::from_secs(30)).await?;
    let engine = s.create_engine(&w[0].id, "c", "counter", &()).await?;
    let t = Duration::from_secs(10);
    let target = Target {
        raw: find_raw("peer0").await?,
        engine,
        idem: CallOptions::default().idempotent(true).timeout(t),
        recorded: CallOptions::default().timeout(t),
    };
    let cpu = Cpu {
        me: std::process::id(),
        node: peers.0[0].id(),
        exclude: hogs.as_ref().map(Hogs::pids).unwrap_or_default(),
    };

    // Warm-up, interleaved.
    for _ in 0..(iters / 10).max(200) {
        for k in KINDS {
            target.call(k).await?;
        }
    }
    // Each kind in a block of its own.
    let mut blocks = Vec::new();
    for k in KINDS {
        let mut lat = Vec::with_capacity(iters);
        let (c0, n0) = cpu.now();
        let w0 = Instant::now();
        for _ in 0..iters {
            let a = Instant::now();
            target.call(k).await?;
            lat.push(a.elapsed());
        }
        let wall = w0.elapsed();
        let (c1, n1) = cpu.now();
        blocks.push(Block {
            samples: Samples::new(k.name(), lat),
            caller: c1.saturating_sub(c0),
            node: n1.saturating_sub(n0),
            wall,
        });
    }
    // Interleaved.
    let mut lat: Vec<Vec<Duration>> = KINDS.iter().map(|_| Vec::with_capacity(iters)).collect();
    let (c0, n0) = cpu.now();
    let w0 = Instant::now();
    for _ in 0..iters {
        for (i, k) in KINDS.iter().enumerate() {
            let a = Instant::now();
            target.call(*k).await?;
            lat[i].push(a.elapsed());
        }
    }
    let i_wall = w0.elapsed();
    let (c1, n1) = cpu.now();
    let i_cpu = c1.saturating_sub(c0) + n1.saturating_sub(n0);
    let inter: Vec<Samples> = KINDS
        .iter()
        .zip(lat)
        .map(|(k, l)| Samples::new(k.name(), l))
        .collect();
    drop(hogs);
    s.delete_workers(None, false).await?;
    head.shutdown().await?;
    drop(peers);

    let mode = if load {
        format!("both cores loaded: {} × `yes > /dev/null`", cores())
    } else {
        "no load of ours".into()
    };
    let mode = format!("{mode}; load average {loadavg} at the start");
    let mut out = format!(
        "### Cross-node call vs raw ractor_cluster call, {iters} calls of each kind ({mode})\n\n"
    );
    out += "Each kind in a block of its own. CPU is utime + stime of every process involved (caller; node process and its children), per 10,000 calls; cores busy = CPU s / wall s during the loop.\n\n";
    out += "| path | n | p50 | p99 | p50 ratio | p99 ratio | CPU / 10k calls (caller + node) | CPU ratio | cores busy |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    let base = &blocks[0];
    let base_cpu = per10k(base.caller + base.node, iters);
    for b in &blocks {
        let c = per10k(b.caller + b.node, iters);
        let first = std::ptr::eq(b, base);
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} ms ({:.0} + {:.0}) | {} | {:.2} |\n",
            b.samples.name,
            b.samples.len(),
            fmt(b.samples.p50()),
            fmt(b.samples.pct(99.0)),
            if first {
                "baseline".into()
            } else {
                ratio(b.samples.p50(), base.samples.p50())
            },
            if first {
                "baseline".into()
            } else {
                ratio(b.samples.pct(99.0), base.samples.pct(99.0))
            },
            c.as_secs_f64() * 1e3,
            per10k(b.caller, iters).as_secs_f64() * 1e3,
            per10k(b.node, iters).as_secs_f64() * 1e3,
            if first {
                "baseline".into()
            } else {
                ratio(c, base_cpu)
            },
            (b.caller + b.node).as_secs_f64() / b.wall.as_secs_f64().max(1e-9),
        );
    }
    out += "\nInterleaved (one call of each kind per round, so drift in load hits all alike):\n\n";
    out += "| path | n | p50 | p99 | p50 ratio | p99 ratio |\n| --- | ---: | ---: | ---: | ---: | ---: |\n";
    for (i, sm) in inter.iter().enumerate() {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            sm.name,
            sm.len(),
            fmt(sm.p50()),
            fmt(sm.pct(99.0)),
            if i == 0 {
                "baseline".into()
            } else {
                ratio(sm.p50(), inter[0].p50())
            },
            if i == 0 {
                "baseline".into()
            } else {
                ratio(sm.pct(99.0), inter[0].pct(99.0))
            },
        );
    }
    out += &format!(
        "\nInterleaved, all three kinds together: {:.0} ms CPU per 10,000 rounds, {:.2} cores busy.\n",
        per10k(i_cpu, iters).as_secs_f64() * 1e3,
        i_cpu.as_secs_f64() / i_wall.as_secs_f64().max(1e-9)
    );
    Ok(out)
}
