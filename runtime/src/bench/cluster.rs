//! Cross-node benchmarks over real processes on loopback: a worker call from the head to a
//! worker on another node, against a raw ractor_cluster call to a trivial actor in that same
//! node process over the same session (the baseline); calls per second across the link with
//! many calls in flight; and creating many workers over three nodes.
//!
//! The nodes are this executable started again as `fleet bench cluster-peer --join ADDR`: a
//! real joined node plus the baseline actor.

use super::baseline::{RawCounter, RawMsg};
use super::stats::{fmt, header, row, Samples};
use crate::membership::{loopback_cookie, JoinConfig, JoinedNode, TransportConfig};
use crate::node::resources::NodeResources;
use crate::scheduler::Policy;
use crate::{Cluster, MemberEvent};
use fleet_actors::{CallOptions, FleetError, Job, SchedulingSpec};
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) async fn raw_call(raw: ActorRef<RawMsg>) -> Result<u64, FleetError> {
    match raw
        .call(|p| RawMsg::Incr(1, p), Some(Duration::from_secs(10)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        other => Err(FleetError::internal(format!("raw call: {other:?}"))),
    }
}

pub(crate) fn raw_group(name: &str) -> String {
    format!("bench/raw/{name}")
}

/// The peer process: a joined node labelled `bench=NAME` plus the baseline actor.
pub async fn peer(head: String, name: String) -> Result<(), FleetError> {
    let mut labels = BTreeMap::new();
    labels.insert("bench".to_string(), name.clone());
    let node = JoinedNode::start(JoinConfig {
        name: name.clone(),
        resources: NodeResources {
            cpu_millis: 1_000_000,
            mem_mib: 1 << 20,
            gpus: vec![],
            port_range: crate::node::ports::DEFAULT_PORT_RANGE,
            labels,
        },
        registry: fleet_actors::engine::builtin::registry(),
        store: None,
        agents: crate::rollout::AgentRegistry::builtin(),
        run_dir: std::env::temp_dir().join(format!("fleet-bench-{}", std::process::id())),
        runs_root: None,
        head,
        transport: TransportConfig {
            cookie: loopback_cookie::load_or_create()?,
            ..TransportConfig::loopback()
        },
        max_message: 8 << 20,
    })
    .await?;
    let (raw, _) = Actor::spawn(None, RawCounter, ())
        .await
        .map_err(FleetError::internal)?;
    ractor::pg::join_scoped("fleet".into(), raw_group(&name), vec![raw.get_cell()]);
    node.run_until(crate::cli::shutdown_signal()).await
}

/// The baseline actor of peer `name`, once its process group is visible here.
pub(crate) async fn find_raw(name: &str) -> Result<ActorRef<RawMsg>, FleetError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = ractor::pg::get_scoped_members(&"fleet".to_string(), &raw_group(name))
            .into_iter()
            .find(|c| !c.get_id().is_local());
        if let Some(c) = found {
            return Ok(c.into());
        }
        if Instant::now() > deadline {
            return Err(FleetError::internal(format!(
                "the baseline actor of {name} is not visible"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the peer processes when dropped.
pub(crate) struct Peers(pub(crate) Vec<std::process::Child>);

impl Drop for Peers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A head that places no workers (spread placement) and `n` bench peers joined to it.
pub(crate) async fn head_with_peers(n: usize) -> Result<(Cluster, Peers), FleetError> {
    let head = Cluster::head()
        .no_workers()
        .policy(Policy::Spread)
        .start()
        .await?;
    let addr = format!("127.0.0.1:{}", head.listen_port());
    let mut events = head.member_events();
    let peers = spawn_peers(&addr, n)?;
    wait_joined(&mut events, n).await?;
    Ok((head, peers))
}

pub(crate) fn spawn_peers(head: &str, n: usize) -> Result<Peers, FleetError> {
    let exe = std::env::current_exe()
        .map_err(|e| FleetError::internal(format!("finding this executable: {e}")))?;
    let mut peers = Peers(vec![]);
    for i in 0..n {
        let child = std::process::Command::new(&exe)
            .args(["bench", "cluster-peer", "--join", head, "--name"])
            .arg(format!("peer{i}"))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| FleetError::internal(format!("starting a peer: {e}")))?;
        peers.0.push(child);
    }
    Ok(peers)
}

pub(crate) async fn wait_joined(
    events: &mut tokio::sync::broadcast::Receiver<MemberEvent>,
    n: usize,
) -> Result<(), FleetError> {
    let mut joined = 0;
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while joined < n {
            if let Ok(MemberEvent::Joined { .. }) = events.recv().await {
                joined += 1;
            }
        }
    })
    .await
    .map_err(|_| FleetError::timeout(format!("{n} bench peers to join"), deadline))
}

/// Runs the cross-node benchmarks and returns their tables.
pub async fn run(
    iters: usize,
    in_flight: usize,
    create: u32,
    rounds: usize,
) -> Result<String, FleetError> {
    let (head, _peers) = head_with_peers(3).await?;
    let s = head.scheduler().clone();

    // One worker on peer0 and the baseline actor in the same process.
    s.create_workers(
        Job::new("bench", 1).spec(SchedulingSpec::default().node_label("bench", "peer0")),
    )
    .await?;
    let w = s.get_workers("bench", Duration::from_secs(30)).await?;
    let engine = s.create_engine(&w[0].id, "c", "counter", &()).await?;
    let raw = find_raw("peer0").await?;
    let t = Duration::from_secs(10);
    let idem = CallOptions::default().idempotent(true).timeout(t);
    let non_idem = CallOptions::default().timeout(t);

    // Latency, sequential, interleaved so that load drift hits all alike.
    let warm = iters / 10 + 100;
    let (mut raw_s, mut idem_s, mut non_s) = (vec![], vec![], vec![]);
    for i in 0..warm + iters {
        let a = Instant::now();
        raw_call(raw.clone()).await?;
        let da = a.elapsed();
        let b = Instant::now();
        let _: u64 = engine.call("incr", &1u64, &idem).await?;
        let db = b.elapsed();
        let c = Instant::now();
        let _: u64 = engine.call("incr", &1u64, &non_idem).await?;
        let dc = c.elapsed();
        if i >= warm {
            raw_s.push(da);
            idem_s.push(db);
            non_s.push(dc);
        }
    }
    let raw_s = Samples::new(
        "raw ractor_cluster call, head → actor in the node process",
        raw_s,
    );
    let idem_s = Samples::new(
        "scheduler call → worker on the other node, idempotent",
        idem_s,
    );
    let non_s = Samples::new(
        "scheduler call → worker on the other node, non-idempotent (request id recorded)",
        non_s,
    );
    let mut out =
        String::from("### Cross-node call: fleet vs raw ractor_cluster (same session)\n\n");
    out += &format!(
        "{}\n{}\n{}\n{}\n\n",
        header(),
        row(&raw_s, None),
        row(&idem_s, Some(&raw_s)),
        row(&non_s, Some(&raw_s))
    );

    // Throughput with `in_flight` calls outstanding.
    let total = iters.max(in_flight);
    let per = total / in_flight;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let raw = raw.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    raw_call(raw.clone()).await?;
                }
                Ok::<_, FleetError>(())
            })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        r.map_err(FleetError::internal)??;
    }
    let raw_rate = (per * in_flight) as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let e = engine.clone();
            let o = idem.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    let _: u64 = e.call("incr", &1u64, &o).await?;
                }
                Ok::<_, FleetError>(())
            })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        r.map_err(FleetError::internal)??;
    }
    let fleet_rate = (per * in_flight) as f64 / t0.elapsed().as_secs_f64();
    out += &format!(
        "### Calls per second across the link ({in_flight} in flight, {} calls in all)\n\n| path | calls/s | ratio to raw |\n| --- | ---: | ---: |\n| raw ractor_cluster call | {raw_rate:.0} | baseline |\n| scheduler call → worker on the other node (idempotent; engine calls run one at a time per worker) | {fleet_rate:.0} | {:.2}× |\n\n",
        per * in_flight,
        fleet_rate / raw_rate
    );
    s.delete_workers(None, false).await?;

    // Creating many workers over the three nodes.
    let mut samples = vec![];
    let mut spread = String::new();
    for round in 0..rounds + 1 {
        let t0 = Instant::now();
        s.create_workers(Job::new("many", create)).await?;
        let ws = s.get_workers("many", Duration::from_secs(120)).await?;
        let d = t0.elapsed();
        if round == 0 {
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for w in &ws {
                *per_node.entry(w.node.name.clone()).or_default() += 1;
            }
            spread = format!("{per_node:?}");
        } else {
            samples.push(d);
        }
        s.delete_workers(Some("many"), false).await?;
    }
    let c = Samples::new(
        format!("create {create} RpcServer workers over 3 nodes + all answer a ping"),
        samples,
    );
    out += &format!(
        "### Creating workers over 3 node processes (spread: {spread})\n\n| path | rounds | median | p90 | per worker (median) |\n| --- | ---: | ---: | ---: | ---: |\n| {} | {} | {} | {} | {} |\n",
        c.name,
        c.len(),
        fmt(c.p50()),
        fmt(c.pct(90.0)),
        fmt(c.p50() / create.max(1)),
    );
    head.shutdown().await?;
    Ok(out)
}
