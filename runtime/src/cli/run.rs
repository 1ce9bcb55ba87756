//! `fleet run JOB.toml`: a rollout job from a file, on the embedded node or across a cluster.

use super::cluster_args::{PortLimitArgs, SecurityArgs};
use super::rollout_report::{conclude, print_summary, Display};
use crate::rollout::job::RolloutJob;
use crate::rollout::run::RunOptions;
use crate::scheduler::Policy;
use crate::{Cluster, MemberEvent};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Run a rollout job described in a TOML file, on the embedded single node or across a cluster.
///
/// The file names the rollout workers (replicas, resources), their inference backend (a command
/// started next to each worker, e.g. `vllm serve ... --port {port}`, or the URL of one already
/// running), the agent (the built-in `multi-turn`, or a command in any language that talks to
/// `OPENAI_BASE_URL` with `OPENAI_API_KEY`, reads its task as JSON on stdin and prints
/// `{"reward": r}`), the tasks, the number of episodes, the staleness bound and the output
/// path. Every key with its default: docs/job-file.md (and `examples/*.toml`). In commands, `fleet` means the fleet executable of the node that runs the command, and
/// `{port}`/`{index}` are filled per worker.
///
/// Episodes run asynchronously: admission goes on under the staleness bound while a simulated
/// trainer moves the policy version every `batch_size` accepted episodes. A worker whose backend
/// dies, or whose node is lost, gets no more episodes; its episodes run again elsewhere. Each
/// accepted episode is appended to the output as it completes, so a crash loses only the
/// episodes in flight, and `--resume` continues the job from its output.
///
/// Ctrl-C or SIGTERM stops admission and lets episodes in flight finish (`interrupt_grace`,
/// default 30s); a second Ctrl-C cancels them at once. Exit codes: 0 done (at least
/// `min_accepted` of the episodes accepted, default 0.5); 1 an error, too few accepted, or the
/// job stopped itself (its first episodes all failed the same way, or no worker can serve);
/// 130 after SIGINT, 143 after SIGTERM.
///
/// Across machines, this process is the job's driver and the cluster's head: it listens on
/// --listen, waits for --nodes nodes to join (`fleet node --join ADDR` on each machine), spreads
/// the rollout workers over them, and tears everything down at the end.
///
/// Examples:
///
///   fleet run examples/demo.toml
///
///   fleet run examples/demo.toml --resume          # after an interrupt or a crash
///
///   fleet run examples/demo.toml --listen 0.0.0.0:7700 --nodes 4 --cookie-file cookie
///
/// With --head, the job goes to a running `fleet head` instead (as `fleet submit` does) and is
/// followed here: its log streams to stdout, Ctrl-C stops the job (a second one cancels its
/// episodes in flight), and the exit code is the job's. If this process dies, the job goes on
/// (`fleet job status ID`, `fleet job stop ID`); its files are in its run directory on the
/// head's machine.
///
///   fleet run examples/demo.toml --head 127.0.0.1:7700
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file.
    pub(super) job: PathBuf,
    /// Override the number of episodes.
    #[arg(long)]
    pub(super) episodes: Option<u64>,
    /// Override the output path.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Continue the job from its output: episodes already there are skipped, the policy
    /// version continues after the last one recorded.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace an existing output (without it, an output that holds trajectories is refused).
    #[arg(long)]
    overwrite: bool,
    /// No progress display; only messages that matter and the summary.
    #[arg(long, short)]
    pub(super) quiet: bool,
    /// Be the head of a cluster listening here (IP:PORT) instead of a single embedded node.
    #[arg(long, conflicts_with = "head")]
    listen: Option<std::net::SocketAddr>,
    /// Submit the job to the running head at HOST:PORT and follow it (see above).
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["resume", "overwrite", "output"])]
    head: Option<String>,
    /// The job's name (default: the file's stem): its run directory is
    /// `<runs dir>/<name>-<id>/`.
    #[arg(long)]
    pub(super) name: Option<String>,
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
    pub(super) security: SecurityArgs,
    #[command(flatten)]
    limits: PortLimitArgs,
    /// Where the run directory goes (`<DIR>/<name>-<id>/`: the job file, the workers' logs,
    /// metrics.jsonl and reward.svg unless the job file gives a run_dir).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "fleet-runs",
        env = "FLEET_RUNS_DIR"
    )]
    runs_dir: PathBuf,
}

async fn start_cluster(
    args: &Args,
    stop: &mut tokio::sync::watch::Receiver<crate::rollout::run::Stop>,
) -> anyhow::Result<Cluster> {
    let Some(listen) = args.listen else {
        return Ok(Cluster::local().runs_root(&args.runs_dir).start().await?);
    };
    let mut b = Cluster::head()
        .name("driver")
        .listen_ip(listen.ip())
        .listen_port(listen.port())
        .cookie(args.security.cookie(&[listen.ip()])?)
        .port_limits(args.limits.limits())
        .runs_root(&args.runs_dir)
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
        let next = tokio::select! {
            e = tokio::time::timeout(left, events.recv()) => e,
            _ = stop.changed() => {
                let _ = cluster.shutdown().await;
                anyhow::bail!("interrupted while waiting for nodes to join ({joined} of {} joined)", args.nodes);
            }
        };
        match next {
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
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(head) = args.head.clone() {
        return super::follow::run_on_head(&args, &head).await;
    }
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
    // Everything that can be checked here is checked before any worker starts.
    let checked = match args.listen {
        None => job.preflight(&fleet),
        Some(_) => job.preflight_keys(),
    };
    checked.map_err(|e| anyhow::anyhow!("{}: {e}", args.job.display()))?;
    crate::rollout::output::check(&job.output, args.resume, args.overwrite)
        .map_err(|e| anyhow::anyhow!(e))?;
    let run_dir = make_run_dir(&args, &mut job)?;
    let mut stop = super::job_stop_signals();
    let cluster = start_cluster(&args, &mut stop).await?;
    let display = Display::new(args.quiet);
    if !args.quiet {
        eprintln!(
            "fleet run {}: {} episodes on {} rollout workers, batch {} per version, staleness {}, output {}",
            args.job.display(),
            job.episodes,
            job.workers.replicas,
            job.batch_size,
            job.max_staleness,
            job.output.display()
        );
        eprintln!("run directory {}", run_dir.display());
    }
    let opts = RunOptions {
        resume: args.resume,
        overwrite: args.overwrite,
        stop,
        progress: display,
        observe: None,
    };
    let report = job.run(cluster.scheduler(), &fleet, opts).await;
    let shutdown = cluster.shutdown().await;
    let report = report?;
    shutdown?;
    print_summary(&report);
    println!("| run directory | {} |", run_dir.display());
    Ok(conclude(&report, job.min_accepted))
}

/// Creates the job's run directory, `<runs dir>/<name>-<id>/`, with a copy of the job file; the
/// workers log under it (`logs/`, on each node under that node's runs directory), and it is
/// the job's `run_dir` unless the file names one.
fn make_run_dir(args: &Args, job: &mut RolloutJob) -> anyhow::Result<PathBuf> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .job
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into()),
    };
    anyhow::ensure!(
        name.len() <= 64 && crate::jobs::protocol::valid_run_name(&name),
        "{name:?} is not a job name: use 1 to 64 letters, digits, '-', '_' or '.' (not starting with '.'), with --name"
    );
    let run = format!("{name}-{:08x}", rand::random::<u32>());
    let dir = args.runs_dir.join(&run);
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating the run directory {} (give another with --runs-dir)",
            dir.display()
        )
    })?;
    std::fs::copy(&args.job, dir.join("job.toml"))
        .with_context(|| format!("copying {} into {}", args.job.display(), dir.display()))?;
    if job.run_dir.is_none() {
        job.run_dir = Some(dir.clone());
    }
    job.run_name = Some(run);
    Ok(dir)
}
