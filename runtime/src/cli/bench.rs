//! `fleet bench`: measure fleet's paths against their raw hops, in one run.

use clap::Subcommand;

/// Measure fleet's paths against the raw hops they are made of, in the same run, and print
/// Markdown tables for BENCHMARKS.md.
///
/// Run in release mode: `cargo run --release --bin fleet -- bench all`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// A call through the scheduler handle to an RpcServer engine vs a raw ractor call.
    Call {
        /// Calls of each kind (after a 10% warm-up).
        #[arg(long, default_value_t = 20_000)]
        iters: usize,
    },
    /// Time to create N RpcServer workers and have them all answer.
    Spawn {
        /// Workers per round.
        #[arg(long, default_value_t = 100)]
        workers: u32,
        /// Rounds (after one warm-up round).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// A forward through the HTTP launcher vs a direct request to the same child; throughput;
    /// spawn-to-ready overhead.
    Launcher {
        /// Requests of each kind.
        #[arg(long, default_value_t = 5000)]
        iters: usize,
        /// Spawn rounds.
        #[arg(long, default_value_t = 10)]
        spawn_rounds: usize,
    },
    /// Episodes/s and controller overhead per episode with a zero-latency mock backend, 1 and
    /// 2 workers.
    Rollout {
        /// Episodes per run.
        #[arg(long, default_value_t = 512)]
        episodes: u64,
    },
    /// The asynchronous rollout loop (staleness 1) against lock-step (staleness 0), with a
    /// backend whose latency varies per request and a simulated trainer step, interleaved.
    RolloutAsync {
        /// Episodes per run.
        #[arg(long, default_value_t = 384)]
        episodes: u64,
        /// Accepted episodes per trainer step.
        #[arg(long, default_value_t = 32)]
        batch: u64,
        /// Episodes at once.
        #[arg(long, default_value_t = 32)]
        concurrent: u64,
        /// Fastest backend request, ms.
        #[arg(long, default_value_t = 5)]
        latency_min_ms: u64,
        /// Slowest backend request, ms.
        #[arg(long, default_value_t = 50)]
        latency_max_ms: u64,
        /// Trainer step, ms.
        #[arg(long, default_value_t = 150)]
        step_ms: u64,
        /// Turns per episode.
        #[arg(long, default_value_t = 3)]
        turns: u64,
        /// Runs of each loop (alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Generation throughput during rolling (k = 1 of 4) and stop-the-world weight updates
    /// against steady state, over a pool of 4 mock servers, interleaved; update latency.
    Weights {
        /// Episodes per run.
        #[arg(long, default_value_t = 256)]
        episodes: u64,
        /// Accepted episodes per version.
        #[arg(long, default_value_t = 32)]
        batch: u64,
        /// Episodes at once.
        #[arg(long, default_value_t = 32)]
        concurrent: u64,
        /// Mock generation rate per request, tokens/s.
        #[arg(long, default_value_t = 400)]
        tokens_per_s: u64,
        /// Tokens per turn.
        #[arg(long, default_value_t = 16)]
        max_tokens: u64,
        /// Weights per version, MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        /// Runs of each mode (interleaved).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// The proxy's overhead per chat completion against calling the mock backend directly.
    Proxy(super::bench_proxy::Args),
    /// The router's overhead per request (proxy with the router over 1 and N servers) against
    /// calling a server directly and the proxy without a router.
    Router(super::bench_router::Args),
    /// A burst of agents at one proxy, each on a connection of its own (proxy and mock-llm
    /// are child processes with their default limits): statuses, transport errors, p50/p99.
    Agents {
        /// Agents at once.
        #[arg(long, default_value_t = 5000)]
        agents: usize,
        /// Completions per agent.
        #[arg(long, default_value_t = 2)]
        turns: usize,
        /// Soft open-file limit the servers start with (as after `ulimit -n`); 0 keeps this
        /// process's.
        #[arg(long, default_value_t = 1024)]
        server_nofile: u64,
        /// Another fleet executable to run the same burst against first (a before/after).
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
    },
    /// Cross-node calls against raw ractor_cluster calls, calls/s across the link, and
    /// creating many workers over three node processes (all on loopback).
    Cluster {
        /// Sequential calls of each kind (after a 10% warm-up), and total calls for the
        /// throughput run.
        #[arg(long, default_value_t = 10_000)]
        iters: usize,
        /// Calls in flight for the throughput run.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Workers created per round.
        #[arg(long, default_value_t = 200)]
        workers: u32,
        /// Creation rounds (after one warm-up round).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// A cross-node engine call against a raw ractor_cluster call (two processes on loopback,
    /// same run): p50, p99, CPU time per 10,000 calls of every process involved and the cores
    /// kept busy, each kind in a block of its own and interleaved.
    Calls {
        /// Calls of each kind per block and per interleaved run (after a 10% warm-up).
        #[arg(long, default_value_t = 10_000)]
        iters: usize,
        /// Keep every core busy with a CPU hog (`yes > /dev/null`, killed at the end) meanwhile.
        #[arg(long)]
        load: bool,
    },
    /// The CPU an idle `fleet node --demo N` uses (node process and children), in-process and
    /// isolated workers.
    Idle {
        /// Demo workers.
        #[arg(long, default_value_t = 8)]
        workers: u32,
        /// Measurement window, seconds.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// The placement decision alone over simulated nodes (no actors, no I/O).
    Placement {
        /// Workers placed per run.
        #[arg(long, default_value_t = 10_000)]
        workers: usize,
        /// Node counts to compare, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        nodes: Vec<usize>,
    },
    /// An object (1 GiB by default) moved between the stores of two processes on loopback vs
    /// a raw TCP copy of the same bytes, and the same-node hand-off (a path, no copy).
    Store {
        /// Object size, e.g. 1GiB, 256MiB.
        #[arg(long, default_value = "1GiB", value_parser = crate::store::config::parse_bytes)]
        size: u64,
        /// Measured rounds of each (after one warm-up round).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Store root for both processes (default: the store's default, /dev/shm/...).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Internal: the producer process for `fleet bench store`.
    #[command(hide = true)]
    StorePeer {
        /// Object size in bytes.
        #[arg(long)]
        size: u64,
        /// Store root.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The tiny policy: `fleet infer` tokens/s against decoding in process, and GRPO and
    /// warm-up train steps/s.
    Policy {
        /// Completions to generate (each way).
        #[arg(long, default_value_t = 512)]
        requests: usize,
        /// Completions at once (batch size in process, clients over HTTP).
        #[arg(long, default_value_t = 32)]
        concurrent: usize,
        /// Tokens per completion at most.
        #[arg(long, default_value_t = 16)]
        max_tokens: usize,
        /// Training steps of each kind.
        #[arg(long, default_value_t = 20)]
        steps: usize,
    },
    /// Internal: a node process for `fleet bench cluster`.
    #[command(hide = true)]
    ClusterPeer {
        /// The head.
        #[arg(long)]
        join: String,
        /// The node's name.
        #[arg(long)]
        name: String,
    },
    /// `call` and `spawn` with their defaults (the others start processes and take longer:
    /// run them by name; BENCHMARKS.md lists the loop over all of them).
    All,
}

/// Runs the chosen benchmarks and prints their tables.
///
/// The measurements run in a spawned task, on the runtime's worker threads like every actor and
/// connection task, not on the thread that blocks on `main` (where each I/O wake-up would be a
/// cross-thread hop that the measured paths do not pay); the call benchmark reports both.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        // The call benchmark measures from both places itself; the cross-node benchmark runs
        // where a `#[tokio::main]` driver runs (its table says so).
        Which::Call { .. } | Which::All | Which::Cluster { .. } | Which::Calls { .. } => {
            run_inner(args).await
        }
        _ => tokio::spawn(run_inner(args)).await?,
    }
}

async fn run_inner(args: Args) -> anyhow::Result<()> {
    use crate::bench;
    let fleet = crate::exe::fleet_executable();
    let need_fleet = || {
        fleet
            .clone()
            .ok_or_else(|| anyhow::anyhow!("cannot find the fleet executable; set FLEET_BIN"))
    };
    let (call, spawn) = match args.which {
        Which::Proxy(a) => return super::bench_proxy::run(a).await,
        Which::Router(a) => return super::bench_router::run(a).await,
        Which::Agents {
            agents,
            turns,
            server_nofile,
            baseline,
        } => {
            note_build();
            let nofile = (server_nofile > 0).then_some(server_nofile);
            let mut rows = Vec::new();
            if let Some(b) = baseline {
                let r = bench::agents::burst(&b, agents, turns.max(1), nofile).await?;
                rows.push((format!("baseline ({})", b.display()), r));
            }
            let r = bench::agents::burst(
                std::path::Path::new(&need_fleet()?),
                agents,
                turns.max(1),
                nofile,
            )
            .await?;
            rows.push(("this build".to_string(), r));
            println!("### A burst of agents at one proxy (servers start with soft nofile {server_nofile})\n");
            println!("{}", bench::agents::table(&rows));
            return Ok(());
        }
        Which::Launcher {
            iters,
            spawn_rounds,
        } => {
            println!("### HTTP launcher: forward vs direct, throughput, spawn to ready\n");
            println!(
                "{}",
                bench::launcher::run(&need_fleet()?, iters, spawn_rounds).await?
            );
            return Ok(());
        }
        Which::Rollout { episodes } => {
            println!(
                "### Rollout: episodes/s and controller overhead (zero-latency mock backend)\n"
            );
            println!("{}", bench::rollout::run(&need_fleet()?, episodes).await?);
            return Ok(());
        }
        Which::Weights {
            episodes,
            batch,
            concurrent,
            tokens_per_s,
            max_tokens,
            size_mib,
            rounds,
        } => {
            note_build();
            println!("### Weight updates: generation throughput during updates vs steady state\n");
            let p = bench::weights::Params {
                episodes,
                batch,
                concurrent,
                tokens_per_s,
                max_tokens,
                size: size_mib << 20,
                rounds,
            };
            println!("{}", bench::weights::run(&need_fleet()?, &p).await?);
            return Ok(());
        }
        Which::RolloutAsync {
            episodes,
            batch,
            concurrent,
            latency_min_ms,
            latency_max_ms,
            step_ms,
            turns,
            rounds,
        } => {
            note_build();
            println!("### Rollout: the asynchronous loop vs lock-step\n");
            println!(
                "{}",
                bench::rollout_async::run(
                    &need_fleet()?,
                    episodes,
                    batch,
                    concurrent,
                    (latency_min_ms, latency_max_ms),
                    step_ms,
                    turns,
                    rounds
                )
                .await?
            );
            return Ok(());
        }
        Which::StorePeer { size, dir } => return Ok(bench::store::peer(size, dir).await?),
        Which::Store { size, rounds, dir } => {
            note_build();
            println!(
                "{}",
                bench::store::run(&need_fleet()?, size, rounds.max(1), dir).await?
            );
            return Ok(());
        }
        Which::ClusterPeer { join, name } => return Ok(bench::cluster::peer(join, name).await?),
        Which::Calls { iters, load } => {
            note_build();
            println!("{}", bench::calls::run(iters.max(1), load).await?);
            return Ok(());
        }
        Which::Idle { workers, secs } => {
            note_build();
            println!(
                "{}",
                bench::idle::run(workers, std::time::Duration::from_secs(secs.max(1))).await?
            );
            return Ok(());
        }
        Which::Cluster {
            iters,
            in_flight,
            workers,
            rounds,
        } => {
            note_build();
            println!(
                "{}",
                bench::cluster::run(iters, in_flight.max(1), workers, rounds).await?
            );
            return Ok(());
        }
        Which::Policy {
            requests,
            concurrent,
            max_tokens,
            steps,
        } => {
            note_build();
            println!("### Policy: inference tokens/s and train steps/s\n");
            println!(
                "{}",
                bench::policy::run(requests, concurrent, max_tokens, steps).await?
            );
            return Ok(());
        }
        Which::Placement { workers, nodes } => {
            note_build();
            println!(
                "### Placement decision ({workers} workers; half 1-GPU, half CPU-only; nodes with 8 GPUs, 64 cores)\n"
            );
            println!("{}", bench::placement::run(workers, &nodes));
            return Ok(());
        }
        Which::Call { iters } => (Some(iters), None),
        Which::Spawn { workers, rounds } => (None, Some((workers, rounds))),
        Which::All => (Some(20_000), Some((100, 20))),
    };
    note_build();
    if let Some(iters) = call {
        println!("### Engine call through the scheduler vs a raw ractor call\n");
        println!("{}", bench::call::run(iters).await?);
    }
    if let Some((workers, rounds)) = spawn {
        println!("### Creating workers\n");
        println!("{}", bench::spawn::run(workers, rounds).await?);
    }
    Ok(())
}

fn note_build() {
    if !cfg!(debug_assertions) {
        println!("<!-- release build -->");
    } else {
        eprintln!("warning: debug build; run with --release for numbers worth writing down");
    }
}
