//! `fleet node`: serve a node until Ctrl-C, alone or as a member of a head's cluster
//! (`--join ADDR`).

use super::cluster_args::{resolve, PortLimitArgs, ResourceArgs, SecurityArgs, StoreArgs};
use crate::membership::{JoinConfig, JoinedNode, TransportConfig};
use crate::Cluster;
use anyhow::Context;
use fleet_actors::{
    CallOptions, Isolation, Job, RpcServerSpec, SchedulingSpec, WorkerId, WorkerKind,
};
use std::time::{Duration, Instant};

/// Serve a fleet node in this process until Ctrl-C (or SIGTERM).
///
/// The node owns this machine's resources (CPUs, memory, GPU ids, a port range), starts workers
/// when the scheduler asks, and hosts the engines registered in this binary (`counter`, `echo`,
/// `sleep`; programs embedding fleet register their own with `Cluster::local().engine(..)`).
///
/// With `--demo N` it also creates N RpcServer workers with a `counter` engine, calls each of
/// them, and prints what it did, so you can see a node working before you write any code.
///
/// Examples:
///
///   fleet node --demo 4                 # a node with 4 demo workers, until Ctrl-C
///
///   fleet node --gpus 0,1 --cpus 8      # account 2 GPUs and 8 cores, whatever the machine has
///
///   fleet node --demo 2 --serve-for 5s  # stop by itself after 5 seconds (scripts, CI)
///
///   fleet node --demo 4 --isolated      # each demo worker in a `fleet rpc-server` child
///
///   fleet node --join head.example:7700 --cookie-file /etc/fleet/cookie --label zone=a
///                                       # join a head's cluster; the head places workers here
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    limits: PortLimitArgs,
    /// Join the cluster of the head at HOST:PORT (`fleet head --listen`). The node reconnects
    /// with backoff; when cut off from the head for longer than its lease it stops its workers
    /// and joins again as a new member.
    #[arg(long, value_name = "HOST:PORT")]
    join: Option<String>,
    /// Also serve the process's Prometheus metrics at http://IP:PORT/metrics (a fixed port to
    /// scrape; the node's object-store port serves `/metrics` too, and `fleet status --json`
    /// shows that URL).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Where this node's own server listens, IP:PORT (default 127.0.0.1 on a free port).
    #[arg(long, value_name = "IP:PORT", conflicts_with = "listen_port")]
    listen: Option<std::net::SocketAddr>,
    /// Port for other nodes to connect to, on 127.0.0.1 (default: a free port).
    #[arg(long)]
    listen_port: Option<u16>,
    /// Largest call result or HTTP response body this node sends back to a caller, in bytes;
    /// a larger one is answered with a payload-too-large error (keep it under every peer's
    /// 16 MiB frame limit).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_message: usize,
    /// Where the workers of submitted jobs log: `<DIR>/<job name>-<id>/logs/` (`fleet logs
    /// WORKER` reads them from any machine). Other workers log under a temporary directory.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "fleet-runs",
        env = "FLEET_RUNS_DIR"
    )]
    runs_dir: std::path::PathBuf,
    /// Create N demo workers with a `counter` engine and call each of them.
    #[arg(long, value_name = "N", conflicts_with = "join")]
    demo: Option<u32>,
    /// Run the demo workers isolated, each in a `fleet rpc-server` child process behind the
    /// HTTP launcher, instead of in this process.
    #[arg(long, requires = "demo")]
    isolated: bool,
    /// Stop after this long instead of waiting for Ctrl-C (e.g. `500ms`, `5s`, `0s`).
    #[arg(long, value_parser = parse_duration)]
    serve_for: Option<Duration>,
}

pub(crate) fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range like 20000-29999"))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|_| format!("{lo:?} is not a port"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|_| format!("{hi:?} is not a port"))?;
    if lo == 0 || hi < lo {
        return Err(format!("{s:?}: need 1 <= LO <= HI"));
    }
    Ok((lo, hi))
}

pub use crate::duration::parse_duration;

/// Runs the node as a member of a head's cluster until Ctrl-C, then leaves cleanly.
async fn run_joined(args: Args, head: String) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        std::net::SocketAddr::from(([127, 0, 0, 1], args.listen_port.unwrap_or(0)))
    });
    let head_ip = resolve(&head)?.ip();
    let cookie = args.security.cookie(&[listen.ip(), head_ip])?;
    let name = args.resources.node_name("node");
    let resources = args.resources.resources();
    let store = args.store.config(&cookie, listen.ip());
    let registry = crate::node::engines::registry();
    let node = JoinedNode::start(JoinConfig {
        name: name.clone(),
        resources: resources.clone(),
        registry,
        store,
        agents: crate::rollout::AgentRegistry::builtin(),
        run_dir: {
            crate::node::run_dirs::prune(&std::env::temp_dir(), crate::node::run_dirs::KEEP_DEAD);
            crate::node::run_dirs::own("node")
        },
        runs_root: Some(args.runs_dir.clone()),
        head: head.clone(),
        transport: TransportConfig {
            listen_ip: listen.ip(),
            port: listen.port(),
            cookie,
            tls: args.security.tls()?,
            max_frame: ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
            limits: args.limits.limits(),
        },
        max_message: args.max_message,
    })
    .await
    .context("starting the node")?;
    println!(
        "fleet node {name} listening on {}:{}",
        listen.ip(),
        node.listen_port()
    );
    println!(
        "joining {head}: {:.1} CPUs, {} MiB, GPUs {:?}, worker ports {}-{}, labels {:?}",
        resources.cpu_millis as f64 / 1000.0,
        resources.mem_mib,
        resources.gpus,
        resources.port_range.0,
        resources.port_range.1,
        resources.labels
    );
    let serve_for = args.serve_for;
    node.run_until(async move {
        match serve_for {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = crate::cli::shutdown_signal() => {}
            },
            None => crate::cli::shutdown_signal().await,
        }
    })
    .await
    .with_context(|| format!("node {name} could not stay in the cluster of {head}"))?;
    println!("left the cluster; stopped");
    Ok(())
}

/// Runs the node.
pub async fn run(args: Args) -> anyhow::Result<()> {
    crate::metrics::install();
    let _metrics = match args.metrics {
        Some(addr) => Some(
            crate::metrics::serve(addr)
                .await
                .with_context(|| format!("serving metrics on --metrics {addr}"))?
                .0,
        ),
        None => None,
    };
    if let Some(head) = args.join.clone() {
        return run_joined(args, head).await;
    }
    let r = &args.resources;
    let mut b = Cluster::local()
        .name(r.node_name("node"))
        .port_range(r.port_range.0, r.port_range.1);
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
    if let Some(p) = args.listen_port.or(args.listen.map(|a| a.port())) {
        b = b.listen_port(p);
    }
    let cluster = args.store.apply(b).start().await?;
    let info = cluster.node_info().await?;
    println!(
        "fleet node {} up: {:.1} CPUs, {} MiB, GPUs {:?}, worker ports {}-{}, cluster port 127.0.0.1:{}",
        info.node,
        info.resources.cpu_millis as f64 / 1000.0,
        info.resources.mem_mib,
        info.resources.gpus,
        info.resources.port_range.0,
        info.resources.port_range.1,
        cluster.listen_port()
    );

    if let Some(n) = args.demo {
        demo(&cluster, n, args.isolated).await?;
    }

    match args.serve_for {
        Some(d) => {
            println!("serving for {d:?}");
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = crate::cli::shutdown_signal() => {}
            }
        }
        None => {
            println!("serving; press Ctrl-C to stop");
            crate::cli::shutdown_signal().await;
        }
    }
    println!("stopping: destroying workers");
    cluster.shutdown().await?;
    println!("stopped");
    Ok(())
}

async fn demo(cluster: &Cluster, n: u32, isolated: bool) -> anyhow::Result<()> {
    let s = cluster.scheduler();
    let t = Instant::now();
    let kind = if isolated {
        WorkerKind::RpcServer(RpcServerSpec {
            isolation: Isolation::Process { command: None },
        })
    } else {
        WorkerKind::default()
    };
    s.create_workers(
        Job::new("demo", n)
            .kind(kind)
            .spec(SchedulingSpec::default()),
    )
    .await?;
    let workers = s.get_workers("demo", Duration::from_secs(10)).await?;
    let created = t.elapsed();
    println!(
        "created {} demo workers in {:.1} ms",
        workers.len(),
        created.as_secs_f64() * 1e3
    );
    println!(
        "{:<10} {:<24} {:>8} {:>10}",
        "worker", "node", "calls", "total"
    );
    for w in &workers {
        let e = s.create_engine(&w.id, "counter", "counter", &()).await?;
        let opts = CallOptions::default().timeout(Duration::from_secs(5));
        let mut total = 0u64;
        for k in 1..=10u64 {
            total = e.call("incr", &k, &opts).await?;
        }
        println!(
            "{:<10} {:<24} {:>8} {:>10}",
            w.id.to_string(),
            w.node.to_string(),
            10,
            total
        );
    }
    let id = WorkerId::new("demo", 0);
    let st = s.status(&id, Duration::from_secs(1)).await?;
    println!(
        "worker {}: engines {:?}, {} calls done, up {} ms",
        id,
        st.engines
            .iter()
            .map(|e| format!("{}:{}", e.name, e.type_name))
            .collect::<Vec<_>>(),
        st.calls_done,
        st.uptime_ms
    );
    Ok(())
}
