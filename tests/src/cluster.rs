//! Real multi-process clusters for integration tests: a head in the test process and N
//! `fleet node --join` processes on loopback.
//!
//! The test process *is* the head (an embedded [`fleet_runtime::Cluster::head`]), so the test
//! drives the cluster through the ordinary [`Scheduler`] API: create workers, call them, delete
//! them, exactly like a driver program. The nodes are real processes, so failures are real:
//! [`TestCluster::kill_node`] SIGKILLs one, [`TestCluster::stop_node`] hangs one with SIGSTOP
//! (its connection stays open), and everything each node printed is in
//! [`TestCluster::node_log`]. Every wait has a deadline; every process is killed (whole process
//! group) when the `TestCluster` is dropped, also when the test panics.
//!
//! ```no_run
//! use fleet_tests::cluster::{NodeSpec, TestCluster};
//! use fleet_actors::{CallOptions, Job, SchedulingSpec};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::builder()
//!     .node(NodeSpec::new().gpus([0, 1]))
//!     .node(NodeSpec::new().gpus([0, 1]).label("zone", "b"))
//!     .start()
//!     .await?;
//! let s = cluster.scheduler();
//! s.create_workers(Job::new("gen", 2).spec(SchedulingSpec::default().gpu(1))).await?;
//! for w in s.get_workers("gen", Duration::from_secs(10)).await? {
//!     let e = s.create_engine(&w.id, "c", "counter", &()).await?;
//!     let n: u64 = e.call("incr", &1u64, &CallOptions::default()).await?;
//!     assert_eq!(n, 1);
//! }
//! cluster.kill_node(1);
//! cluster.wait_down(1, Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! Programs with engines of their own point [`ClusterBuilder::node_bin`] at a binary of theirs
//! that accepts `fleet node --join`'s flags and runs
//! [`fleet_runtime::membership::JoinedNode`] with their own `EngineRegistry`.
//!
//! The nodes are the workspace's `fleet` binary: build it first (`cargo build --bin fleet`),
//! `cargo test -p fleet-tests` alone does not.

use crate::process::{fleet_bin, ChildGuard};
use crate::wait::wait_until;
use fleet_actors::NodeId;
use fleet_runtime::membership::{TlsConfig, TlsFiles};
use fleet_runtime::scheduler::Policy;
use fleet_runtime::{Cluster, MemberEvent, MembershipConfig, Scheduler};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One node process to start.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    cpus: f64,
    mem_mib: u64,
    gpus: Vec<u32>,
    labels: BTreeMap<String, String>,
    cookie: Option<String>,
    plain: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    join: Option<String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec::new()
    }
}

impl NodeSpec {
    /// 8 CPUs, 16 GiB, no GPUs, no labels.
    pub fn new() -> Self {
        NodeSpec {
            cpus: 8.0,
            mem_mib: 16 * 1024,
            gpus: vec![],
            labels: BTreeMap::new(),
            cookie: None,
            plain: false,
            args: vec![],
            env: vec![],
            join: None,
        }
    }
    /// CPU cores it offers.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }
    /// Memory it offers (MiB).
    pub fn mem_mib(mut self, mib: u64) -> Self {
        self.mem_mib = mib;
        self
    }
    /// GPU ids it offers (fake ids are fine: fleet accounts for them and exports them).
    pub fn gpus(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.gpus = ids.into_iter().collect();
        self
    }
    /// Adds a `key=value` label.
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    /// Joins with this cookie instead of the cluster's (to test refusal).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }
    /// Connects without TLS even when the cluster uses it (to test refusal).
    pub fn without_tls(mut self) -> Self {
        self.plain = true;
        self
    }
    /// Joins through `addr` (a [`crate::relay::Relay`] in front of the head) instead of the
    /// head's own address.
    pub fn join_via(mut self, addr: impl Into<String>) -> Self {
        self.join = Some(addr.into());
        self
    }
    /// Extra command-line arguments for `fleet node`.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    /// An environment variable of the node process.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// Settings of a [`TestCluster`].
#[derive(Debug)]
pub struct ClusterBuilder {
    nodes: Vec<NodeSpec>,
    membership: MembershipConfig,
    policy: Policy,
    tls: bool,
    head_workers: bool,
    node_bin: Option<PathBuf>,
    join_deadline: Duration,
}

/// A node process of a [`TestCluster`].
#[derive(Debug)]
struct NodeProc {
    name: String,
    child: Mutex<Option<ChildGuard>>,
    pid: u32,
    log: PathBuf,
}

/// A head in this process and node processes that joined it; see the module docs.
pub struct TestCluster {
    head: Option<Cluster>,
    nodes: Mutex<Vec<Arc<NodeProc>>>,
    events: Arc<Mutex<Vec<MemberEvent>>>,
    dir: PathBuf,
    cookie: String,
    tls: Option<TestTls>,
    membership: MembershipConfig,
    bin: PathBuf,
    port_base: u16,
    collector: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("head", &self.head)
            .field("dir", &self.dir)
            .finish()
    }
}

/// Certificates made for one test cluster (a CA and one certificate for all of loopback).
#[derive(Clone, Debug)]
pub struct TestTls {
    /// The files.
    pub files: TlsFiles,
}

impl TestTls {
    /// Makes a CA and a certificate signed by it for `localhost` and `127.0.0.1`, in `dir`.
    pub fn generate(dir: &Path) -> Result<TestTls, String> {
        let e = |e: rcgen::Error| format!("generating test certificates: {e}");
        let ca_key = rcgen::KeyPair::generate().map_err(e)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fleet test CA");
        let ca = ca_params.self_signed(&ca_key).map_err(e)?;
        let key = rcgen::KeyPair::generate().map_err(e)?;
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(e)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
        let write = |name: &str, text: String| -> Result<PathBuf, String> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
            Ok(p)
        };
        Ok(TestTls {
            files: TlsFiles {
                ca: write("ca.pem", ca.pem())?,
                cert: write("node.pem", cert.pem())?,
                key: write("node.key", key.serialize_pem())?,
            },
        })
    }
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

impl TestCluster {
    /// One real node process with `replicas` RpcServer workers of `role` on it (half a CPU
    /// each), all answering: the set-up of most single-node tests.
    pub async fn one_node_with_workers(
        role: &str,
        replicas: u32,
    ) -> (TestCluster, Vec<fleet_runtime::WorkerInfo>) {
        let cluster = TestCluster::builder()
            .node(NodeSpec::new())
            .start()
            .await
            .expect("a one-node test cluster starts");
        let s = cluster.scheduler().clone();
        let job = fleet_actors::Job::new(role, replicas)
            .spec(fleet_actors::SchedulingSpec::default().cpu(0.5));
        s.create_workers(job).await.expect("the workers start");
        let workers = s
            .get_workers(role, Duration::from_secs(20))
            .await
            .expect("the workers answer");
        (cluster, workers)
    }

    /// Settings: no nodes, heartbeat 200 ms, timeout 1.5 s, lease 750 ms (so failure tests are
    /// quick), pack
    /// placement, a head without workers.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: vec![],
            membership: MembershipConfig::new(
                Duration::from_millis(200),
                Duration::from_millis(1500),
            ),
            policy: Policy::Pack,
            tls: false,
            head_workers: false,
            node_bin: None,
            join_deadline: Duration::from_secs(30),
        }
    }
}

impl ClusterBuilder {
    /// Adds a node process.
    pub fn node(mut self, spec: NodeSpec) -> Self {
        self.nodes.push(spec);
        self
    }
    /// Adds `n` default nodes.
    pub fn nodes(mut self, n: usize) -> Self {
        for _ in 0..n {
            self.nodes.push(NodeSpec::new());
        }
        self
    }
    /// Heartbeat, timeout and lease.
    pub fn membership(mut self, m: MembershipConfig) -> Self {
        self.membership = m;
        self
    }
    /// Placement policy.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// TLS between all processes, with certificates generated for the test.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    /// Let the head place workers on itself too.
    pub fn head_workers(mut self) -> Self {
        self.head_workers = true;
        self
    }
    /// The binary started as `BIN node --join ...` (default: the workspace's `fleet`).
    pub fn node_bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.node_bin = Some(bin.into());
        self
    }
    /// How long to wait for every node to join (default 30 s).
    pub fn join_deadline(mut self, d: Duration) -> Self {
        self.join_deadline = d;
        self
    }

    /// Starts the head, then every node, and waits until all joined.
    pub async fn start(self) -> Result<TestCluster, String> {
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("fleet-testcluster-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let tls = if self.tls {
            Some(TestTls::generate(&dir)?)
        } else {
            None
        };
        let cookie = format!("test-cookie-{}-{n}-{:x}", std::process::id(), nanos());
        let mut b = Cluster::head()
            .cookie(cookie.clone())
            .membership(self.membership)
            .policy(self.policy)
            .run_dir(dir.join("head"));
        if !self.head_workers {
            b = b.no_workers();
        }
        if let Some(t) = &tls {
            b = b.tls(TlsConfig::load(&t.files).map_err(|e| e.to_string())?);
        }
        let head = b
            .start()
            .await
            .map_err(|e| format!("starting the head: {e}"))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut rx = head.member_events();
        let sink = events.clone();
        let collector = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => sink.lock().unwrap_or_else(|p| p.into_inner()).push(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        let bin = self.node_bin.unwrap_or_else(fleet_bin);
        let cluster = TestCluster {
            head: Some(head),
            nodes: Mutex::new(vec![]),
            events,
            dir,
            cookie,
            tls,
            membership: self.membership,
            bin,
            port_base: 42000
                + ((std::process::id() as u64 * 7 + n * 131 + nanos() % 97) % 300) as u16 * 50,
            collector,
        };
        for spec in self.nodes {
            let i = cluster.spawn_node(&spec)?;
            let _ = i;
        }
        let count = cluster
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        for i in 0..count {
            cluster.wait_joined(i, self.join_deadline).await?;
        }
        Ok(cluster)
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

impl TestCluster {
    /// The head (an embedded cluster in this process).
    pub fn head(&self) -> &Cluster {
        self.head.as_ref().expect("the head lives until drop")
    }

    /// The scheduler, to create, call and delete workers.
    pub fn scheduler(&self) -> &Scheduler {
        self.head().scheduler()
    }

    /// The head's address, for `fleet node --join` and `fleet status --head`.
    pub fn head_addr(&self) -> String {
        format!("127.0.0.1:{}", self.head().listen_port())
    }

    /// The cluster's cookie.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The generated certificates, when the cluster uses TLS.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|t| &t.files)
    }

    /// The heartbeat settings in force.
    pub fn membership(&self) -> MembershipConfig {
        self.membership
    }

    /// The directory with the node logs and certificates.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn node(&self, i: usize) -> Arc<NodeProc> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())[i].clone()
    }

    /// Starts one more node process with `spec` and returns its index (it joins in the
    /// background; wait with [`TestCluster::wait_joined`]).
    pub fn spawn_node(&self, spec: &NodeSpec) -> Result<usize, String> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let i = nodes.len();
        let name = format!("node{i}");
        let log = self.dir.join(format!("{name}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let lo = self.port_base + (i as u16) * 50;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("node")
            .arg("--join")
            .arg(spec.join.clone().unwrap_or_else(|| self.head_addr()))
            .arg("--name")
            .arg(&name)
            .arg("--cpus")
            .arg(spec.cpus.to_string())
            .arg("--mem-mib")
            .arg(spec.mem_mib.to_string())
            .arg("--port-range")
            .arg(format!("{lo}-{}", lo + 49))
            .env(
                "FLEET_COOKIE",
                spec.cookie.as_deref().unwrap_or(&self.cookie),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(file)
            .stderr(err);
        if !spec.gpus.is_empty() {
            let ids: Vec<String> = spec.gpus.iter().map(u32::to_string).collect();
            cmd.arg("--gpus").arg(ids.join(","));
        } else {
            cmd.env("CUDA_VISIBLE_DEVICES", "");
        }
        for (k, v) in &spec.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        if let Some(t) = self.tls.as_ref().filter(|_| !spec.plain) {
            cmd.arg("--tls-cert")
                .arg(&t.files.cert)
                .arg("--tls-key")
                .arg(&t.files.key)
                .arg("--tls-ca")
                .arg(&t.files.ca);
        }
        cmd.args(&spec.args);
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let child = ChildGuard::spawn(&name, &mut cmd)
            .map_err(|e| format!("starting {} node: {e}", self.bin.display()))?;
        let pid = child.pid();
        nodes.push(Arc::new(NodeProc {
            name,
            child: Mutex::new(Some(child)),
            pid,
            log,
        }));
        Ok(i)
    }

    /// Membership events seen so far, oldest first.
    pub fn events(&self) -> Vec<MemberEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until an event matching `pred` has been seen, and returns it.
    pub async fn wait_event(
        &self,
        what: &str,
        deadline: Duration,
        mut pred: impl FnMut(&MemberEvent) -> bool,
    ) -> Result<MemberEvent, String> {
        wait_until(what, deadline, || {
            let hit = self.events().into_iter().find(|e| pred(e));
            async move { hit }
        })
        .await
    }

    /// The name node `i` joins under (`node<i>`).
    pub fn node_name(&self, i: usize) -> String {
        self.node(i).name.clone()
    }

    /// Node `i`'s current member id (its latest admission), if it joined.
    pub fn node_id(&self, i: usize) -> Option<NodeId> {
        let name = self.node_name(i);
        self.events().into_iter().rev().find_map(|e| match e {
            MemberEvent::Joined { node, .. } if node.name == name => Some(node),
            _ => None,
        })
    }

    /// Waits until node `i` has joined (at least once) and returns its current id; fails at
    /// once if the node process exits first.
    pub async fn wait_joined(&self, i: usize, deadline: Duration) -> Result<NodeId, String> {
        let name = self.node_name(i);
        let r = wait_until(&format!("{name} to join"), deadline, || {
            let r = match (self.node_id(i), self.node_exited(i)) {
                (Some(id), _) => Some(Ok(id)),
                (None, Some(st)) => Some(Err(format!("{name} exited with {st} before joining"))),
                (None, None) => None,
            };
            async move { r }
        })
        .await
        .and_then(|r| r);
        r.map_err(|e| format!("{e}; its log:\n{}", self.node_log(i)))
    }

    /// Waits until node `i` joins under an id other than `old` (after it fenced itself).
    pub async fn wait_rejoined(
        &self,
        i: usize,
        old: &NodeId,
        deadline: Duration,
    ) -> Result<NodeId, String> {
        let name = self.node_name(i);
        let r = wait_until(&format!("{name} to join again"), deadline, || {
            let id = self.node_id(i).filter(|id| id != old);
            async move { id }
        })
        .await;
        r.map_err(|e| format!("{e}; its log:\n{}", self.node_log(i)))
    }

    /// Waits until the head has marked node `i`'s current id down, and returns the reason.
    pub async fn wait_down(&self, i: usize, deadline: Duration) -> Result<String, String> {
        let id = self
            .node_id(i)
            .ok_or_else(|| format!("node {i} never joined"))?;
        let ev = self
            .wait_event(
                &format!("{id} to be marked down"),
                deadline,
                |e| matches!(e, MemberEvent::Down { node, .. } if *node == id),
            )
            .await?;
        match ev {
            MemberEvent::Down { reason, .. } => Ok(reason),
            _ => unreachable!("matched Down"),
        }
    }

    /// The address node `i`'s own server listens on (from the `listening on` line it prints).
    pub async fn node_addr(&self, i: usize, deadline: Duration) -> Result<String, String> {
        wait_until(&format!("node {i}'s listening line"), deadline, || {
            let addr = self.node_log(i).lines().find_map(|l| {
                l.split_once(" listening on ")
                    .map(|(_, a)| a.trim().to_string())
            });
            async move { addr }
        })
        .await
    }

    /// Node `i`'s process id.
    pub fn node_pid(&self, i: usize) -> u32 {
        self.node(i).pid
    }

    /// Everything node `i` printed (stdout and stderr).
    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.node(i).log).unwrap_or_default()
    }

    fn signal(&self, i: usize, sig: i32) {
        let pid = self.node_pid(i) as i32;
        // SAFETY: kill(2) on a pid this cluster started; errors (already gone) are ignored.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGKILLs node `i`'s process (only it: its children must die by themselves).
    pub fn kill_node(&self, i: usize) {
        self.signal(i, libc::SIGKILL);
    }

    /// Hangs node `i` with SIGSTOP: its connections stay open, nothing answers.
    pub fn stop_node(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// Resumes node `i` after [`TestCluster::stop_node`].
    pub fn cont_node(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// Whether node `i`'s process has exited; its exit status if so.
    pub fn node_exited(&self, i: usize) -> Option<std::process::ExitStatus> {
        let node = self.node(i);
        let mut child = node.child.lock().unwrap_or_else(|p| p.into_inner());
        child.as_mut().and_then(|c| c.try_wait())
    }

    /// The log of a worker that is a process (its `log_path`), or an empty string.
    pub fn worker_log(&self, w: &fleet_runtime::WorkerInfo) -> String {
        w.log_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.collector.abort();
        let nodes = std::mem::take(&mut *self.nodes.lock().unwrap_or_else(|p| p.into_inner()));
        for n in nodes {
            // Dropping the guard SIGKILLs the node's whole process group (stopped ones too);
            // the workers' children die of their parent-death signal.
            let _ = n.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        drop(self.head.take());
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
