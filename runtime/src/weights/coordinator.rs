//! The weight-update coordinator: one update at a time over a role's servers, the routers told
//! before and after every server moves, and failed servers brought back at the current version.
//!
//! The invariant it keeps: **a router sends a request to a server only at the version that
//! server has confirmed loading.** A server leaves every router (drained, or all paused) before
//! its load begins and comes back (`/router/restore {url, version}`) only after it answered the
//! load and reported the new version; a server whose load, pause or resume fails is marked
//! `failed` in every router and stays out until [`Coordinator::recover`] has loaded the current
//! weights on it (a server that died and was restarted by its launcher comes back with its
//! start-up weights; the same check catches that: its reported version is not the expected
//! one). So the version a router records for a turn is the version of the weights that
//! generated it.
//!
//! Modes:
//! - **stop-the-world**: every router holds new requests (`/router/pause_all`, which answers once
//!   nothing is in flight), every server pauses, loads and resumes in parallel, each comes back
//!   as it confirms. Generation stops for the slowest load.
//! - **rolling, k at a time**: k servers leave the routers (`/router/drain` waits for their
//!   in-flight requests), pause (aborting any request still running after the drain deadline),
//!   load, resume, come back at v+1; then the next k. The rest serve throughout.

use super::api::{ServerLink, StepError, WeightApi};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One inference server the coordinator moves.
#[derive(Clone)]
pub struct Server {
    /// Its name in messages (its worker id).
    pub name: String,
    /// Its URL as the routers know it (their `--backend`).
    pub url: String,
    /// Its node (weights are resolved to a path on that node).
    pub node: String,
    /// How to reach it.
    pub link: Arc<dyn ServerLink>,
    /// Its weight API.
    pub api: WeightApi,
}

/// The routers in front of the servers (one per proxy). `admin` sends one admin command to
/// every router (of one node, when `node` is given: routers know their node's servers by
/// `127.0.0.1` URLs) and returns each answer.
pub trait Routers: Send + Sync {
    /// `POST path` with `body` to every router (of `node`).
    fn admin(
        &self,
        path: &str,
        body: Value,
        node: Option<&str>,
    ) -> BoxFuture<'_, Vec<Result<Value, String>>>;
}

/// Where version N's weights are on a node: a path there (the same-node hand-off; a data plane
/// fetches the object to that node first).
pub trait WeightsSource: Send + Sync {
    /// A path on `node` holding the weights of `version`.
    fn path_on(&self, node: &str, version: u64) -> BoxFuture<'_, Result<PathBuf, String>>;
}

/// A fixed path for every version (a shared file system, or one node): `{version}` in it is
/// replaced by the version.
pub struct PathPattern(pub String);

impl WeightsSource for PathPattern {
    fn path_on(&self, _node: &str, version: u64) -> BoxFuture<'_, Result<PathBuf, String>> {
        let p = PathBuf::from(self.0.replace("{version}", &version.to_string()));
        Box::pin(async move { Ok(p) })
    }
}

/// How an update moves the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Pause all, load, resume all.
    StopTheWorld,
    /// `k` servers at a time leave, load and come back while the rest serve.
    Rolling {
        /// Servers at a time (at least 1).
        k: usize,
    },
}

impl std::fmt::Display for UpdateMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateMode::StopTheWorld => write!(f, "stop-the-world"),
            UpdateMode::Rolling { k } => write!(f, "rolling (k = {k})"),
        }
    }
}

/// What one update did.
#[derive(Clone, Debug)]
pub struct UpdateReport {
    /// The version moved to.
    pub version: u64,
    /// How long the whole update took.
    pub took: Duration,
    /// Servers that serve the new version.
    pub moved: usize,
    /// Servers that failed during the update (they are out of the routers until recovered).
    pub failed: Vec<String>,
}

/// Timeouts of the coordinator's steps.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// How long a drain or a pause-all may wait for in-flight requests.
    pub drain: Duration,
    /// How long one server may take to load a version (a real model: minutes).
    pub load: Duration,
    /// Pause, resume and version calls.
    pub control: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            drain: Duration::from_secs(30),
            load: Duration::from_secs(600),
            control: Duration::from_secs(10),
        }
    }
}

#[derive(Default)]
struct State {
    /// The newest version the servers should have.
    target: u64,
    /// What each server has confirmed.
    confirmed: BTreeMap<String, u64>,
    /// The process each server had when it last confirmed, where its link can tell.
    instances: BTreeMap<String, u64>,
    /// Servers out of the routers, with why.
    failed: BTreeMap<String, String>,
    /// Recoveries done.
    recovered: u64,
}

/// Moves a role's servers between versions (see the module doc).
pub struct Coordinator {
    servers: Vec<Server>,
    routers: Arc<dyn Routers>,
    weights: Arc<dyn WeightsSource>,
    mode: UpdateMode,
    timeouts: Timeouts,
    state: Mutex<State>,
    /// One update or recovery at a time.
    busy: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Coordinator {
    /// A coordinator for `servers`, all at `version` now.
    pub fn new(
        servers: Vec<Server>,
        routers: Arc<dyn Routers>,
        weights: Arc<dyn WeightsSource>,
        mode: UpdateMode,
        timeouts: Timeouts,
        version: u64,
    ) -> Coordinator {
        let confirmed = servers.iter().map(|s| (s.name.clone(), version)).collect();
        Coordinator {
            servers,
            routers,
            weights,
            mode,
            timeouts,
            state: Mutex::new(State {
                target: version,
                confirmed,
                instances: BTreeMap::new(),
                ..State::default()
            }),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The mode.
    pub fn mode(&self) -> UpdateMode {
        self.mode
    }

    /// Servers out of the routers, with why.
    pub fn failed(&self) -> BTreeMap<String, String> {
        lock(&self.state).failed.clone()
    }

    /// Servers brought back so far.
    pub fn recovered(&self) -> u64 {
        lock(&self.state).recovered
    }

    /// Moves every server to `version` (see the module doc). Servers that fail are reported and
    /// left to [`recover`](Self::recover); the update itself fails only if no server serves
    /// `version` afterwards.
    pub async fn update(&self, version: u64) -> Result<UpdateReport, String> {
        let _one = self.busy.lock().await;
        let started = Instant::now();
        lock(&self.state).target = version;
        // Servers that failed or restarted since the last round are loaded at the new version
        // directly (and are then not moved again below).
        self.recover_locked().await;
        let live: Vec<&Server> = {
            let st = lock(&self.state);
            self.servers
                .iter()
                .filter(|s| !st.failed.contains_key(&s.name))
                .filter(|s| st.confirmed.get(&s.name).is_none_or(|v| *v < version))
                .collect()
        };
        let mut failed = Vec::new();
        let mut moved = self
            .servers
            .len()
            .saturating_sub(live.len() + lock(&self.state).failed.len());
        match self.mode {
            UpdateMode::StopTheWorld => {
                let answers = self
                    .routers
                    .admin(
                        "/router/pause_all",
                        json!({"timeout_secs": secs(self.timeouts.drain)}),
                        None,
                    )
                    .await;
                for a in answers.iter().filter_map(|a| a.as_ref().err()) {
                    tracing::warn!(version, error = %a, "a router did not pause; its in-flight requests are aborted by the servers' pause");
                }
                let all = futures::future::join_all(
                    live.iter().map(|s| self.move_one(s, version, false)),
                )
                .await;
                for (s, r) in live.iter().zip(all) {
                    match r {
                        Ok(()) => moved += 1,
                        Err(e) => failed.push(format!("{}: {e}", s.name)),
                    }
                }
            }
            UpdateMode::Rolling { k } => {
                for chunk in live.chunks(k.max(1)) {
                    let all = futures::future::join_all(
                        chunk.iter().map(|s| self.move_one(s, version, true)),
                    )
                    .await;
                    for (s, r) in chunk.iter().zip(all) {
                        match r {
                            Ok(()) => moved += 1,
                            Err(e) => failed.push(format!("{}: {e}", s.name)),
                        }
                    }
                }
            }
        }
        let report = UpdateReport {
            version,
            took: started.elapsed(),
            moved,
            failed,
        };
        if moved == 0 {
            return Err(format!(
                "no inference server took version {version}: {}",
                report.failed.join("; ")
            ));
        }
        Ok(report)
    }

    /// Pause, load, resume, confirm and restore one server; on failure, mark it failed in every
    /// router (it stays out until recovered).
    async fn move_one(&self, s: &Server, version: u64, drain: bool) -> Result<(), StepError> {
        if drain {
            let answers = self
                .routers
                .admin(
                    "/router/drain",
                    json!({"url": s.url, "timeout_secs": secs(self.timeouts.drain)}),
                    Some(&s.node),
                )
                .await;
            let left: u64 = answers
                .iter()
                .filter_map(|a| a.as_ref().ok())
                .filter(|a| a.get("drained").and_then(Value::as_bool) == Some(false))
                .filter_map(|a| a.get("in_flight").and_then(Value::as_u64))
                .sum();
            if left > 0 {
                tracing::warn!(server = %s.name, in_flight = left, "requests still running after the drain deadline are aborted by the pause");
            }
        }
        // A server that restarted since its last confirmed load (killed and brought back by its
        // restart policy after this round's recovery check) is repaired by this very load:
        // count it as recovered, like one the recovery check finds.
        let confirmed = lock(&self.state).confirmed.get(&s.name).copied();
        let restarted = match s
            .api
            .version(s.link.as_ref(), &s.name, self.timeouts.control)
            .await
        {
            Ok(Some(v)) => confirmed.is_some_and(|c| c != v),
            _ => false,
        };
        let r = self.load_on(s, version, "update").await;
        match &r {
            Ok(()) => {
                // Or it restarted inside this load (its re-sent requests reached the new
                // process): its process changed since it last confirmed.
                let restarted = self.note_instance(s).await || restarted;
                if restarted {
                    lock(&self.state).recovered += 1;
                    tracing::info!(server = %s.name, version, "inference server had restarted with other weights; loaded at the new version, it serves again");
                }
                self.restore(s, version).await;
            }
            Err(e) => self.fail(s, &e.to_string()).await,
        }
        r
    }

    async fn load_on(&self, s: &Server, version: u64, why: &str) -> Result<(), StepError> {
        let t = &self.timeouts;
        let rid = |step: &str| {
            format!(
                "fleet-weights-v{version}-{}-{why}-{step}",
                s.name.replace('/', ".")
            )
        };
        let path = self
            .weights
            .path_on(&s.node, version)
            .await
            .map_err(|detail| StepError {
                server: s.name.clone(),
                step: "load",
                detail: format!(
                    "the weights of version {version} are not available on node {}: {detail}",
                    s.node
                ),
            })?;
        s.api
            .pause(
                s.link.as_ref(),
                &s.name,
                &rid("pause"),
                t.control.max(t.drain),
            )
            .await?;
        s.api
            .load(
                s.link.as_ref(),
                &s.name,
                &path,
                version,
                &rid("load"),
                t.load,
            )
            .await?;
        s.api
            .resume(s.link.as_ref(), &s.name, &rid("resume"), t.control)
            .await?;
        match s.api.version(s.link.as_ref(), &s.name, t.control).await? {
            Some(v) if v != version => {
                return Err(StepError {
                    server: s.name.clone(),
                    step: "version",
                    detail: format!(
                        "it loaded {} but reports version {v}, not {version}",
                        path.display()
                    ),
                })
            }
            _ => {}
        }
        lock(&self.state).confirmed.insert(s.name.clone(), version);
        Ok(())
    }

    /// Records which process `s` has now; true when that is not the one it had when it last
    /// confirmed (it restarted in between).
    async fn note_instance(&self, s: &Server) -> bool {
        let Some(now) = s.link.instance().await else {
            return false;
        };
        let before = lock(&self.state).instances.insert(s.name.clone(), now);
        before.is_some_and(|b| b != now)
    }

    async fn restore(&self, s: &Server, version: u64) {
        for a in self
            .routers
            .admin(
                "/router/restore",
                json!({"url": s.url, "version": version}),
                Some(&s.node),
            )
            .await
            .iter()
            .filter_map(|a| a.as_ref().err())
        {
            tracing::debug!(server = %s.name, error = %a, "a router did not take the server back");
        }
    }

    async fn fail(&self, s: &Server, reason: &str) {
        tracing::warn!(server = %s.name, %reason, "an inference server failed during a weight update; it takes no traffic until it is loaded at the current version");
        lock(&self.state)
            .failed
            .insert(s.name.clone(), reason.to_string());
        let _ = self
            .routers
            .admin(
                "/router/fail",
                json!({"url": s.url, "reason": reason}),
                Some(&s.node),
            )
            .await;
    }

    /// Turns on strict versions in every router: a server that gives no answer (it may have
    /// died and come back with its start-up weights) is out until this coordinator restores it.
    pub async fn strict(&self) {
        for a in self
            .routers
            .admin("/router/strict", json!({"enabled": true}), None)
            .await
            .iter()
            .filter_map(|a| a.as_ref().err())
        {
            tracing::warn!(error = %a, "a router did not turn on strict versions");
        }
    }

    /// Servers some router took out by itself (strict versions: no answer), by name.
    async fn failed_in_routers(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let nodes: std::collections::BTreeSet<&str> =
            self.servers.iter().map(|s| s.node.as_str()).collect();
        for node in nodes {
            for a in self
                .routers
                .admin("/router/snapshot", json!({}), Some(node))
                .await
                .into_iter()
                .flatten()
            {
                let Some(list) = a.get("servers").and_then(Value::as_array) else {
                    continue;
                };
                for v in list {
                    if v.get("state").and_then(Value::as_str) != Some("failed") {
                        continue;
                    }
                    let url = v.get("url").and_then(Value::as_str).unwrap_or("");
                    if let Some(s) = self.servers.iter().find(|s| {
                        s.node == node && s.url.trim_end_matches('/') == url.trim_end_matches('/')
                    }) {
                        let why = v
                            .get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or("a router took it out");
                        out.insert(s.name.clone(), why.to_string());
                    }
                }
            }
        }
        out
    }

    /// One round of supervision (call it every second or so): a serving server that reports
    /// another version than it confirmed (it restarted) is taken out of the routers; every
    /// server out of the routers that answers again is loaded at the current version, confirmed
    /// and restored. Returns the servers brought back.
    pub async fn recover(&self) -> Vec<String> {
        let _one = self.busy.lock().await;
        self.recover_locked().await
    }

    async fn recover_locked(&self) -> Vec<String> {
        let t = self.timeouts.control;
        // Servers a router took out (no answer) need a load and a restore like any other.
        for (name, why) in self.failed_in_routers().await {
            lock(&self.state).failed.entry(name).or_insert(why);
        }
        let (target, failed, confirmed) = {
            let st = lock(&self.state);
            (st.target, st.failed.clone(), st.confirmed.clone())
        };
        // Restarted servers: their reported version is not the one they confirmed.
        let checks = self
            .servers
            .iter()
            .filter(|s| !failed.contains_key(&s.name))
            .map(|s| async move { (s, s.api.version(s.link.as_ref(), &s.name, t).await) });
        for (s, r) in futures::future::join_all(checks).await {
            let want = confirmed.get(&s.name).copied();
            let why = match r {
                Ok(Some(v)) if Some(v) != want => Some(format!(
                    "it reports weights version {v}, not the {} it loaded (it restarted)",
                    want.unwrap_or(0)
                )),
                Err(e) => Some(e.to_string()),
                _ => None,
            };
            if let Some(why) = why {
                self.fail(s, &why).await;
            }
        }
        let failed = lock(&self.state).failed.clone();
        let mut back = Vec::new();
        for s in self.servers.iter().filter(|s| failed.contains_key(&s.name)) {
            if s.api.version(s.link.as_ref(), &s.name, t).await.is_err() {
                continue; // still down
            }
            match self.load_on(s, target, "recover").await {
                Ok(()) => {
                    self.note_instance(s).await;
                    {
                        let mut st = lock(&self.state);
                        st.failed.remove(&s.name);
                        st.recovered += 1;
                    }
                    self.restore(s, target).await;
                    tracing::info!(server = %s.name, version = target, "inference server loaded at the current version; it serves again");
                    back.push(s.name.clone());
                }
                Err(e) => {
                    tracing::debug!(server = %s.name, error = %e, "not recovered yet");
                    lock(&self.state)
                        .failed
                        .insert(s.name.clone(), e.to_string());
                }
            }
        }
        back
    }
}
