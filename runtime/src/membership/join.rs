//! The node side of membership: connect to the head, join, beat, and fence.
//!
//! A node dials the head (nodes need no inbound connectivity), starts a fresh node agent under a
//! fresh [`NodeId`], puts it in the `agent/<id>` group so the head can find it, and asks to
//! join. Then it beats every `heartbeat` and holds a lease: when the head has not answered for
//! `lease` (partition, hung head, or this process was stopped), or answers that this node is
//! no longer a member, or the connection closes, the node **fences**: it SIGKILLs every child
//! process of its workers (with their process groups, see [`super::fence`]) at once, then stops
//! its agent, which stops every worker (an in-process engine's callers are answered with an
//! error; its thread ends after its current call, and until then the node withholds what it
//! holds, see [`crate::node::leftovers`]). The lease is checked on a timer of its own, a quarter
//! heartbeat, and is shorter than the head's timeout ([`super::MembershipConfig::validate`]), so
//! a cut-off node has killed its children before the head declares it down. Then it joins again
//! under a new id, over a *fresh* connection (the old one is closed: across a partition it may
//! be half dead), with exponential backoff and jitter capped at 2 s, so a node is back within
//! about that long after a partition heals. Its old workers stay lost; the caller recreates
//! them.

use super::protocol::{
    agent_group, head_group, Admitted, Beat, BeatAck, HeadMsg, JoinRequest, FLEET_SCOPE,
};
use super::transport::{remote_members, SessionEventKind, Transport, TransportConfig};
use crate::node::directory::LocalDirectory;
use crate::node::leftovers::Leftovers;
use crate::node::messages::AgentMsg;
use crate::node::resources::NodeResources;
use crate::node::{AgentArgs, NodeAgent};
use fleet_actors::wire::Wire;
use fleet_actors::{EngineRegistry, FleetError, NodeId};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How a node joins a cluster.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// The node's name (ids are `name#random`).
    pub name: String,
    /// What it offers.
    pub resources: NodeResources,
    /// Engine types its workers can create.
    pub registry: EngineRegistry,
    /// Rust rollout agents the node's rollout workers can run.
    pub agents: crate::rollout::AgentRegistry,
    /// Where worker logs go.
    pub run_dir: PathBuf,
    /// Where the logs of submitted jobs' workers go (`<runs_root>/<job>/logs/`).
    pub runs_root: Option<PathBuf>,
    /// The head's address, `HOST:PORT`.
    pub head: String,
    /// How this node listens and authenticates.
    pub transport: TransportConfig,
    /// Largest call result or HTTP body the node sends back.
    pub max_message: usize,
    /// The node's object store (restarted under the new id after a fence, like the agent).
    pub store: Option<crate::store::StoreConfig>,
}

/// What the node is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePhase {
    /// Connecting or joining.
    Joining,
    /// A member under this id.
    Member {
        /// The id of this admission.
        node: NodeId,
        /// The cluster.
        cluster_id: String,
    },
}

/// A node process's membership, running in a task.
#[derive(Debug)]
pub struct JoinedNode {
    transport: Transport,
    stop: watch::Sender<bool>,
    phase: watch::Receiver<NodePhase>,
    task: tokio::task::JoinHandle<Result<(), FleetError>>,
}

impl JoinedNode {
    /// Starts the node's server and its join loop.
    pub async fn start(cfg: JoinConfig) -> Result<JoinedNode, FleetError> {
        let name = format!("{}-{:08x}", cfg.name, rand::random::<u32>());
        let transport = Transport::start(&name, &cfg.transport).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (phase_tx, phase) = watch::channel(NodePhase::Joining);
        let t = transport.clone();
        let task = tokio::spawn(async move { run(cfg, t, stop_rx, phase_tx).await });
        Ok(JoinedNode {
            transport,
            stop,
            phase,
            task,
        })
    }

    /// The port this node's server listens on.
    pub fn listen_port(&self) -> u16 {
        self.transport.port
    }

    /// Membership changes of this node.
    pub fn phase(&self) -> watch::Receiver<NodePhase> {
        self.phase.clone()
    }

    /// Runs until `shutdown` resolves (then leaves cleanly) or the join loop gives up (a
    /// refused cookie or version: retrying cannot help).
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), FleetError> {
        let r = tokio::select! {
            r = &mut self.task => Some(r),
            _ = shutdown => None,
        };
        let r = match r {
            Some(r) => r,
            None => {
                let _ = self.stop.send(true);
                (&mut self.task).await
            }
        };
        self.transport.stop();
        r.unwrap_or_else(|e| Err(FleetError::internal(format!("the join loop panicked: {e}"))))
    }
}

/// Exponential backoff with jitter, capped.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    /// After a partition heals the node is back within about this long (plus the join).
    const CAP: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// How long a fence waits for the engine threads of its stopped workers before it rejoins
/// without their resources.
const ENGINE_GRACE: Duration = Duration::from_secs(1);

enum Ended {
    Stop,
    Fence(String),
}

/// Waits `d`, or less if asked to stop; true if asked to stop.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn run(
    cfg: JoinConfig,
    transport: Transport,
    mut stop: watch::Receiver<bool>,
    phase: watch::Sender<NodePhase>,
) -> Result<(), FleetError> {
    let mut backoff = Backoff::new();
    let mut session: Option<(u64, String)> = None;
    let leftovers = Leftovers::default();
    let mut joined_once = false;
    // Children's guards watch this: they end their groups when it stops changing.
    let lease_file = match super::lease_file::LeaseFile::start(&cfg.run_dir) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(dir = %cfg.run_dir.display(), error = %e, "cannot write the lease file: the children of this node will not end on their own if the node is stopped");
            None
        }
    };
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        phase.send_replace(NodePhase::Joining);
        let live = match session.take() {
            Some(s) => transport.sessions().await.contains_key(&s.0).then_some(s),
            None => None,
        };
        let (s, peer) = match live {
            Some(s) => s,
            None => match transport.connect(&cfg.head, Duration::from_secs(10)).await {
                Ok(s) => s,
                // Refused at the first join: the cookie or TLS is wrong and retrying cannot
                // help. After a fence the same settings were accepted before, so a refusal is
                // the head still holding our old session: retry.
                Err(e @ FleetError::BadRequest { .. }) if !joined_once => {
                    tracing::error!(head = %cfg.head, error = %e, "the head refused this node");
                    return Err(e);
                }
                Err(e) => {
                    let d = backoff.step();
                    tracing::warn!(head = %cfg.head, error = %e, retry_in_ms = d.as_millis() as u64, "cannot reach the head");
                    if pause(d, &mut stop).await {
                        return Ok(());
                    }
                    continue;
                }
            },
        };
        session = Some((s, peer.clone()));
        let Some(head) = remote_members(FLEET_SCOPE, &head_group(&peer), s)
            .into_iter()
            .next()
        else {
            let d = backoff.step();
            tracing::warn!(head = %cfg.head, "the process at this address has no fleet head (is it a `fleet node`?); retrying");
            if pause(d, &mut stop).await {
                return Ok(());
            }
            continue;
        };
        let head: ActorRef<HeadMsg> = head.into();

        let node = NodeId::generate(cfg.name.clone());
        // Engine threads of an earlier agent that still run keep what they hold.
        let resources = leftovers.withhold(&cfg.resources);
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let spawned = Actor::spawn(
            None,
            NodeAgent,
            AgentArgs {
                node: node.clone(),
                resources: resources.clone(),
                registry: cfg.registry.clone(),
                directory: LocalDirectory::default(),
                events: Some(events_tx),
                run_dir: cfg.run_dir.clone(),
                runs_root: cfg.runs_root.clone(),
                max_message: cfg.max_message,
                agents: cfg.agents.clone(),
                store: cfg.store.clone(),
                leftovers: leftovers.clone(),
            },
        )
        .await;
        let (agent, _) =
            spawned.map_err(|e| FleetError::internal(format!("node agent did not start: {e}")))?;
        ractor::pg::join_scoped(
            FLEET_SCOPE.to_string(),
            agent_group(&node),
            vec![agent.get_cell()],
        );
        let req = JoinRequest {
            node: node.clone(),
            resources,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            store: crate::store::Store::for_node(&node.to_string()).map(|s| s.url().to_string()),
        };
        let t = Duration::from_secs(10);
        let admitted = match head
            .call(|p| HeadMsg::Join(Wire::new(req), p), Some(t))
            .await
        {
            Ok(CallResult::Success(r)) => r.flatten(),
            Ok(CallResult::Timeout) => Err(FleetError::timeout("joining the head", t)),
            _ => Err(FleetError::Unavailable {
                what: format!("the head at {}", cfg.head),
                detail: "the connection closed during the join".into(),
            }),
        };
        let admitted: Admitted = match admitted {
            Ok(a) => a,
            Err(e) => {
                stop_agent(&agent, "join refused").await;
                if let FleetError::BadRequest { .. } = e {
                    tracing::error!(error = %e, "the head refused to admit this node");
                    return Err(e);
                }
                let d = backoff.step();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "join failed; retrying");
                if pause(d, &mut stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        backoff.reset();
        joined_once = true;
        if let Some(f) = &lease_file {
            f.admitted(Duration::from_millis(
                admitted.lease_ms.max(admitted.heartbeat_ms * 2),
            ));
        }
        ractor::pg::join_scoped(
            format!("fleet/{}", admitted.cluster_id),
            "agents".to_string(),
            vec![agent.get_cell()],
        );
        println!(
            "joined cluster {} as {node} (heartbeat {} ms, lease {} ms)",
            admitted.cluster_id, admitted.heartbeat_ms, admitted.lease_ms
        );
        tracing::info!(node = %node, cluster = %admitted.cluster_id, head = %cfg.head, "joined");
        phase.send_replace(NodePhase::Member {
            node: node.clone(),
            cluster_id: admitted.cluster_id.clone(),
        });
        let h = head.clone();
        let forward = tokio::spawn(async move {
            while let Some(ev) = events_rx.recv().await {
                let _ = h.cast(HeadMsg::WorkerEvent(Wire::new(ev)));
            }
        });

        let ended = beat(
            &head,
            &agent,
            &node,
            &admitted,
            s,
            &transport,
            &mut stop,
            lease_file.as_ref(),
        )
        .await;
        forward.abort();
        // Leaving cleanly, the workers' children get their graceful stop before the lease
        // file stops changing; fenced, they are killed now anyway.
        match ended {
            Ended::Stop => {
                let _ = head.cast(HeadMsg::Leave(Wire::new(node.clone())));
                stop_agent(&agent, "node shutting down").await;
                if let Some(f) = &lease_file {
                    f.lapsed();
                }
                tracing::info!(node = %node, "left the cluster");
                return Ok(());
            }
            Ended::Fence(why) => {
                if let Some(f) = &lease_file {
                    f.lapsed();
                }
                // Children first: nothing the head has given up may keep running while the
                // agent stops gracefully.
                let killed = super::fence::kill_worker_children(&node);
                tracing::error!(node = %node, reason = %why, children_killed = killed.len(), "fencing: killed every child process of this node's workers; stopping its workers, then joining again under a new id");
                println!(
                    "fenced {node}: {why}; killed {} child processes, stopping its workers",
                    killed.len()
                );
                stop_agent(&agent, "fenced").await;
                // A fresh connection for the next join: the old one may be half dead (a
                // partition), and the head has given up the session anyway.
                transport.close_session(s).await;
                session = None;
                let running = leftovers.settle(ENGINE_GRACE).await;
                if !running.is_empty() {
                    tracing::warn!(node = %node, workers = ?running, "zombie engines: in-process engine threads of fenced workers still run their last call; the node withholds their resources until they end");
                }
                if pause(backoff.step(), &mut stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Stops the agent and with it every worker (their child processes are killed by their
/// launchers), waiting a bounded time.
async fn stop_agent(agent: &ActorRef<AgentMsg>, why: &str) {
    if let Err(e) = agent
        .stop_and_wait(Some(why.to_string()), Some(Duration::from_secs(10)))
        .await
    {
        tracing::warn!(error = %e, "node agent did not stop within 10 s; killing it");
        agent.kill();
    }
}

#[allow(clippy::too_many_arguments)]
async fn beat(
    head: &ActorRef<HeadMsg>,
    agent: &ActorRef<AgentMsg>,
    node: &NodeId,
    admitted: &Admitted,
    session: u64,
    transport: &Transport,
    stop: &mut watch::Receiver<bool>,
    lease_file: Option<&super::lease_file::LeaseFile>,
) -> Ended {
    let every = Duration::from_millis(admitted.heartbeat_ms.max(10));
    let lease = Duration::from_millis(admitted.lease_ms.max(admitted.heartbeat_ms * 2));
    // Checked on a timer of its own, not only when a beat is due.
    let mut check = tokio::time::interval((every / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<(Instant, Option<BeatAck>)>();
    let mut sessions = transport.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The lease runs from the sending time of the last beat the head acknowledged.
    let mut last_ok = Instant::now();
    let mut seq = 0u64;
    let expired = |last_ok: Instant| {
        let quiet = last_ok.elapsed();
        (quiet > lease).then(|| {
            Ended::Fence(format!(
                "no answer from the head for {} ms (lease {} ms)",
                quiet.as_millis(),
                lease.as_millis()
            ))
        })
    };
    loop {
        tokio::select! {
            _ = check.tick() => {
                if let Some(fence) = expired(last_ok) {
                    return fence;
                }
            }
            _ = tick.tick() => {
                if let Some(fence) = expired(last_ok) {
                    return fence;
                }
                seq += 1;
                let (node, agent) = (node.clone(), agent.clone());
                let head = head.clone();
                let tx = ack_tx.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    // The roster rides on the beat; a busy agent only costs this beat its roster.
                    let roster = match agent.call(AgentMsg::Roster, Some(every)).await {
                        Ok(CallResult::Success(r)) => r.into_result().ok(),
                        _ => None,
                    };
                    let beat = Beat { node, seq, roster };
                    let r = head
                        .call(|p| HeadMsg::Beat(Wire::new(beat), p), Some(lease))
                        .await;
                    let ack = match r {
                        Ok(CallResult::Success(a)) => a.into_result().ok(),
                        _ => None,
                    };
                    let _ = tx.send((sent, ack));
                });
            }
            Some((sent, ack)) = acks.recv() => match ack {
                Some(BeatAck::Alive) if sent > last_ok => {
                    last_ok = sent;
                    if let Some(f) = lease_file {
                        f.renewed(sent + lease);
                    }
                }
                Some(BeatAck::Alive) => {}
                Some(BeatAck::NotMember { reason }) => {
                    return Ended::Fence(format!("the head no longer counts this node as a member: {reason}"));
                }
                None => {}
            },
            ev = sessions.recv() => {
                if let Ok(ev) = ev {
                    if ev.session == session && ev.kind == SessionEventKind::Closed {
                        return Ended::Fence("the connection to the head closed".into());
                    }
                }
            }
            _ = stop.changed() => return Ended::Stop,
        }
    }
}
