//! `fleet head`: serve a cluster's head until Ctrl-C.

use super::cluster_args::{PortLimitArgs, ResourceArgs, SecurityArgs};
use super::node::parse_duration;
use crate::membership::MembershipConfig;
use crate::{Cluster, MemberEvent};
use std::time::Duration;

/// Serve a long-lived cluster head until Ctrl-C (or SIGTERM): nodes join it, jobs are submitted to it.
///
/// Nodes join with `fleet node --join ADDR`; the head admits them, watches their heartbeats
/// (a node silent for --timeout is marked down and its workers lost), and hosts the scheduler
/// that places workers across them. The head is also a node, unless --no-workers.
///
/// It also takes jobs: `fleet submit JOB.toml` (or `fleet run JOB.toml --head ADDR`) from any
/// machine with the cookie hands it a job, which runs here until it ends or `fleet job stop ID`;
/// each job gets its own workers and a run directory under --runs-dir. Ctrl-C stops the running
/// jobs, then the workers.
///
/// Rust programs attach to it with `Cluster::connect(ADDR)` and get the whole scheduler API,
/// run here; the roles a program created are deleted when it disconnects, crashes or is killed.
///
/// And it serves a web dashboard (nodes, workers, jobs with their reward and version curves,
/// recent events, /metrics) at http://127.0.0.1:8265/ unless --no-dashboard; it has no
/// authentication, so serve it on another address only where everyone who can reach it may
/// see the cluster.
///
/// Examples:
///
///   fleet head --listen 127.0.0.1:7700                    # loopback: no cookie needed
///
///   FLEET_COOKIE=s3cret fleet head --listen 0.0.0.0:7700 --no-workers
///
///   fleet status                                          # nodes, roles and workers
///
///   fleet submit examples/demo.toml && fleet job list     # a job, and every job
///
///   open http://127.0.0.1:8265/                           # the dashboard (--dashboard IP:PORT)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen for nodes, IP:PORT (port 0: a free one, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: std::net::SocketAddr,
    /// Also serve the process's Prometheus metrics at http://IP:PORT/metrics (a fixed port to
    /// scrape; the node's object-store port serves `/metrics` too, and `fleet status --json`
    /// shows that URL).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Place no workers on the head's own machine.
    #[arg(long)]
    no_workers: bool,
    /// How often nodes send heartbeats.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    heartbeat: Duration,
    /// A node without a heartbeat for this long is marked down.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    timeout: Duration,
    /// A node that has not heard from the head for this long kills its workers' children,
    /// stops its workers and rejoins (default: half the timeout; at most timeout - 2 heartbeats,
    /// so that a cut-off node stops before the head gives its workers up).
    #[arg(long, value_parser = parse_duration)]
    lease: Option<Duration>,
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    store: super::cluster_args::StoreArgs,
    #[command(flatten)]
    limits: PortLimitArgs,
    /// Where submitted jobs' run directories go (`<DIR>/<name>-<id>/`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "fleet-runs",
        env = "FLEET_RUNS_DIR"
    )]
    runs_dir: std::path::PathBuf,
    /// Serve the web dashboard (nodes, workers, jobs with their curves, recent events, and
    /// /metrics) at http://IP:PORT/ [default: 127.0.0.1:8265; port 0: a free one]. It has no
    /// authentication: anyone who can reach it sees the cluster's state.
    #[arg(long, value_name = "IP:PORT", conflicts_with = "no_dashboard")]
    dashboard: Option<std::net::SocketAddr>,
    /// Serve no dashboard.
    #[arg(long)]
    no_dashboard: bool,
    /// Stop after this long instead of waiting for Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    serve_for: Option<Duration>,
}

/// Runs the head.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut membership = MembershipConfig::new(args.heartbeat, args.timeout);
    if let Some(lease) = args.lease {
        membership.lease = lease;
    }
    membership.validate()?;
    let _metrics = match args.metrics {
        Some(addr) => Some(
            crate::metrics::serve(addr)
                .await
                .map_err(|e| anyhow::anyhow!("serving metrics on --metrics {addr}: {e}"))?
                .0,
        ),
        None => None,
    };
    let cookie = args.security.cookie(&[args.listen.ip()])?;
    let r = &args.resources;
    let mut b = Cluster::head()
        .name(r.name.clone().unwrap_or_else(|| "head".into()))
        .listen_ip(args.listen.ip())
        .listen_port(args.listen.port())
        .cookie(cookie)
        .port_limits(args.limits.limits())
        .port_range(r.port_range.0, r.port_range.1)
        .runs_root(args.runs_dir.clone())
        // Jobs' workers go over the nodes, as with `fleet run --listen`.
        .policy(crate::scheduler::Policy::Spread)
        .membership(membership);
    if let Some(c) = r.cpus {
        b = b.cpus(c);
    }
    if let Some(m) = r.mem_mib {
        b = b.mem_mib(m);
    }
    if let Some(g) = r.gpus.clone() {
        b = b.gpus(g);
    }
    for (k, v) in &r.labels {
        b = b.label(k, v);
    }
    if let Some(tls) = args.security.tls()? {
        b = b.tls(tls);
    }
    if args.no_workers {
        b = b.no_workers();
    }
    let cluster = args.store.apply(b).start().await?;
    let jobs = cluster
        .serve_jobs(crate::jobs::JobServiceConfig {
            runs_root: args.runs_dir.clone(),
            ..Default::default()
        })
        .await?;
    // Rust programs attach with Cluster::connect(ADDR).
    let drivers = cluster.serve_scheduler().await?;
    let mut events = cluster.member_events();
    let dashboard = start_dashboard(&args, &cluster, &jobs).await?;
    println!(
        "fleet head listening on {}:{}",
        args.listen.ip(),
        cluster.listen_port()
    );
    println!(
        "cluster {}; head node {}{}",
        cluster.id(),
        cluster.node_id(),
        if args.no_workers { " (no workers)" } else { "" }
    );
    println!(
        "taking jobs: fleet submit JOB.toml --head {}:{} (run directories under {})",
        args.listen.ip(),
        cluster.listen_port(),
        args.runs_dir.display()
    );
    if let Some(d) = &dashboard {
        println!("dashboard at http://{}/", d.addr());
    }
    let printer = tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            match ev {
                MemberEvent::Joined { node, resources } => println!(
                    "node {node} joined: {:.1} CPUs, GPUs {:?}, labels {:?}",
                    resources.cpu_millis as f64 / 1000.0,
                    resources.gpus,
                    resources.labels
                ),
                MemberEvent::Suspect { node } => println!("node {node} is suspect"),
                MemberEvent::Down { node, reason } => println!("node {node} is down: {reason}"),
                MemberEvent::Left { node } => println!("node {node} left"),
                MemberEvent::Refused { peer, reason } => println!("refused {peer}: {reason}"),
            }
        }
    });
    match args.serve_for {
        Some(d) => tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = crate::cli::shutdown_signal() => {}
        },
        None => crate::cli::shutdown_signal().await,
    }
    printer.abort();
    drop(dashboard);
    let running = jobs.list().iter().filter(|j| !j.state.is_final()).count();
    if running > 0 {
        println!("stopping: {running} job(s) still running are stopped");
    }
    jobs.shutdown(Duration::from_secs(30)).await;
    drivers.stop();
    println!("stopping: destroying workers");
    cluster.shutdown().await?;
    println!("stopped");
    Ok(())
}

/// Starts the dashboard unless --no-dashboard. An address given with --dashboard that cannot
/// be bound is an error; the default one (8265, perhaps another head's or Ray's) is a warning.
async fn start_dashboard(
    args: &Args,
    cluster: &Cluster,
    jobs: &crate::jobs::JobService,
) -> anyhow::Result<Option<crate::dashboard::Dashboard>> {
    if args.no_dashboard {
        return Ok(None);
    }
    let explicit = args.dashboard.is_some();
    let addr = match args.dashboard {
        Some(a) => a,
        None => crate::dashboard::DEFAULT_ADDR.parse()?,
    };
    let status = cluster
        .status_source()
        .ok_or_else(|| anyhow::anyhow!("the cluster started without a head"))?;
    let sources = crate::dashboard::Sources {
        cluster_id: cluster.id().to_string(),
        status,
        jobs: jobs.clone(),
        events: crate::dashboard::EventLog::new(),
    };
    // Subscribed before the head prints its address, so before any node can join.
    match crate::dashboard::serve(addr, sources, cluster.member_events()).await {
        Ok(d) => {
            if !d.addr().ip().is_loopback() {
                eprintln!(
                    "warning: the dashboard at http://{}/ has no authentication (like Ray's): \
                     anyone who can reach that address sees the cluster's nodes, workers, jobs \
                     and events. Serve it on 127.0.0.1 and reach it through an SSH tunnel, or \
                     firewall the port.",
                    d.addr()
                );
            }
            Ok(Some(d))
        }
        Err(e) if explicit => Err(anyhow::anyhow!(
            "serving the dashboard on --dashboard {addr}: {e} (give another address, or \
             --no-dashboard)"
        )),
        Err(e) => {
            eprintln!(
                "warning: no dashboard: {addr} cannot be bound ({e}); give --dashboard IP:PORT \
                 or --no-dashboard"
            );
            Ok(None)
        }
    }
}
