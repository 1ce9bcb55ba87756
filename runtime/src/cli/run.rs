//! `fleet run JOB.toml`: a rollout job from a file, on the embedded node or across a cluster.

use super::cluster_args::SecurityArgs;
use super::rollout_report::{print_summary, progress_line};
use crate::rollout::job::RolloutJob;
use crate::scheduler::Policy;
use crate::{Cluster, MemberEvent};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Run a rollout job described in a TOML file, on the embedded single node or across a cluster.
///
/// The file names the rollout workers (replicas, resources), their inference backend (a command
/// started next to each worker, e.g. `vllm serve ... --port {port}`, or the URL of one already
/// running), the agent (the built-in `multi-turn`, or a command in any language that talks to
/// `OPENAI_BASE_URL` with `OPENAI_API_KEY`, reads its task as JSON on stdin and prints
/// `{"reward": r}`), the tasks, the number of episodes, the staleness bound and the output
/// path. See `examples/*.toml` and the module docs of `fleet_runtime::rollout::job` for every
/// key. In commands, `fleet` means the fleet executable of the node that runs the command, and
/// `{port}`/`{index}` are filled per worker.
///
/// Across machines, this process is the job's driver and the cluster's head: it listens on
/// --listen, waits for --nodes nodes to join (`fleet node --join ADDR` on each machine), spreads
/// the rollout workers over them, and tears everything down at the end.
///
/// Examples:
///
///   fleet run examples/demo.toml
///
///   fleet run examples/demo.toml --listen 0.0.0.0:7700 --nodes 4 --cookie-file cookie
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file.
    job: PathBuf,
    /// Override the number of episodes.
    #[arg(long)]
    episodes: Option<u64>,
    /// Override the output path.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Be the head of a cluster listening here (IP:PORT) instead of a single embedded node.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// With --listen: wait for this many nodes to join before starting.
    #[arg(long, default_value_t = 1, requires = "listen")]
    nodes: usize,
    /// With --listen: how long to wait for them.
    #[arg(long, default_value = "120s", value_parser = super::node::parse_duration)]
    wait_nodes: Duration,
    /// With --listen: place no rollout workers on this machine.
    #[arg(long, requires = "listen")]
    no_workers: bool,
    #[command(flatten)]
    security: SecurityArgs,
}

async fn start_cluster(args: &Args) -> anyhow::Result<Cluster> {
    let Some(listen) = args.listen else {
        return Ok(Cluster::local().start().await?);
    };
    let mut b = Cluster::head()
        .name("driver")
        .listen_ip(listen.ip())
        .listen_port(listen.port())
        .cookie(args.security.cookie(&[listen.ip()])?)
        .policy(Policy::Spread);
    if let Some(tls) = args.security.tls()? {
        b = b.tls(tls);
    }
    if args.no_workers {
        b = b.no_workers();
    }
    let cluster = b.start().await?;
    let mut events = cluster.member_events();
    eprintln!(
        "fleet run: head listening on {}:{}; waiting for {} node(s) to join (fleet node --join ADDR)",
        listen.ip(),
        cluster.listen_port(),
        args.nodes
    );
    let deadline = Instant::now() + args.wait_nodes;
    let mut joined = 0;
    while joined < args.nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(MemberEvent::Joined { node, .. })) => {
                joined += 1;
                eprintln!("node {node} joined ({joined}/{})", args.nodes);
            }
            Ok(Ok(MemberEvent::Refused { peer, reason })) => eprintln!("refused {peer}: {reason}"),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {}
            Err(_) => {
                let _ = cluster.shutdown().await;
                anyhow::bail!(
                    "only {joined} of {} nodes joined within {:?}; start them with `fleet node --join {}:{}`",
                    args.nodes,
                    args.wait_nodes,
                    listen.ip(),
                    listen.port()
                );
            }
        }
    }
    Ok(cluster)
}

/// Runs the job.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut job = RolloutJob::from_file(&args.job).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(n) = args.episodes {
        job.episodes = n;
    }
    if let Some(o) = args.output.clone() {
        job.output = o;
    }
    // Single node: this executable; cluster: each node resolves `fleet` to its own.
    let fleet = match args.listen {
        None => crate::exe::fleet_executable()
            .ok_or_else(|| anyhow::anyhow!("cannot find the fleet executable; set FLEET_BIN"))?,
        Some(_) => "fleet".to_string(),
    };
    let cluster = start_cluster(&args).await?;
    eprintln!(
        "fleet run {}: {} episodes on {} rollout workers, batch {} per version, staleness {}",
        args.job.display(),
        job.episodes,
        job.workers.replicas,
        job.batch_size,
        job.max_staleness
    );
    let report = job
        .run(cluster.scheduler(), &fleet, progress_line(Instant::now()))
        .await;
    let shutdown = cluster.shutdown().await;
    let report = report?;
    shutdown?;
    print_summary(&report);
    Ok(())
}
