//! The embedded cluster: a whole fleet node inside the caller's process.
//!
//! [`Cluster::local`] is the default way to run fleet: one call starts a ractor_cluster
//! `NodeServer` (so other nodes can join later), a node agent that owns this machine's
//! resources, and a scheduler; the program then creates workers and calls them. Nothing is
//! registered under a fixed name and every process group is scoped by a random cluster id, so
//! several clusters can live in one process (as `cargo test` runs tests).
//!
//! [`Cluster::head`] is the same with a head: other machines' `fleet node --join ADDR` join it
//! and the scheduler places workers across all of them (see [`crate::membership`]).

use crate::membership::runtime::MembershipRuntime;
use crate::membership::{
    self, EventBus, Head, HeadArgs, HeadMsg, MemberEvent, MembershipConfig, StatusReport,
    TlsConfig, Transport, TransportConfig,
};
use crate::node::directory::LocalDirectory;
use crate::node::messages::{AgentMsg, NodeInfo};
use crate::node::ports::PortLease;
use crate::node::resources::NodeResources;
use crate::node::system;
use crate::node::{AgentArgs, NodeAgent};
use crate::scheduler::{Policy, Scheduler, SchedulerConfig};
use fleet_actors::wire::Wire;
use fleet_actors::{Engine, EngineError, EngineInit, EngineRegistry, FleetError, NodeId};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::time::Duration;

/// Builder of an embedded single-node cluster; see [`Cluster::local`].
#[derive(Debug)]
pub struct LocalBuilder {
    name: String,
    cpus: Option<f64>,
    mem_mib: Option<u64>,
    gpus: Option<Vec<u32>>,
    port_range: (u16, u16),
    labels: BTreeMap<String, String>,
    registry: EngineRegistry,
    cookie: Option<String>,
    listen_port: Option<u16>,
    listen_ip: std::net::IpAddr,
    tls: Option<TlsConfig>,
    port_limits: crate::membership::port::PortLimits,
    head: Option<HeadOptions>,
    config: SchedulerConfig,
    run_dir: Option<std::path::PathBuf>,
    runs_root: Option<std::path::PathBuf>,
    agents: crate::rollout::AgentRegistry,
    store: StoreOptions,
}

/// How the embedded node's object store is set up (see [`crate::store`]).
#[derive(Clone, Debug)]
struct StoreOptions {
    enabled: bool,
    root: Option<std::path::PathBuf>,
    budget: Option<u64>,
}

/// What makes a cluster a head.
#[derive(Clone, Copy, Debug)]
struct HeadOptions {
    membership: MembershipConfig,
    workers: bool,
}

impl LocalBuilder {
    /// Where the node's object store keeps its objects: `DIR/<node>/` (default
    /// `/dev/shm/fleet-store-<uid>` when `/dev/shm` exists, else the system temp dir).
    pub fn store_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.store.root = Some(dir.into());
        self
    }

    /// The object store's byte budget (default: 25% of its file system; 4 GiB at most off
    /// `/dev/shm`).
    pub fn store_budget(mut self, bytes: u64) -> Self {
        self.store.budget = Some(bytes);
        self
    }

    /// Runs this node without an object store.
    pub fn no_store(mut self) -> Self {
        self.store.enabled = false;
        self
    }

    /// Names the node (default `local`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// CPU capacity in cores (default: the machine's logical CPUs).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }
    /// Memory capacity in MiB (default: the machine's total).
    pub fn mem_mib(mut self, mib: u64) -> Self {
        self.mem_mib = Some(mib);
        self
    }
    /// GPU ids (default: `CUDA_VISIBLE_DEVICES`, else the driver's GPUs, else none). Fake ids are
    /// fine for tests: fleet only accounts for them and exports them.
    pub fn gpus(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.gpus = Some(ids.into_iter().collect());
        self
    }
    /// Ports the node hands to workers, `lo..=hi` (default 20000..=29999, below the kernel's
    /// ephemeral range; ports are claimed host-wide, so nodes on one host never share one).
    pub fn port_range(mut self, lo: u16, hi: u16) -> Self {
        self.port_range = (lo, hi);
        self
    }
    /// Adds a `key=value` label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    /// Registers an engine type.
    pub fn engine<F, E>(mut self, type_name: impl Into<String>, make: F) -> Self
    where
        F: Fn(&EngineInit) -> Result<E, EngineError> + Send + Sync + 'static,
        E: Engine,
    {
        self.registry.register(type_name, make);
        self
    }
    /// Adds every engine type of `registry`.
    pub fn engines(mut self, registry: &EngineRegistry) -> Self {
        self.registry.merge(registry);
        self
    }
    /// The cookie other nodes must present (default: random; local clusters need none).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }
    /// The ractor_cluster listen port on 127.0.0.1 (default: a free port).
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = Some(port);
        self
    }
    /// Listens on `ip` (default 127.0.0.1). Any other address than loopback needs a
    /// [`cookie`](Self::cookie).
    pub fn listen_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }
    /// Encrypts and authenticates connections with TLS (both ways).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Heartbeat interval, down timeout and node lease (a head only).
    pub fn membership(mut self, cfg: MembershipConfig) -> Self {
        if let Some(h) = &mut self.head {
            h.membership = cfg;
        }
        self
    }
    /// A head that places no workers on its own machine (a head only).
    pub fn no_workers(mut self) -> Self {
        if let Some(h) = &mut self.head {
            h.workers = false;
        }
        self
    }
    /// Where worker logs go (default: `$TMPDIR/fleet-<cluster id>`).
    pub fn run_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }
    /// Where the workers of submitted jobs log on this node: `<dir>/<job>/logs/` (the run
    /// directories of [`Cluster::serve_jobs`]; `fleet head --runs-dir`). Default: the run
    /// directory's `logs/`.
    pub fn runs_root(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.runs_root = Some(dir.into());
        self
    }
    /// Registers a Rust rollout agent under `name` (the built-in `multi-turn` is always there).
    pub fn agent(mut self, name: impl Into<String>, agent: impl crate::rollout::Agent) -> Self {
        self.agents.register(name, agent);
        self
    }
    /// Placement policy for separate roles (default [`Policy::Pack`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }
    /// Limits on connections to the cluster port that have not authenticated (default
    /// [`PortLimits::default`](crate::membership::port::PortLimits::default): 10 s, 128
    /// pending, 64 KiB frames).
    pub fn port_limits(mut self, limits: crate::membership::port::PortLimits) -> Self {
        self.port_limits = limits;
        self
    }
    /// Bound on engine destroy hooks at deletion (default 10 s).
    pub fn destroy_timeout(mut self, t: Duration) -> Self {
        self.config.destroy_timeout = t;
        self
    }

    /// Starts the node server, the node agent and the scheduler.
    pub async fn start(self) -> Result<Cluster, FleetError> {
        crate::metrics::install();
        if let Some(h) = &self.head {
            h.membership.validate()?;
        }
        let node = NodeId::generate(self.name.clone());
        let cluster_id = format!("{:016x}", rand::random::<u64>());
        let gpus = self.gpus.unwrap_or_else(system::detect_gpus);
        let resources = NodeResources {
            cpu_millis: self
                .cpus
                .map(|c| (c.max(0.0) * 1000.0).round() as u64)
                .unwrap_or_else(|| system::cpu_count() * 1000),
            mem_mib: self.mem_mib.unwrap_or_else(system::mem_mib),
            gpus,
            port_range: self.port_range,
            labels: self.labels,
        };
        let cookie = match (self.cookie, &self.head) {
            (Some(c), _) => c,
            (None, None) => format!("{:032x}", rand::random::<u128>()),
            (None, Some(_)) if self.listen_ip.is_loopback() => {
                membership::loopback_cookie::load_or_create()?
            }
            (None, Some(_)) => {
                return Err(FleetError::bad_request(
                    format!("starting a head on {}", self.listen_ip),
                    "a cookie is required on any address other than loopback: give --cookie-file or FLEET_COOKIE",
                ))
            }
        };
        let store = self.store.enabled.then(|| {
            let mut c = crate::store::StoreConfig::new(&cookie, self.listen_ip);
            c.root = self.store.root.clone();
            c.budget = self.store.budget;
            c
        });
        let server_name = format!("{}-{}", node.name, cluster_id);
        let transport_cfg = TransportConfig {
            listen_ip: self.listen_ip,
            port: self.listen_port.unwrap_or(0),
            cookie,
            tls: self.tls,
            max_frame: ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
            limits: self.port_limits,
        };
        // A head's sessions and detector run on a runtime of their own (see
        // `membership::runtime`): a driver that blocks its threads does not fence the cluster.
        let membership_rt = match &self.head {
            Some(_) => Some(MembershipRuntime::start()?),
            None => None,
        };
        let transport = match &membership_rt {
            Some(rt) => {
                rt.run(async move { Transport::start(&server_name, &transport_cfg).await })
                    .await??
            }
            None => Transport::start(&server_name, &transport_cfg).await?,
        };
        let listen_port = transport.port;

        let directory = LocalDirectory::default();
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let (agent, _) = Actor::spawn(
            None,
            NodeAgent,
            AgentArgs {
                node: node.clone(),
                resources: resources.clone(),
                registry: self.registry,
                directory: directory.clone(),
                events: Some(events_tx),
                run_dir: self.run_dir.unwrap_or_else(|| {
                    crate::node::run_dirs::prune(
                        &std::env::temp_dir(),
                        crate::node::run_dirs::KEEP_DEAD,
                    );
                    crate::node::run_dirs::own(&cluster_id)
                }),
                runs_root: self.runs_root,
                agents: self.agents,
                max_message: self.config.max_payload,
                store,
                leftovers: Default::default(),
            },
        )
        .await
        .map_err(|e| FleetError::internal(format!("node agent did not start: {e}")))?;
        ractor::pg::join_scoped(
            format!("fleet/{cluster_id}"),
            "agents".to_string(),
            vec![agent.get_cell()],
        );
        let scheduler = Scheduler::new(self.config, directory, Some(node.clone()));
        let workers_here = self.head.map(|h| h.workers).unwrap_or(true);
        if workers_here {
            scheduler
                .add_node(node.clone(), agent.clone(), resources.clone())
                .await?;
        }
        scheduler.follow_events(events_rx)?;
        let events = EventBus::default();
        let head = match self.head {
            None => None,
            Some(h) => {
                let args = HeadArgs {
                    cluster_id: cluster_id.clone(),
                    config: h.membership,
                    scheduler: scheduler.clone(),
                    events: events.clone(),
                    local_node: workers_here.then(|| (node.clone(), resources)),
                    transport: Some(transport.clone()),
                };
                let rt = membership_rt
                    .as_ref()
                    .ok_or_else(|| FleetError::internal("a head without its runtime"))?;
                let (t, ev, local) = (transport.clone(), events.clone(), agent.clone());
                let head = rt
                    .run(async move {
                        let (head, _) = Actor::spawn(None, Head, (args, Some(local)))
                            .await
                            .map_err(|e| {
                                FleetError::internal(format!("head did not start: {e}"))
                            })?;
                        ractor::pg::join_scoped(
                            membership::protocol::FLEET_SCOPE.to_string(),
                            membership::protocol::head_group(&t.name),
                            vec![head.get_cell()],
                        );
                        membership::watch_sessions(&t, head.clone(), ev);
                        Ok::<_, FleetError>(head)
                    })
                    .await??;
                Some(head)
            }
        };
        tracing::info!(node = %node, cluster = %cluster_id, listen_port, head = head.is_some(), "embedded cluster started");
        Ok(Cluster {
            id: cluster_id,
            node,
            listen_port,
            transport,
            agent,
            scheduler,
            head,
            events,
            _membership_rt: membership_rt,
        })
    }
}

/// Asks a head for its status report; see [`Cluster::status_source`].
#[derive(Clone, Debug)]
pub struct StatusSource {
    head: ActorRef<HeadMsg>,
}

impl StatusSource {
    /// A source that asks the head actor `head` (what [`Cluster::status_source`] gives).
    pub fn new(head: ActorRef<HeadMsg>) -> Self {
        StatusSource { head }
    }

    /// Nodes, roles and workers, or a typed error when the head does not answer `within`.
    pub async fn status(&self, within: Duration) -> Result<StatusReport, FleetError> {
        match self.head.call(HeadMsg::Status, Some(within)).await {
            Ok(CallResult::Success(r)) => r.flatten(),
            Ok(CallResult::Timeout) => Err(FleetError::Unavailable {
                what: "the head".into(),
                detail: format!("it did not answer within {within:?}"),
            }),
            _ => Err(FleetError::Unavailable {
                what: "the head".into(),
                detail: "it did not answer".into(),
            }),
        }
    }
}

/// A running cluster, seen from the process that started it.
pub struct Cluster {
    id: String,
    node: NodeId,
    listen_port: u16,
    transport: Transport,
    agent: ActorRef<AgentMsg>,
    scheduler: Scheduler,
    head: Option<ActorRef<HeadMsg>>,
    events: EventBus,
    /// Last field: dropped after the stops in `Drop` were sent.
    _membership_rt: Option<MembershipRuntime>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("node", &self.node)
            .field("listen_port", &self.listen_port)
            .finish()
    }
}

impl Cluster {
    /// A builder for an embedded single-node cluster with the built-in engines (`counter`,
    /// `echo`, `sleep`) registered; add your own with [`LocalBuilder::engine`].
    pub fn local() -> LocalBuilder {
        LocalBuilder {
            name: "local".into(),
            cpus: None,
            mem_mib: None,
            gpus: None,
            port_range: crate::node::ports::DEFAULT_PORT_RANGE,
            labels: BTreeMap::new(),
            registry: crate::node::engines::registry(),
            cookie: None,
            listen_port: None,
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            tls: None,
            port_limits: Default::default(),
            head: None,
            config: SchedulerConfig::default(),
            run_dir: None,
            runs_root: None,
            agents: crate::rollout::AgentRegistry::builtin(),
            store: StoreOptions {
                enabled: true,
                root: None,
                budget: None,
            },
        }
    }

    /// A builder for a head: an embedded cluster that other nodes join with
    /// `fleet node --join ADDR` (see [`crate::membership`]). The head is also a node unless told
    /// [`no_workers`](LocalBuilder::no_workers). On loopback the cookie defaults to
    /// the user's loopback cookie file ([`membership::loopback_cookie`]); any other address
    /// needs one.
    pub fn head() -> LocalBuilder {
        let mut b = Cluster::local().name("head");
        b.head = Some(HeadOptions {
            membership: MembershipConfig::default(),
            workers: true,
        });
        b
    }

    /// A builder that attaches this program to the running head at `addr` (HOST:PORT, its
    /// cluster port): its [`ConnectedCluster::scheduler`](crate::ConnectedCluster::scheduler)
    /// has the same methods as [`Cluster::local`]'s, run by the head (see [`crate::attach`]).
    /// The roles the program creates are its own: deleted by its `shutdown`, and by the head
    /// when the program's session closes (it ended, crashed or was killed).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), fleet_actors::FleetError> {
    /// let cluster = fleet_runtime::Cluster::connect("127.0.0.1:7700").start().await?;
    /// let s = cluster.scheduler();
    /// s.create_workers(fleet_actors::Job::new("policy", 2)).await?;
    /// cluster.shutdown().await?; // deletes "policy"
    /// # Ok(()) }
    /// ```
    pub fn connect(addr: impl Into<String>) -> crate::attach::ConnectBuilder {
        crate::attach::ConnectBuilder::new(addr)
    }

    /// Membership events from now on (joined, suspect, down, left, refused). Only a head has
    /// any.
    pub fn member_events(&self) -> tokio::sync::broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    /// Nodes, roles and workers, as `fleet status` shows them (a head only).
    pub async fn status(&self) -> Result<StatusReport, FleetError> {
        let source = self.status_source().ok_or_else(|| {
            FleetError::bad_request("cluster status", "this cluster is not a head")
        })?;
        source.status(Duration::from_secs(10)).await
    }

    /// A clone-able handle that asks this head for [`Cluster::status`] again and again (the
    /// dashboard's); `None` unless this cluster is a head.
    pub fn status_source(&self) -> Option<StatusSource> {
        self.head.clone().map(StatusSource::new)
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// This node's object store: put objects here and pass their [`crate::store::ObjectRef`]
    /// to engine calls on any node. `None` when built with [`LocalBuilder::no_store`].
    pub fn store(&self) -> Option<crate::store::Store> {
        crate::store::Store::for_node(&self.node.to_string())
    }

    /// The cluster id that scopes process groups.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The port other nodes connect to.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Starts this head's job service: clients (`fleet submit`, `fleet job`, `fleet run
    /// --head`, [`crate::jobs::JobClient`]) reach it at this cluster's listen address, and the
    /// jobs they submit run on this cluster's scheduler (see [`crate::jobs`]).
    pub async fn serve_jobs(
        &self,
        cfg: crate::jobs::JobServiceConfig,
    ) -> Result<crate::jobs::JobService, FleetError> {
        if self.head.is_none() {
            return Err(FleetError::bad_request(
                "serving jobs",
                "only a head serves jobs (Cluster::head)",
            ));
        }
        crate::jobs::JobService::start(&self.transport.name, self.scheduler.clone(), cfg).await
    }

    /// Starts this head's scheduler service: programs that [`Cluster::connect`] to this
    /// cluster's listen address run their scheduler requests here, on this cluster's
    /// scheduler, and their roles are deleted when they disconnect (see [`crate::attach`]).
    pub async fn serve_scheduler(&self) -> Result<crate::attach::SchedulerService, FleetError> {
        if self.head.is_none() {
            return Err(FleetError::bad_request(
                "serving the scheduler",
                "only a head serves connected programs (Cluster::head)",
            ));
        }
        crate::attach::SchedulerService::start(&self.transport, self.scheduler.clone()).await
    }

    /// The local node agent.
    pub fn agent(&self) -> &ActorRef<AgentMsg> {
        &self.agent
    }

    /// Reserves `count` ports on the local node; they stay reserved until released.
    pub async fn reserve_ports(&self, count: u16) -> Result<PortLease, FleetError> {
        let t = Duration::from_secs(10);
        match self
            .agent
            .call(|p| AgentMsg::ReservePorts(Wire::new(count), p), Some(t))
            .await
        {
            Ok(CallResult::Success(r)) => r.flatten(),
            _ => Err(FleetError::Unavailable {
                what: format!("node agent of {}", self.node),
                detail: "it did not answer".into(),
            }),
        }
    }

    /// Releases a port lease (idempotent).
    pub fn release_ports(&self, lease: u64) {
        let _ = self.agent.cast(AgentMsg::ReleasePorts(Wire::new(lease)));
    }

    /// Resources, use and workers of the local node.
    pub async fn node_info(&self) -> Result<NodeInfo, FleetError> {
        let t = Duration::from_secs(10);
        match self.agent.call(AgentMsg::Info, Some(t)).await {
            Ok(CallResult::Success(r)) => r.flatten(),
            _ => Err(FleetError::Unavailable {
                what: format!("node agent of {}", self.node),
                detail: "it did not answer".into(),
            }),
        }
    }

    /// Deletes every worker (destroy hooks, bounded), then stops the agent and the node server.
    pub async fn shutdown(self) -> Result<(), FleetError> {
        let r = self.scheduler.delete_workers(None, false).await;
        if let Some(h) = &self.head {
            h.stop(Some("cluster shutdown".into()));
        }
        self.agent.stop(Some("cluster shutdown".into()));
        self.transport.stop();
        r
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Without shutdown(): stop the actors; the agent stops its workers. The store goes
        // now, not when the agent gets to it: its files may be memory (/dev/shm).
        if let Some(store) = self.store() {
            store.shutdown();
        }
        if let Some(h) = &self.head {
            h.stop(Some("cluster dropped".into()));
        }
        self.agent.stop(Some("cluster dropped".into()));
        self.transport.stop();
    }
}
