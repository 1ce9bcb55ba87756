//! The head actor: admits nodes, tracks their heartbeats, marks them suspect and down, frees what
//! a lost node held, and answers `fleet status`.
//!
//! Failure detection has two sources, whichever comes first: the session to the node closed
//! (a SIGKILLed node: the kernel closes its sockets), or no heartbeat for the timeout (a hung
//! node whose connection stays open: ractor_cluster alone would never notice). The handlers
//! never wait on nodes: marking a node down and gathering a status report run in tasks.

use super::events::{EventBus, MemberEvent};
use super::protocol::{
    agent_group, Admitted, Beat, BeatAck, HeadMsg, JoinRequest, MemberState, NodeRow, StatusReport,
    WorkerRow, FLEET_SCOPE,
};
use crate::node::messages::AgentMsg;
use crate::node::resources::NodeResources;
use crate::scheduler::{Scheduler, WorkerState};
use fleet_actors::wire::Wire;
use fleet_actors::{FleetError, NodeId};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Heartbeat and lease settings, chosen by the head and handed to every node at join.
///
/// The lease must run out on a cut-off node *before* the head gives the node up, so that the
/// node has killed its workers' children before the driver recreates them elsewhere. The head
/// declares a node down at the earliest `timeout` after it *processed* the node's last beat,
/// which was sent at most one `heartbeat` after the last beat the node saw acknowledged; the
/// node fences `lease` after *sending* that acknowledged beat, noticed within one lease check
/// (a quarter heartbeat). [`MembershipConfig::validate`] therefore asks for
/// `lease <= timeout - heartbeat - sweep - margin` (sweep: the head's check period, half a
/// heartbeat; margin: half a heartbeat for the check and the kill).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often nodes beat (default 500 ms).
    pub heartbeat: Duration,
    /// A node without a beat for this long is down (default 3 s).
    pub timeout: Duration,
    /// A node that has not heard from the head for this long kills its workers' children,
    /// stops its workers and rejoins (default: half the timeout).
    pub lease: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig::new(Duration::from_millis(500), Duration::from_secs(3))
    }
}

impl MembershipConfig {
    /// `heartbeat` and `timeout` with the default lease, half the timeout.
    pub fn new(heartbeat: Duration, timeout: Duration) -> Self {
        MembershipConfig {
            heartbeat,
            timeout,
            lease: timeout / 2,
        }
    }

    /// How often the head checks every member's last beat.
    pub fn sweep_period(&self) -> Duration {
        (self.heartbeat / 2).max(Duration::from_millis(20))
    }

    /// How often a node checks its own lease (also between heartbeats).
    pub fn lease_check(&self) -> Duration {
        (self.heartbeat / 4).max(Duration::from_millis(10))
    }

    /// The longest safe lease for this heartbeat and timeout:
    /// `timeout - heartbeat - sweep period - margin` (margin: half a heartbeat).
    pub fn max_lease(&self) -> Duration {
        self.timeout
            .saturating_sub(self.heartbeat)
            .saturating_sub(self.sweep_period())
            .saturating_sub(self.heartbeat / 2)
    }

    /// Refuses settings under which a cut-off node could still run its workers after the head
    /// gave them up: the lease must be at least two heartbeats (one lost beat must not fence)
    /// and at most [`MembershipConfig::max_lease`].
    pub fn validate(&self) -> Result<(), FleetError> {
        let ms = |d: Duration| d.as_millis();
        let what = "the membership settings (--heartbeat, --timeout, --lease)";
        if self.heartbeat.is_zero() || self.timeout <= self.heartbeat {
            return Err(FleetError::bad_request(
                what,
                format!(
                    "timeout {} ms (--timeout) must be longer than heartbeat {} ms (--heartbeat)",
                    ms(self.timeout),
                    ms(self.heartbeat)
                ),
            ));
        }
        let max = self.max_lease();
        let min = self.heartbeat * 2;
        if self.lease < min || self.lease > max {
            return Err(FleetError::bad_request(
                what,
                format!(
                    "lease {} ms (--lease) must be between two heartbeats ({} ms, --heartbeat {} ms) and timeout - heartbeat - sweep - margin = {} ms (--timeout {} ms): a node cut off from the head must stop its workers before the head gives them up; leave --lease unset for half the timeout, or raise --timeout",
                    ms(self.lease),
                    ms(min),
                    ms(self.heartbeat),
                    ms(max),
                    ms(self.timeout)
                ),
            ));
        }
        Ok(())
    }
}

/// The head actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Head;

/// What the head starts with.
#[derive(Clone, Debug)]
pub struct HeadArgs {
    /// The cluster id handed to nodes.
    pub cluster_id: String,
    /// Failure detection settings.
    pub config: MembershipConfig,
    /// The scheduler that places workers on members.
    pub scheduler: Scheduler,
    /// Where membership events go.
    pub events: EventBus,
    /// The head's own node, if it runs workers.
    pub local_node: Option<(NodeId, NodeResources)>,
    /// The head's transport, to close the session of a node it declares down (so that the
    /// node's fresh connection after a partition meets no stale session of the same peer).
    pub transport: Option<super::Transport>,
}

struct Member {
    session: u64,
    agent: ActorRef<AgentMsg>,
    resources: NodeResources,
    pid: u32,
    store: Option<String>,
    state: MemberState,
    last_beat: Instant,
    joined: Instant,
    /// When it went down or left.
    gone: Option<Instant>,
}

/// How long a down or left member stays in `fleet status` (and its liveness signal in the
/// scheduler) before the head forgets it: every fence and rejoin adds a member, and the sweep
/// walks them all.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The members gone (down or left) for longer than `ttl` at `now`.
fn expired<'a>(
    gone: impl Iterator<Item = (&'a NodeId, Option<Instant>)>,
    now: Instant,
    ttl: Duration,
) -> Vec<NodeId> {
    gone.filter(|(_, g)| g.is_some_and(|g| now.saturating_duration_since(g) > ttl))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The head's state.
pub struct HeadState {
    args: HeadArgs,
    local_agent: Option<ActorRef<AgentMsg>>,
    members: BTreeMap<NodeId, Member>,
    /// When the last sweep ran: a sweep more than a heartbeat late means the detector itself
    /// stalled, and quiet times measured across the stall say nothing about the nodes.
    last_sweep: Instant,
}

impl HeadState {
    fn admit(&mut self, req: JoinRequest) -> Result<(Admitted, Option<MemberEvent>), FleetError> {
        let what = format!("admitting node {}", req.node);
        let version = env!("CARGO_PKG_VERSION");
        if req.version != version {
            return Err(FleetError::bad_request(
                what,
                format!(
                    "it runs fleet {} but the head runs {version}; run the same version everywhere",
                    req.version
                ),
            ));
        }
        let admitted = Admitted {
            cluster_id: self.args.cluster_id.clone(),
            heartbeat_ms: self.args.config.heartbeat.as_millis() as u64,
            timeout_ms: self.args.config.timeout.as_millis() as u64,
            lease_ms: self.args.config.lease.as_millis() as u64,
        };
        if let Some(m) = self.members.get(&req.node) {
            return match &m.state {
                MemberState::Alive | MemberState::Suspect => Ok((admitted, None)),
                MemberState::Down { reason } => Err(FleetError::NodeLost {
                    node: req.node.to_string(),
                    reason: format!("{reason}; join again under a new id"),
                }),
                MemberState::Left => Err(FleetError::bad_request(
                    what,
                    "it left; join again under a new id",
                )),
            };
        }
        let agent =
            ractor::pg::get_scoped_members(&FLEET_SCOPE.to_string(), &agent_group(&req.node))
                .into_iter()
                .find(|c| !c.get_id().is_local())
                .ok_or_else(|| FleetError::Unavailable {
                    what: what.clone(),
                    detail: "its node agent is not visible over the connection yet; retry the join"
                        .into(),
                })?;
        let session = agent.get_id().node();
        let agent: ActorRef<AgentMsg> = agent.into();
        let now = Instant::now();
        self.members.insert(
            req.node.clone(),
            Member {
                session,
                agent,
                resources: req.resources.clone(),
                pid: req.pid,
                store: req.store.clone(),
                state: MemberState::Alive,
                last_beat: now,
                joined: now,
                gone: None,
            },
        );
        Ok((
            admitted,
            Some(MemberEvent::Joined {
                node: req.node,
                resources: req.resources,
            }),
        ))
    }

    /// The members by state, as the `fleet_nodes` gauge (down and left ones until they are
    /// forgotten).
    fn observe_members(&self) {
        let (mut alive, mut suspect, mut down, mut left) = (0u32, 0u32, 0u32, 0u32);
        for m in self.members.values() {
            match m.state {
                MemberState::Alive => alive += 1,
                MemberState::Suspect => suspect += 1,
                MemberState::Down { .. } => down += 1,
                MemberState::Left => left += 1,
            }
        }
        for (state, n) in [
            ("alive", alive),
            ("suspect", suspect),
            ("down", down),
            ("left", left),
        ] {
            metrics::gauge!("fleet_nodes", "state" => state).set(f64::from(n));
        }
    }

    /// Marks `node` down (once) and hands the scheduler work to a task.
    fn down(&mut self, node: &NodeId, reason: String, left: bool) {
        let Some(m) = self.members.get_mut(node) else {
            return;
        };
        if matches!(m.state, MemberState::Down { .. } | MemberState::Left) {
            return;
        }
        m.gone = Some(Instant::now());
        m.state = if left {
            MemberState::Left
        } else {
            MemberState::Down {
                reason: reason.clone(),
            }
        };
        if left {
            tracing::info!(node = %node, "node left");
        } else {
            tracing::error!(node = %node, %reason, "node down");
        }
        // Calls in flight fail now; the rest (bookkeeping under the scheduler's lock) follows.
        self.args.scheduler.inner.liveness.mark_lost(
            node,
            FleetError::NodeLost {
                node: node.to_string(),
                reason: reason.clone(),
            },
        );
        let scheduler = self.args.scheduler.clone();
        let events = self.args.events.clone();
        let node = node.clone();
        let close = (!left)
            .then(|| self.args.transport.clone().map(|t| (t, m.session)))
            .flatten();
        tokio::spawn(async move {
            if let Some((t, session)) = close {
                t.close_session(session).await;
            }
            scheduler.node_lost(&node, &reason).await;
            events.publish(if left {
                MemberEvent::Left { node }
            } else {
                MemberEvent::Down { node, reason }
            });
        });
    }

    fn sweep(&mut self) {
        self.observe_members();
        let timeout = self.args.config.timeout;
        let now = Instant::now();
        let since = now.saturating_duration_since(self.last_sweep);
        self.last_sweep = now;
        if since > self.args.config.sweep_period() + self.args.config.heartbeat {
            // The detector itself was not running (the head process was stopped or starved):
            // beats may have arrived unread. Start every quiet time afresh instead of declaring
            // nodes down for the head's own stall.
            tracing::warn!(
                late_ms = since.as_millis() as u64,
                "the failure detector stalled; restarting every member's quiet time"
            );
            for m in self.members.values_mut() {
                m.last_beat = m.last_beat.max(now);
            }
            return;
        }
        for id in expired(
            self.members.iter().map(|(id, m)| (id, m.gone)),
            now,
            FORGET_AFTER,
        ) {
            self.members.remove(&id);
            self.args.scheduler.inner.liveness.forget(&id);
            tracing::debug!(node = %id, "forgot a member gone for longer than {FORGET_AFTER:?}");
        }
        let mut down = Vec::new();
        for (id, m) in self.members.iter_mut() {
            let quiet = now.saturating_duration_since(m.last_beat);
            match m.state {
                MemberState::Alive | MemberState::Suspect if quiet > timeout => {
                    down.push((id.clone(), quiet));
                }
                MemberState::Alive if quiet > timeout / 2 => {
                    m.state = MemberState::Suspect;
                    tracing::warn!(node = %id, quiet_ms = quiet.as_millis() as u64, "node suspect: heartbeats are late");
                    self.args
                        .events
                        .publish(MemberEvent::Suspect { node: id.clone() });
                }
                _ => {}
            }
        }
        for (id, quiet) in down {
            self.down(
                &id,
                format!(
                    "no heartbeat for {} ms (timeout {} ms)",
                    quiet.as_millis(),
                    timeout.as_millis()
                ),
                false,
            );
        }
    }

    fn rows(&self) -> Vec<(NodeRow, Option<ActorRef<AgentMsg>>)> {
        let now = Instant::now();
        self.members
            .iter()
            .map(|(id, m)| {
                let live = matches!(m.state, MemberState::Alive | MemberState::Suspect);
                (
                    NodeRow {
                        node: id.to_string(),
                        state: m.state.clone(),
                        is_head: false,
                        pid: m.pid,
                        resources: m.resources.clone(),
                        free_cpu_millis: 0,
                        free_mem_mib: 0,
                        free_gpus: vec![],
                        workers: 0,
                        last_beat_ms: now.saturating_duration_since(m.last_beat).as_millis() as u64,
                        store: m.store.clone(),
                    },
                    live.then(|| m.agent.clone()),
                )
            })
            .collect()
    }
}

/// Child pids by worker, from one node agent (empty if it does not answer in time).
async fn child_pids(agent: ActorRef<AgentMsg>) -> Vec<(String, u32)> {
    match agent
        .call(AgentMsg::Info, Some(Duration::from_secs(2)))
        .await
    {
        Ok(CallResult::Success(info)) => match info.flatten() {
            Ok(info) => info
                .workers
                .into_iter()
                .filter_map(|w| w.child_pid.map(|p| (w.worker.to_string(), p)))
                .collect(),
            Err(_) => vec![],
        },
        _ => vec![],
    }
}

async fn status(
    scheduler: Scheduler,
    cluster_id: String,
    local: Option<(NodeId, NodeResources)>,
    local_agent: Option<ActorRef<AgentMsg>>,
    mut rows: Vec<(NodeRow, Option<ActorRef<AgentMsg>>)>,
) -> StatusReport {
    if let Some((id, res)) = &local {
        rows.insert(
            0,
            (
                NodeRow {
                    node: id.to_string(),
                    state: MemberState::Alive,
                    is_head: true,
                    pid: std::process::id(),
                    resources: res.clone(),
                    free_cpu_millis: 0,
                    free_mem_mib: 0,
                    free_gpus: vec![],
                    workers: 0,
                    last_beat_ms: 0,
                    store: crate::store::Store::for_node(&id.to_string())
                        .map(|s| s.url().to_string()),
                },
                local_agent,
            ),
        );
    }
    let pids: HashMap<String, u32> =
        futures::future::join_all(rows.iter().filter_map(|(_, a)| a.clone()).map(child_pids))
            .await
            .into_iter()
            .flatten()
            .collect();
    let (nodes, roles) = scheduler.snapshot().await;
    let ledgers: HashMap<String, _> = nodes
        .into_iter()
        .map(|n| (n.node.to_string(), n.ledger))
        .collect();
    let nodes = rows
        .into_iter()
        .map(|(mut row, _)| {
            if let Some(l) = ledgers.get(&row.node) {
                row.free_cpu_millis = l.free_cpu();
                row.free_mem_mib = l.free_mem();
                row.free_gpus = l.free_gpus().collect();
                row.workers = l.holders() as u64;
            }
            row
        })
        .collect();
    let roles = roles
        .into_iter()
        .map(|(role, workers)| {
            let rows = workers
                .into_iter()
                .map(|w| {
                    let real = w
                        .alias_of
                        .clone()
                        .unwrap_or_else(|| w.id.clone())
                        .to_string();
                    WorkerRow {
                        worker: w.id.to_string(),
                        alias_of: w.alias_of.map(|a| a.to_string()),
                        node: w.node.to_string(),
                        kind: w.kind,
                        state: match w.state {
                            WorkerState::Starting => "starting".into(),
                            WorkerState::Running => "running".into(),
                            WorkerState::Failed(e) => format!("failed: {}", e.kind()),
                        },
                        gpus: w.gpus,
                        ports: w.ports,
                        child_pid: pids.get(&real).copied(),
                    }
                })
                .collect();
            (role, rows)
        })
        .collect();
    StatusReport {
        cluster_id,
        nodes,
        roles,
    }
}

impl Actor for Head {
    type Msg = HeadMsg;
    type State = HeadState;
    type Arguments = (HeadArgs, Option<ActorRef<AgentMsg>>);

    async fn pre_start(
        &self,
        myself: ActorRef<HeadMsg>,
        (args, local_agent): Self::Arguments,
    ) -> Result<HeadState, ActorProcessingErr> {
        let period = args.config.sweep_period();
        myself.send_interval(period, || HeadMsg::Sweep(Wire::new(())));
        tracing::info!(cluster = %args.cluster_id, heartbeat_ms = args.config.heartbeat.as_millis() as u64, timeout_ms = args.config.timeout.as_millis() as u64, "head started");
        Ok(HeadState {
            args,
            local_agent,
            members: BTreeMap::new(),
            last_sweep: Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HeadMsg>,
        msg: HeadMsg,
        state: &mut HeadState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HeadMsg::Join(req, port) => {
                let r = match req.into_result() {
                    Ok(req) => {
                        let node = req.node.clone();
                        let r = state.admit(req);
                        if let Ok((_, Some(MemberEvent::Joined { resources, .. }))) = &r {
                            if let Some(m) = state.members.get(&node) {
                                // The head's own scheduler: it always takes nodes.
                                let _ = state
                                    .args
                                    .scheduler
                                    .add_node(node.clone(), m.agent.clone(), resources.clone())
                                    .await;
                            }
                            tracing::info!(node = %node, cpus = resources.cpu_millis as f64 / 1000.0, gpus = ?resources.gpus, labels = ?resources.labels, "node joined");
                        }
                        match r {
                            Ok((admitted, ev)) => {
                                if let Some(ev) = ev {
                                    state.args.events.publish(ev);
                                }
                                Ok(admitted)
                            }
                            Err(e) => {
                                tracing::warn!(node = %node, error = %e, "join refused");
                                state.args.events.publish(MemberEvent::Refused {
                                    peer: node.to_string(),
                                    reason: e.to_string(),
                                });
                                Err(e)
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = port.send(Wire::new(r));
            }
            HeadMsg::Beat(beat, port) => {
                let ack = match beat.into_result() {
                    Ok(Beat { node, roster, .. }) => match state.members.get_mut(&node) {
                        Some(m) if matches!(m.state, MemberState::Alive | MemberState::Suspect) => {
                            m.last_beat = Instant::now();
                            if let Some(roster) = roster {
                                let scheduler = state.args.scheduler.clone();
                                let node = node.clone();
                                tokio::spawn(async move {
                                    scheduler.reconcile_node(&node, &roster).await
                                });
                            }
                            if m.state == MemberState::Suspect {
                                tracing::info!(node = %node, "node beats again");
                                m.state = MemberState::Alive;
                            }
                            BeatAck::Alive
                        }
                        Some(m) => BeatAck::NotMember {
                            reason: match &m.state {
                                MemberState::Down { reason } => {
                                    format!("the head marked it down: {reason}")
                                }
                                _ => "it left".into(),
                            },
                        },
                        None => BeatAck::NotMember {
                            reason: "the head does not know it (restarted head?)".into(),
                        },
                    },
                    Err(e) => BeatAck::NotMember {
                        reason: e.to_string(),
                    },
                };
                let _ = port.send(Wire::new(ack));
            }
            HeadMsg::Leave(node) => {
                if let Ok(node) = node.into_result() {
                    state.down(&node, "it left".into(), true);
                }
            }
            HeadMsg::WorkerEvent(ev) => {
                if let Ok(ev) = ev.into_result() {
                    let scheduler = state.args.scheduler.clone();
                    tokio::spawn(async move { scheduler.apply_event(ev).await });
                }
            }
            HeadMsg::Status(port) => {
                let rows = state.rows();
                let scheduler = state.args.scheduler.clone();
                let cluster_id = state.args.cluster_id.clone();
                let local = state.args.local_node.clone();
                let local_agent = state.local_agent.clone();
                tokio::spawn(async move {
                    let report = status(scheduler, cluster_id, local, local_agent, rows).await;
                    let _ = port.send(Wire::new(Ok(report)));
                });
            }
            HeadMsg::Sweep(_) => state.sweep(),
            HeadMsg::SessionClosed(session) => {
                if let Ok(session) = session.into_result() {
                    let hit: Vec<NodeId> = state
                        .members
                        .iter()
                        .filter(|(_, m)| {
                            m.session == session
                                && matches!(m.state, MemberState::Alive | MemberState::Suspect)
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in hit {
                        let up = state
                            .members
                            .get(&id)
                            .map(|m| m.joined.elapsed().as_millis())
                            .unwrap_or(0);
                        state.down(
                            &id,
                            format!("its connection closed (member for {up} ms)"),
                            false,
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{expired, HeadArgs, HeadState, Member, MembershipConfig};
    use crate::membership::{EventBus, MemberState};
    use crate::node::{AgentArgs, LocalDirectory, NodeAgent, NodeResources};
    use crate::scheduler::{Scheduler, SchedulerConfig};
    use fleet_actors::NodeId;
    use std::collections::BTreeMap;
    use std::time::Instant;

    /// A head state with one member, quiet for twice the timeout, whose last sweep ran
    /// `since_sweep` ago.
    async fn quiet_member(since_sweep: Duration) -> (HeadState, NodeId) {
        let node = NodeId::generate("n");
        let resources = NodeResources {
            cpu_millis: 1000,
            mem_mib: 64,
            gpus: vec![],
            port_range: (50100, 50109),
            labels: BTreeMap::new(),
        };
        let (agent, _) = ractor::Actor::spawn(
            None,
            NodeAgent,
            AgentArgs {
                node: node.clone(),
                resources: resources.clone(),
                registry: fleet_actors::engine::builtin::registry(),
                directory: LocalDirectory::default(),
                events: None,
                run_dir: std::env::temp_dir(),
                runs_root: None,
                max_message: 1 << 20,
                agents: crate::rollout::AgentRegistry::builtin(),
                store: None,
                leftovers: Default::default(),
            },
        )
        .await
        .unwrap();
        let config = MembershipConfig::new(ms(20), ms(200));
        let now = Instant::now();
        let mut st = HeadState {
            args: HeadArgs {
                cluster_id: "c".into(),
                config,
                scheduler: Scheduler::new(
                    SchedulerConfig::default(),
                    LocalDirectory::default(),
                    None,
                ),
                events: EventBus::default(),
                local_node: None,
                transport: None,
            },
            local_agent: None,
            members: BTreeMap::new(),
            last_sweep: now,
        };
        // Instants cannot go back before boot: move "now" forward instead of the past back.
        std::thread::sleep(since_sweep.max(config.timeout * 2));
        st.last_sweep = Instant::now() - since_sweep;
        st.members.insert(
            node.clone(),
            Member {
                session: 0,
                agent,
                resources,
                pid: 1,
                store: None,
                state: MemberState::Alive,
                last_beat: now,
                joined: now,
                gone: None,
            },
        );
        (st, node)
    }

    #[tokio::test]
    async fn a_sweep_that_runs_late_restarts_quiet_times_instead_of_declaring_nodes_down() {
        let (mut st, node) = quiet_member(ms(100)).await;
        st.sweep();
        assert_eq!(st.members[&node].state, MemberState::Alive);
        let (mut st, node) = quiet_member(ms(5)).await;
        st.sweep();
        assert!(matches!(st.members[&node].state, MemberState::Down { .. }));
    }

    #[test]
    fn members_gone_for_longer_than_the_ttl_are_forgotten_and_no_others() {
        let base = Instant::now();
        let now = base + Duration::from_secs(601);
        let ttl = Duration::from_secs(600);
        let (a, b, c) = (
            NodeId::generate("a"),
            NodeId::generate("b"),
            NodeId::generate("c"),
        );
        let members = [
            (&a, None),
            (&b, Some(base)),
            (&c, Some(base + Duration::from_secs(2))),
        ];
        assert_eq!(expired(members.into_iter(), now, ttl), vec![b.clone()]);
    }
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_default_lease_is_half_the_timeout_and_valid() {
        let d = MembershipConfig::default();
        assert_eq!(d.lease, d.timeout / 2);
        d.validate().unwrap();
        MembershipConfig::new(ms(200), ms(1500)).validate().unwrap();
        MembershipConfig::new(ms(100), ms(1000)).validate().unwrap();
    }

    #[test]
    fn a_lease_not_safely_below_the_timeout_is_refused_naming_both_values_and_flags() {
        let mut c = MembershipConfig::new(ms(500), ms(3000));
        c.lease = ms(3000);
        let e = c.validate().unwrap_err().to_string();
        for want in ["3000 ms", "--lease", "--timeout", "2000 ms"] {
            assert!(e.contains(want), "{want} missing in: {e}");
        }
        c.lease = c.max_lease();
        c.validate().unwrap();
        c.lease = ms(999);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--heartbeat"));
        assert!(MembershipConfig::new(ms(500), ms(500)).validate().is_err());
    }
}
