//! The set of servers, their states, and picking one for a request.
//!
//! One `std::sync::Mutex` guards everything (servers, session affinities, the round-robin
//! cursor, the version floor); it is held for a scan of a handful of servers, never across an
//! `.await`. Every change that can make a server pickable or an in-flight count drop (a
//! lease released, a state set, a breaker verdict) bumps a `watch` counter: a request that
//! finds no server, a `drain` and a `pause_all` wait on it (and, for a request, on the instant
//! the next breaker turns half-open), each bounded by its own deadline. Nothing polls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::breaker::{Admit, Breaker};
use crate::{ApiError, BackendUrl, SendFailure, Upstream};

/// Most session affinities remembered (an affinity is forgotten when its session is
/// exported; this bounds the map if sessions are never exported).
const MAX_AFFINITIES: usize = 65_536;

/// A server's state, as the operator (or the weight-update coordinator) set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Takes new requests.
    Serving,
    /// Takes no new request; its in-flight requests finish.
    Draining,
    /// Takes no new request until resumed (a stop-the-world update).
    Paused,
    /// Takes nothing until restored.
    Failed,
}

/// How servers are reached (the same for every server of the set).
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    pub(crate) api_key: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
}

struct Server {
    id: u64,
    url: String,
    upstream: Upstream,
    state: ServerState,
    version: u64,
    in_flight: usize,
    breaker: Breaker,
    requests: u64,
    failures: u64,
    reason: Option<String>,
}

impl Server {
    fn json(&self, now: Instant) -> Value {
        let mut v = json!({
            "url": self.url,
            "state": self.state,
            "version": self.version,
            "in_flight": self.in_flight,
            "breaker": self.breaker.label(now),
            "requests": self.requests,
            "failures": self.failures,
        });
        if let Some(r) = &self.reason {
            v["reason"] = json!(r);
        }
        v
    }
}

#[derive(Debug, Clone, Copy)]
struct Affinity {
    server: u64,
    version: u64,
}

struct Inner {
    servers: Vec<Server>,
    sessions: HashMap<String, Affinity>,
    rr: usize,
    min_version: u64,
    next_id: u64,
}

/// The router over one role's inference servers.
pub struct Router {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    reach: Reach,
    threshold: u32,
    wait: Duration,
    /// Requests waiting for a server now.
    waiting: AtomicUsize,
    /// Strict versions (set by the weight-update coordinator, `/router/strict`): a server that
    /// gives no answer at all (refused, reset, timed out) is `failed` until restored, because
    /// a process that died may come back with other weights than the version the router
    /// records for it. Off, the breaker alone handles it (a probe once it half-opens).
    strict: std::sync::atomic::AtomicBool,
}

/// Counts a waiting request while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request's hold on a server: counted in its in-flight number until dropped.
pub(crate) struct Lease {
    router: Arc<Router>,
    id: u64,
    probe: bool,
    reported: bool,
    /// The server's client.
    pub(crate) upstream: Upstream,
    /// The server's version when it was picked: the version the turn records.
    pub(crate) version: u64,
}

impl Lease {
    /// The server's id (for retries elsewhere).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// POSTs JSON to the server and tells the breaker how it went (below 500: success;
    /// 5xx, connect errors and timeouts: failure).
    pub(crate) async fn post_json(
        &mut self,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<Response<Incoming>, SendFailure> {
        let r = self.upstream.post_json_classified(path, body).await;
        let ok = matches!(&r, Ok(resp) if !resp.status().is_server_error());
        self.reported = true;
        self.router.verdict(self.id, self.probe, ok);
        if let Err(f) = &r {
            self.router.no_answer(self.id, &f.error.to_string());
        }
        r
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut inner = self.router.lock();
        if let Some(s) = inner.servers.iter_mut().find(|s| s.id == self.id) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if self.probe && !self.reported {
                s.breaker.probe_abandoned(now);
            }
        }
        drop(inner);
        self.router.bump();
    }
}

/// What a failed pick found.
enum Miss {
    /// Nothing pickable; maybe something at this instant (a breaker turning half-open).
    Wait(Option<Instant>),
}

impl Router {
    /// A router over `urls` (each at `default_version`).
    pub(crate) fn new(
        urls: &[BackendUrl],
        default_version: u64,
        reach: Reach,
        threshold: u32,
        wait: Duration,
    ) -> Router {
        let router = Router {
            inner: Mutex::new(Inner {
                servers: Vec::new(),
                sessions: HashMap::new(),
                rr: 0,
                min_version: 0,
                next_id: 0,
            }),
            changed: watch::Sender::new(0),
            reach,
            threshold,
            wait,
            waiting: AtomicUsize::new(0),
            strict: std::sync::atomic::AtomicBool::new(false),
        };
        {
            let mut inner = router.lock();
            for u in urls {
                if inner.servers.iter().any(|s| s.url == u.root) {
                    continue;
                }
                let s = router.server(&mut inner, u, default_version);
                inner.servers.push(s);
            }
        }
        router
    }

    fn server(&self, inner: &mut Inner, url: &BackendUrl, version: u64) -> Server {
        inner.next_id += 1;
        Server {
            id: inner.next_id,
            url: url.root.clone(),
            upstream: Upstream::new(
                url,
                self.reach.api_key.as_deref(),
                self.reach.connect_timeout,
                self.reach.timeout,
            ),
            state: ServerState::Serving,
            version,
            in_flight: 0,
            breaker: Breaker::new(self.threshold),
            requests: 0,
            failures: 0,
            reason: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Turns strict versions on or off (see the field).
    pub(crate) fn set_strict(&self, on: bool) -> bool {
        self.strict.swap(on, Ordering::SeqCst)
    }

    /// A request to server `id` got no answer: with strict versions, the server is out until
    /// restored.
    fn no_answer(&self, id: u64, why: &str) {
        if !self.strict.load(Ordering::SeqCst) {
            return;
        }
        let mut inner = self.lock();
        if let Some(s) = inner.servers.iter_mut().find(|s| s.id == id) {
            if s.state != ServerState::Failed {
                tracing::warn!(server = %s.url, error = %why, "server gave no answer; out of the router until it is restored at a confirmed version");
                s.state = ServerState::Failed;
                s.reason = Some(format!(
                    "no answer ({why}); it may have restarted with other weights: restore it once it is loaded"
                ));
            }
        }
        drop(inner);
        self.bump();
    }

    fn verdict(&self, id: u64, probe: bool, ok: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(s) = inner.servers.iter_mut().find(|s| s.id == id) {
            if ok {
                if probe || !s.breaker.is_closed() {
                    tracing::info!(server = %s.url, "server answered again; breaker closed");
                }
                s.breaker.success();
            } else {
                s.failures += 1;
                if !probe && !s.breaker.is_closed() {
                    // Sent before the breaker opened; nothing new.
                } else if s.breaker.failure(now) {
                    tracing::warn!(server = %s.url, "server failing; breaker open, no traffic until a probe succeeds");
                }
            }
        }
        drop(inner);
        self.bump();
    }

    /// Picks a server for `session` (see the module docs of `router`), waiting up to the
    /// router's deadline for one to become available; then 503 naming every server's state.
    pub(crate) async fn pick(self: &Arc<Self>, session: &str) -> Result<Lease, ApiError> {
        let mut rx = self.changed.subscribe();
        let first = match self.try_pick(session, &[]) {
            Ok(lease) => return Ok(lease),
            Err(m) => m,
        };
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + self.wait;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let mut miss = Some(first);
        // Bounded by the deadline: each turn either picks or waits for a change, a breaker's
        // half-open instant, or the deadline.
        loop {
            let Miss::Wait(next) = match miss.take() {
                Some(m) => m,
                None => match self.try_pick(session, &[]) {
                    Ok(lease) => return Ok(lease),
                    Err(m) => m,
                },
            };
            let wake = next
                .map(tokio::time::Instant::from_std)
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                // One last look: something may have changed at the very end.
                return self
                    .try_pick(session, &[])
                    .map_err(|_| ApiError::NoServerAvailable {
                        waited: start.elapsed(),
                        servers: self.describe(),
                    });
            }
        }
    }

    /// Picks another server right now (no waiting), avoiding `tried`; for a request that
    /// failed before anything was sent.
    pub(crate) fn pick_other(self: &Arc<Self>, session: &str, tried: &[u64]) -> Option<Lease> {
        self.try_pick(session, tried).ok()
    }

    fn try_pick(self: &Arc<Self>, session: &str, avoid: &[u64]) -> Result<Lease, Miss> {
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let affinity = inner.sessions.get(session).copied();
        let floor = inner
            .min_version
            .max(affinity.map(|a| a.version).unwrap_or(0));
        let eligible = |s: &Server| {
            s.state == ServerState::Serving && s.version >= floor && !avoid.contains(&s.id)
        };
        // Sticky: the session's last server while it serves, its breaker is closed and its
        // version has not gone below what the session saw.
        let mut chosen = affinity.and_then(|a| {
            inner
                .servers
                .iter()
                .position(|s| s.id == a.server && eligible(s) && s.breaker.is_closed())
                .map(|i| (i, false))
        });
        let mut next_wake: Option<Instant> = None;
        if chosen.is_none() {
            // Least in flight; ties go round-robin from the cursor.
            let n = inner.servers.len();
            let mut best: Option<(usize, usize, bool)> = None;
            for k in 0..n {
                let i = (inner.rr + k) % n;
                let s = &inner.servers[i];
                if !eligible(s) {
                    continue;
                }
                let probe = match s.breaker.admit(now) {
                    Admit::Yes => false,
                    Admit::Probe => true,
                    Admit::No(at) => {
                        if let Some(at) = at {
                            next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
                        }
                        continue;
                    }
                };
                if best.is_none_or(|(_, f, _)| s.in_flight < f) {
                    best = Some((i, s.in_flight, probe));
                }
            }
            if let Some((i, _, probe)) = best {
                inner.rr = (i + 1) % n.max(1);
                chosen = Some((i, probe));
            }
        }
        let Some((i, probe)) = chosen else {
            return Err(Miss::Wait(next_wake));
        };
        let s = &mut inner.servers[i];
        if probe {
            s.breaker.probe_started();
        }
        s.in_flight += 1;
        s.requests += 1;
        let lease = Lease {
            router: Arc::clone(self),
            id: s.id,
            probe,
            reported: false,
            upstream: s.upstream.clone(),
            version: s.version,
        };
        let affinity = Affinity {
            server: s.id,
            version: s.version,
        };
        if let Some(a) = inner.sessions.get_mut(session) {
            *a = affinity;
        } else {
            if inner.sessions.len() >= MAX_AFFINITIES {
                // Stickiness is an optimisation: forgetting one is harmless.
                if let Some(k) = inner.sessions.keys().next().cloned() {
                    inner.sessions.remove(&k);
                }
            }
            inner.sessions.insert(session.to_string(), affinity);
        }
        Ok(lease)
    }

    /// Forgets a session's affinity (it was exported).
    pub(crate) fn forget_session(&self, session: &str) {
        self.lock().sessions.remove(session);
    }

    /// A client for a request that needs any server and records nothing (`GET /v1/models`).
    pub(crate) fn any_upstream(&self) -> Option<Upstream> {
        let inner = self.lock();
        inner
            .servers
            .iter()
            .find(|s| s.state == ServerState::Serving && s.breaker.is_closed())
            .or_else(|| inner.servers.first())
            .map(|s| s.upstream.clone())
    }

    /// `url: state (version v, breaker b)` for each server, for error messages.
    pub(crate) fn describe(&self) -> String {
        let now = Instant::now();
        let inner = self.lock();
        if inner.servers.is_empty() {
            return "the router has no servers (POST /router/servers)".into();
        }
        let list: Vec<String> = inner
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{} {:?} at version {} (breaker {}{})",
                    s.url,
                    s.state,
                    s.version,
                    s.breaker.label(now),
                    s.reason
                        .as_deref()
                        .map(|r| format!(", {r}"))
                        .unwrap_or_default()
                )
                .to_lowercase()
            })
            .collect();
        format!("{}; min_version {}", list.join(", "), inner.min_version)
    }

    /// `{servers: [...], min_version}`.
    pub(crate) fn snapshot(&self) -> Value {
        let now = Instant::now();
        let inner = self.lock();
        let servers: Vec<Value> = inner.servers.iter().map(|s| s.json(now)).collect();
        json!({
            "servers": servers,
            "min_version": inner.min_version,
            "waiting": self.waiting.load(Ordering::SeqCst),
        })
    }

    /// Whether any server is serving with a breaker that lets traffic through (now or soon).
    pub(crate) fn any_usable(&self) -> bool {
        self.lock()
            .servers
            .iter()
            .any(|s| s.state != ServerState::Failed)
    }

    fn find<'a>(inner: &'a mut Inner, url: &str) -> Result<&'a mut Server, ApiError> {
        let root = BackendUrl::parse(url).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let known: Vec<String> = inner.servers.iter().map(|s| s.url.clone()).collect();
        inner
            .servers
            .iter_mut()
            .find(|s| s.url == root.root)
            .ok_or_else(|| ApiError::UnknownServer {
                url: url.to_string(),
                known: known.join(", "),
            })
    }

    /// Replaces the server set: new servers serve at their version (or `default_version`);
    /// servers kept keep their state (and take the version given, if any); removed servers
    /// leave the pick set at once while their in-flight requests finish.
    pub(crate) fn replace(
        &self,
        list: &[(String, Option<u64>)],
        default_version: u64,
    ) -> Result<Value, ApiError> {
        let mut parsed = Vec::with_capacity(list.len());
        for (url, v) in list {
            let u = BackendUrl::parse(url).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            parsed.push((u, *v));
        }
        {
            let mut inner = self.lock();
            let mut old = std::mem::take(&mut inner.servers);
            let mut next = Vec::with_capacity(parsed.len());
            for (u, v) in &parsed {
                if next.iter().any(|s: &Server| s.url == u.root) {
                    continue;
                }
                match old.iter().position(|s| s.url == u.root) {
                    Some(i) => {
                        let mut s = old.swap_remove(i);
                        if let Some(v) = v {
                            s.version = *v;
                        }
                        next.push(s);
                    }
                    None => {
                        let s = self.server(&mut inner, u, v.unwrap_or(default_version));
                        next.push(s);
                    }
                }
            }
            for s in &old {
                tracing::info!(server = %s.url, in_flight = s.in_flight, "server removed from the router");
            }
            inner.servers = next;
        }
        self.bump();
        Ok(self.snapshot())
    }

    /// Sets one server's state (and optionally version); `restore` also resets its breaker.
    pub(crate) fn set(
        &self,
        url: &str,
        state: ServerState,
        version: Option<u64>,
        reason: Option<String>,
    ) -> Result<Value, ApiError> {
        let now = Instant::now();
        let v = {
            let mut inner = self.lock();
            let s = Self::find(&mut inner, url)?;
            s.state = state;
            if let Some(v) = version {
                s.version = v;
            }
            if state == ServerState::Serving {
                s.breaker.reset();
            }
            s.reason = reason;
            tracing::info!(server = %s.url, ?state, version = s.version, "server state set");
            s.json(now)
        };
        self.bump();
        Ok(v)
    }

    /// Every paused server serves again (at `version` if given). Returns the snapshot.
    pub(crate) fn resume_all(&self, version: Option<u64>) -> Value {
        {
            let mut inner = self.lock();
            for s in inner.servers.iter_mut() {
                if s.state == ServerState::Paused {
                    s.state = ServerState::Serving;
                    if let Some(v) = version {
                        s.version = v;
                    }
                }
            }
        }
        self.bump();
        self.snapshot()
    }

    /// Every server paused (failed ones stay failed).
    pub(crate) fn pause_all_now(&self) {
        {
            let mut inner = self.lock();
            for s in inner.servers.iter_mut() {
                if s.state != ServerState::Failed {
                    s.state = ServerState::Paused;
                }
            }
        }
        self.bump();
    }

    /// The staleness floor for new picks.
    pub(crate) fn set_min_version(&self, v: u64) -> u64 {
        let previous = std::mem::replace(&mut self.lock().min_version, v);
        self.bump();
        previous
    }

    /// Waits until `count` (read under the lock) is 0, for at most `timeout`; returns the
    /// count at the end.
    pub(crate) async fn wait_zero(
        &self,
        timeout: Duration,
        count: impl Fn(&[ServerView]) -> usize,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.changed.subscribe();
        // Bounded by the deadline.
        loop {
            let n = count(&self.views());
            if n == 0 {
                return 0;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return count(&self.views()),
            }
        }
    }

    /// A copy of each server's url and in-flight count.
    pub(crate) fn views(&self) -> Vec<ServerView> {
        self.lock()
            .servers
            .iter()
            .map(|s| ServerView {
                url: s.url.clone(),
                in_flight: s.in_flight,
            })
            .collect()
    }

    /// The root URL `url` normalises to, if it is a server of the set.
    pub(crate) fn root_of(&self, url: &str) -> Result<String, ApiError> {
        let mut inner = self.lock();
        Self::find(&mut inner, url).map(|s| s.url.clone())
    }
}

/// A server's url and in-flight count, for waits.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    pub(crate) url: String,
    pub(crate) in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(n: usize) -> Arc<Router> {
        let urls: Vec<BackendUrl> = (0..n)
            .map(|i| BackendUrl::parse(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap())
            .collect();
        Arc::new(Router::new(
            &urls,
            0,
            Reach {
                api_key: None,
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            },
            1,
            Duration::from_millis(50),
        ))
    }

    #[tokio::test]
    async fn with_strict_versions_a_server_that_gives_no_answer_is_out_until_restored() {
        // A port nothing listens on: the request is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let r = Arc::new(Router::new(
            &[BackendUrl::parse(&url).unwrap()],
            0,
            Reach {
                api_key: None,
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            },
            100,
            Duration::from_millis(50),
        ));
        assert!(!r.set_strict(true));
        let mut lease = r.pick("s").await.unwrap();
        assert!(lease
            .post_json("/v1/chat/completions", bytes::Bytes::from_static(b"{}"))
            .await
            .is_err());
        drop(lease);
        let snap = r.snapshot();
        assert_eq!(snap["servers"][0]["state"], "failed", "{snap}");
        assert!(r.pick("s").await.is_err(), "no traffic to it");
        r.set(&url, ServerState::Serving, Some(3), None).unwrap();
        assert!(r.pick("s").await.is_ok(), "a restore brings it back");
    }

    #[tokio::test]
    async fn sessions_stick_and_new_ones_go_to_the_least_loaded() {
        let r = router(3);
        let a = r.pick("a").await.unwrap();
        let b = r.pick("b").await.unwrap();
        let c = r.pick("c").await.unwrap();
        let ids = [a.id(), b.id(), c.id()];
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            3,
            "spread over the three"
        );
        drop((b, c));
        // a's server has one in flight, the others none: a still goes back to it.
        let a2 = r.pick("a").await.unwrap();
        assert_eq!(a2.id(), a.id());
        let d = r.pick("d").await.unwrap();
        assert_ne!(d.id(), a.id(), "a new session avoids the loaded server");
    }

    #[tokio::test]
    async fn no_pick_from_a_paused_or_older_server_and_a_503_names_the_states() {
        let r = router(2);
        r.set("http://127.0.0.1:9000", ServerState::Paused, None, None)
            .unwrap();
        for _ in 0..4 {
            assert_eq!(r.pick("s").await.unwrap().version, 0);
        }
        let l = r.pick("s").await.unwrap();
        assert_eq!(
            r.root_of("http://127.0.0.1:9001").unwrap(),
            "http://127.0.0.1:9001"
        );
        drop(l);
        r.set_min_version(1);
        match r.pick("s").await {
            Err(ApiError::NoServerAvailable { servers, .. }) => {
                assert!(
                    servers.contains("paused") && servers.contains("min_version 1"),
                    "{servers}"
                );
            }
            other => panic!("picked {:?}", other.map(|l| l.id())),
        }
    }

    #[tokio::test]
    async fn a_waiting_request_is_released_by_a_restore() {
        let r = Arc::new(Router {
            wait: Duration::from_secs(10),
            ..Arc::into_inner(router(1)).unwrap()
        });
        r.pause_all_now();
        let r2 = Arc::clone(&r);
        let waiting = tokio::spawn(async move { r2.pick("s").await.map(|l| l.version) });
        tokio::task::yield_now().await;
        r.set("http://127.0.0.1:9000", ServerState::Serving, Some(4), None)
            .unwrap();
        let v = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(v, 4);
    }
}
