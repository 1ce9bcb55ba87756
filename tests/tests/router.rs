//! The router inside `fleet proxy`, over real `fleet mock-llm` children and a real `fleet
//! proxy` process with several `--backend`: stickiness, least in-flight, drain, pause/resume,
//! a SIGKILLed server, no re-send after bytes were sent, and each turn's version against the
//! version of the weights that generated it (the mock's `system_fingerprint`).
//!
//! Where a test needs requests to stay in flight, it pauses the mocks themselves
//! (`/pause_generation`, which holds new requests): what is in flight is then decided by the
//! test, never by timing.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fixture::{start_mock, start_proxy, KeyFileHandle, ADMIN};
use fleet_tests::{pid_alive, wait_until, ChildGuard, JsonResponse, TestHttp};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Mocks and a proxy routing over them.
struct Fleet {
    mocks: Vec<Option<ChildGuard>>,
    mock_addrs: Vec<SocketAddr>,
    _proxy: ChildGuard,
    addr: SocketAddr,
    http: TestHttp,
    _key: KeyFileHandle,
}

/// A temporary directory of weights files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "fleet-router-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&p).expect("create the weights dir");
        Dir(p)
    }

    /// Writes a weights file `name` with `content`; returns its path.
    fn file(&self, name: &str, content: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write a weights file");
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Fleet {
    /// `mock_args[i]` for mock `i`, and a proxy over all of them with `proxy_args`.
    async fn start(mock_args: &[Vec<String>], proxy_args: &[&str]) -> Fleet {
        let mut mocks = Vec::new();
        let mut mock_addrs = Vec::new();
        for args in mock_args {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let (m, addr) = start_mock(&a).await;
            mocks.push(Some(m));
            mock_addrs.push(addr);
        }
        let mut args: Vec<String> = Vec::new();
        for a in &mock_addrs[1..] {
            args.push("--backend".into());
            args.push(format!("http://{a}"));
        }
        args.extend(proxy_args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (proxy, addr, key) = start_proxy(&format!("http://{}", mock_addrs[0]), &a).await;
        Fleet {
            mocks,
            mock_addrs,
            _proxy: proxy,
            addr,
            http: TestHttp::new(),
            _key: key,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn mock_url(&self, i: usize) -> String {
        format!("http://{}", self.mock_addrs[i])
    }

    async fn admin(&self, path: &str, body: Value) -> JsonResponse {
        self.http.post(&self.url(path), Some(ADMIN), &body).await
    }

    async fn servers(&self) -> Value {
        let r = self
            .http
            .call(
                hyper::Method::GET,
                &self.url("/router/servers"),
                Some(ADMIN),
                bytes::Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    /// The router's entry for mock `i`.
    async fn server(&self, i: usize) -> Value {
        let url = self.mock_url(i);
        self.servers().await["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .find(|s| s["url"] == url.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no server {url}"))
    }

    async fn session(&self) -> (String, String) {
        let r = self
            .admin("/rl/start_session", json!({"grant": true}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.json["session_id"].as_str().expect("id").to_string(),
            r.json["api_key"].as_str().expect("key").to_string(),
        )
    }

    async fn chat(&self, key: &str, content: &str, stream: bool) -> JsonResponse {
        self.http
            .post(
                &self.url("/v1/chat/completions"),
                Some(key),
                &json!({"model": "policy", "max_tokens": 3, "stream": stream,
                        "messages": [{"role": "user", "content": content}]}),
            )
            .await
    }

    async fn export(&self, session: &str) -> Value {
        let r = self
            .admin(
                "/export_trajectories",
                json!({"session_id": session, "end": true, "timeout_secs": 30}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn mock_stats(&self, i: usize) -> Value {
        let r = self.http.get(&format!("{}/stats", self.mock_url(i))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn mock_requests(&self, i: usize) -> u64 {
        self.mock_stats(i).await["requests"]
            .as_u64()
            .expect("requests")
    }

    async fn mock_post(&self, i: usize, path: &str, body: Value) -> JsonResponse {
        self.http
            .post(&format!("{}{path}", self.mock_url(i)), None, &body)
            .await
    }

    /// Pauses mock `i` itself (new requests are held there), without the router knowing.
    async fn hold_at_mock(&self, i: usize) {
        let r = self
            .mock_post(i, "/pause_generation", json!({"mode": "in_place"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    async fn release_at_mock(&self, i: usize) {
        let r = self.mock_post(i, "/continue_generation", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    /// SIGKILLs mock `i` and waits until it is gone.
    async fn kill_mock(&mut self, i: usize) {
        let m = self.mocks[i].take().expect("mock running");
        let pid = m.pid();
        m.signal_group(libc::SIGKILL);
        wait_until("the killed mock to be gone", WAIT, || async move {
            (!pid_alive(pid)).then_some(())
        })
        .await
        .unwrap();
        drop(m);
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The version in a `fleet-mock-v<N>-<hash>` fingerprint.
fn fingerprint_version(f: &str) -> u64 {
    f.strip_prefix("fleet-mock-v")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a mock fingerprint: {f}"))
}

fn turns(t: &Value) -> &Vec<Value> {
    t["turns"].as_array().expect("turns")
}

#[tokio::test]
async fn each_session_stays_on_one_server_while_it_is_healthy() {
    let dir = Dir::new("sticky");
    // Each mock loads its own weights file: the fingerprint says which server answered.
    let mocks: Vec<Vec<String>> = (0..3)
        .map(|i| {
            args(&[
                "--weights",
                &dir.file(&format!("s{i}-v1.bin"), &format!("server {i}")),
            ])
        })
        .collect();
    let f = Fleet::start(&mocks, &["--version", "1"]).await;
    const SESSIONS: usize = 6;
    const TURNS: usize = 4;
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(f.session().await);
    }
    let mut tasks = Vec::new();
    for (_, key) in &sessions {
        let (http, url, key) = (f.http.clone(), f.url("/v1/chat/completions"), key.clone());
        tasks.push(tokio::spawn(async move {
            for t in 0..TURNS {
                let r = http
                    .post(
                        &url,
                        Some(&key),
                        &json!({"model": "policy", "max_tokens": 2,
                        "messages": [{"role": "user", "content": format!("turn {t}")}]}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut used = std::collections::HashSet::new();
    for (sid, _) in &sessions {
        let t = f.export(sid).await;
        let fps: Vec<&str> = turns(&t)
            .iter()
            .map(|x| x["system_fingerprint"].as_str().expect("fingerprint"))
            .collect();
        assert_eq!(fps.len(), TURNS);
        assert!(
            fps.iter().all(|x| *x == fps[0]),
            "session {sid} moved between servers: {fps:?}"
        );
        used.insert(fps[0].to_string());
    }
    assert!(
        used.len() > 1,
        "new sessions are spread over the servers: {used:?}"
    );
    let mut total = 0;
    for i in 0..3 {
        total += f.mock_requests(i).await;
    }
    assert_eq!(
        total,
        (SESSIONS * TURNS) as u64,
        "every turn reached a mock once"
    );
}

#[tokio::test]
async fn least_in_flight_spreads_concurrent_requests_evenly() {
    let f = Fleet::start(&[vec![], vec![], vec![]], &[]).await;
    for i in 0..3 {
        f.hold_at_mock(i).await;
    }
    let mut tasks = Vec::new();
    for n in 0..6 {
        let (_, key) = f.session().await;
        let (http, url) = (f.http.clone(), f.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            http.post(
                &url,
                Some(&key),
                &json!({"model": "p", "max_tokens": 1,
                "messages": [{"role": "user", "content": format!("r{n}")}]}),
            )
            .await
            .status
        }));
    }
    let f = &f;
    wait_until("six requests held at the mocks", WAIT, || async move {
        let mut n = 0;
        for i in 0..3 {
            n += f.mock_requests(i).await;
        }
        (n == 6).then_some(())
    })
    .await
    .unwrap();
    for i in 0..3 {
        assert_eq!(
            f.mock_requests(i).await,
            2,
            "mock {i}: least in flight gives each two"
        );
        assert_eq!(f.server(i).await["in_flight"], 2);
    }
    for i in 0..3 {
        f.release_at_mock(i).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_drained_server_gets_no_new_request_and_drain_answers_after_its_in_flight_finished() {
    let f = Fleet::start(&[vec![], vec![]], &[]).await;
    f.hold_at_mock(0).await;
    f.hold_at_mock(1).await;
    let (_, key) = f.session().await;
    let first = {
        let (http, url, key) = (f.http.clone(), f.url("/v1/chat/completions"), key.clone());
        tokio::spawn(async move {
            http.post(
                &url,
                Some(&key),
                &json!({"model": "p", "max_tokens": 1,
                "messages": [{"role": "user", "content": "first"}]}),
            )
            .await
            .status
        })
    };
    let fr = &f;
    let busy = wait_until("the first request at a mock", WAIT, || async move {
        for i in 0..2 {
            if fr.mock_requests(i).await == 1 {
                return Some(i);
            }
        }
        None
    })
    .await
    .unwrap();
    let other = 1 - busy;
    let busy_url = f.mock_url(busy);

    // A drain with a short timeout answers at the timeout with the count, never hangs.
    let r = f
        .admin(
            "/router/drain",
            json!({"url": busy_url, "timeout_secs": 0.2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["drained"], false);
    assert_eq!(r.json["in_flight"], 1);
    assert_eq!(f.server(busy).await["state"], "draining");

    let drain = {
        let (http, url, busy_url) = (f.http.clone(), f.url("/router/drain"), busy_url.clone());
        tokio::spawn(async move {
            http.post(
                &url,
                Some(ADMIN),
                &json!({"url": busy_url, "timeout_secs": 30}),
            )
            .await
        })
    };
    // New requests, from the same session (sticky to the drained server) and new ones, all
    // go to the other server.
    let mut later = Vec::new();
    for n in 0..4 {
        let key = if n == 0 {
            key.clone()
        } else {
            f.session().await.1
        };
        let (http, url) = (f.http.clone(), f.url("/v1/chat/completions"));
        later.push(tokio::spawn(async move {
            http.post(
                &url,
                Some(&key),
                &json!({"model": "p", "max_tokens": 1,
                "messages": [{"role": "user", "content": format!("later {n}")}]}),
            )
            .await
            .status
        }));
    }
    wait_until("four requests at the other mock", WAIT, || async move {
        (fr.mock_requests(other).await == 4).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        f.mock_requests(busy).await,
        1,
        "the drained server got no new request"
    );
    assert!(
        !drain.is_finished(),
        "drain answers only after its in-flight request finished"
    );

    f.release_at_mock(busy).await;
    assert_eq!(first.await.unwrap(), 200);
    let d = drain.await.unwrap();
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(
        d.json,
        json!({"url": busy_url, "drained": true, "in_flight": 0})
    );
    f.release_at_mock(other).await;
    for t in later {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(f.mock_requests(busy).await, 1);
}

#[tokio::test]
async fn a_paused_set_holds_requests_in_the_router_and_releases_them_on_resume() {
    let f = Fleet::start(&[vec![], vec![]], &["--version", "1"]).await;
    let r = f
        .admin("/router/pause_all", json!({"timeout_secs": 10}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["drained"], true);
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let (sid, key) = f.session().await;
        sessions.push(sid);
        let (http, url) = (f.http.clone(), f.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            http.post(
                &url,
                Some(&key),
                &json!({"model": "p", "max_tokens": 1,
                "messages": [{"role": "user", "content": format!("held {n}")}]}),
            )
            .await
        }));
    }
    let fr = &f;
    wait_until("four requests waiting in the router", WAIT, || async move {
        (fr.servers().await["waiting"] == 4).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        f.mock_requests(0).await + f.mock_requests(1).await,
        0,
        "no request to a paused server"
    );
    let h = f.http.get(&f.url("/health")).await;
    assert_eq!(h.status, 200, "/health stays 200 while paused: {}", h.text);

    let r = f.admin("/router/resume_all", json!({"version": 2})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(f.mock_requests(0).await + f.mock_requests(1).await, 4);
    for sid in &sessions {
        let t = f.export(sid).await;
        assert_eq!(
            turns(&t)[0]["version"],
            2,
            "the turn records the version it was served at"
        );
    }
}

#[tokio::test]
async fn a_request_that_waits_too_long_for_a_server_gets_a_503_naming_the_states() {
    let f = Fleet::start(&[vec![], vec![]], &["--router-wait-secs", "0.3"]).await;
    let r = f
        .admin(
            "/router/fail",
            json!({"url": f.mock_url(0), "reason": "test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    f.admin("/router/pause_all", json!({})).await;
    let (_, key) = f.session().await;
    let r = f.chat(&key, "anyone?", false).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let msg = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("failed") && msg.contains("paused"), "{msg}");
    assert_eq!(r.json["error"]["type"], "no_server_available");
    assert_eq!(f.mock_requests(0).await + f.mock_requests(1).await, 0);
}

#[tokio::test]
async fn a_killed_server_gets_no_request_after_its_breaker_opens_and_sessions_move_on() {
    let dir = Dir::new("kill");
    let mocks: Vec<Vec<String>> = (0..3)
        .map(|i| {
            args(&[
                "--weights",
                &dir.file(&format!("k{i}-v0.bin"), &format!("k {i}")),
            ])
        })
        .collect();
    let mut f = Fleet::start(&mocks, &["--breaker-failures", "1"]).await;
    let mut sessions = Vec::new();
    for n in 0..6 {
        let (sid, key) = f.session().await;
        let r = f.chat(&key, &format!("hello {n}"), false).await;
        assert_eq!(r.status, 200, "{}", r.text);
        sessions.push((
            sid,
            key,
            r.json["system_fingerprint"].as_str().unwrap().to_string(),
        ));
    }
    let dead_fp = f.mock_stats(0).await["system_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sessions.iter().any(|s| s.2 == dead_fp),
        "some session was on the server to kill"
    );
    f.kill_mock(0).await;
    for round in 0..3 {
        for (sid, key, _) in &sessions {
            let r = f.chat(key, &format!("round {round}"), round % 2 == 1).await;
            assert_eq!(r.status, 200, "session {sid}, round {round}: {}", r.text);
        }
    }
    let dead = f.server(0).await;
    assert_ne!(dead["breaker"], "closed", "{dead}");
    assert!(dead["failures"].as_u64().unwrap() >= 1, "{dead}");
    for (sid, _, _) in &sessions {
        let t = f.export(sid).await;
        for turn in &turns(&t)[1..] {
            assert_ne!(
                turn["system_fingerprint"].as_str(),
                Some(dead_fp.as_str()),
                "a turn after the kill was served by the dead server"
            );
        }
    }
}

#[tokio::test]
async fn a_request_sent_to_a_server_that_then_died_is_not_sent_again() {
    let mut f = Fleet::start(&[vec![], vec![]], &[]).await;
    f.hold_at_mock(0).await;
    f.hold_at_mock(1).await;
    let (_, key) = f.session().await;
    let req = {
        let (http, url) = (f.http.clone(), f.url("/v1/chat/completions"));
        tokio::spawn(async move {
            http.post(
                &url,
                Some(&key),
                &json!({"model": "p", "max_tokens": 1,
                "messages": [{"role": "user", "content": "doomed"}]}),
            )
            .await
        })
    };
    let fr = &f;
    let at = wait_until("the request at a mock", WAIT, || async move {
        for i in 0..2 {
            if fr.mock_requests(i).await == 1 {
                return Some(i);
            }
        }
        None
    })
    .await
    .unwrap();
    let other = 1 - at;
    f.kill_mock(at).await;
    let r = req.await.unwrap();
    assert_eq!(r.status, 502, "the agent gets the error: {}", r.text);
    f.release_at_mock(other).await;
    assert_eq!(f.mock_requests(other).await, 0, "it was not sent again");
}

#[tokio::test]
async fn each_turns_version_is_the_version_of_the_weights_that_generated_it() {
    let dir = Dir::new("versions");
    let v1 = dir.file("policy-v1.bin", "weights one");
    let v2 = dir.file("policy-v2.bin", "weights two, after a training step");
    let f = Fleet::start(
        &[args(&["--weights", &v1]), args(&["--weights", &v1])],
        &["--version", "1"],
    )
    .await;
    const AGENTS: usize = 4;
    // Each agent runs until the update is over and it has done two turns after it (bounded).
    const MAX_TURNS: usize = 400;
    let updated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    for a in 0..AGENTS {
        let (sid, key) = f.session().await;
        sessions.push(sid);
        let (http, url) = (f.http.clone(), f.url("/v1/chat/completions"));
        let updated = std::sync::Arc::clone(&updated);
        tasks.push(tokio::spawn(async move {
            let mut after = 0;
            for t in 0..MAX_TURNS {
                if updated.load(std::sync::atomic::Ordering::SeqCst) {
                    after += 1;
                    if after > 2 {
                        break;
                    }
                }
                let r = http
                    .post(
                        &url,
                        Some(&key),
                        &json!({"model": "p", "max_tokens": 2,
                        "stream": (a + t) % 2 == 0,
                        "messages": [{"role": "user", "content": format!("a{a} t{t}")}]}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
        }));
    }
    // A rolling update while the agents run: drain, load, restore, one server at a time.
    for i in 0..2 {
        let url = f.mock_url(i);
        let r = f
            .admin("/router/drain", json!({"url": url, "timeout_secs": 30}))
            .await;
        assert_eq!(r.json["drained"], true, "{}", r.text);
        let r = f
            .mock_post(i, "/update_weights_from_disk", json!({"model_path": v2}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["success"], true);
        let r = f
            .admin("/router/restore", json!({"url": url, "version": 2}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    updated.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let v2_fp = f.mock_stats(0).await["system_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = std::collections::BTreeMap::new();
    for sid in &sessions {
        let t = f.export(sid).await;
        let mut last = 0;
        for turn in turns(&t) {
            let fp = turn["system_fingerprint"]
                .as_str()
                .expect("a fingerprint on every turn");
            let version = turn["version"].as_u64().unwrap();
            assert_eq!(
                fingerprint_version(fp),
                version,
                "turn {} recorded version {version} but was generated by {fp}",
                turn["interaction_id"]
            );
            if version == 2 {
                assert_eq!(fp, v2_fp, "version 2 turns come from the v2 file");
            }
            assert!(
                version >= last,
                "a session never goes back to older weights"
            );
            last = version;
            *seen.entry(version).or_insert(0) += 1;
        }
    }
    assert!(seen.contains_key(&2), "the update took effect: {seen:?}");
}

#[tokio::test]
async fn replacing_the_server_set_removes_servers_from_the_picks_and_lets_their_requests_finish() {
    let f = Fleet::start(&[vec![], vec![]], &[]).await;
    let (_extra, extra_addr) = start_mock(&[]).await;
    let extra_url = format!("http://{extra_addr}");
    f.hold_at_mock(0).await;
    f.hold_at_mock(1).await;
    let (_, key) = f.session().await;
    let held = {
        let (http, url, key) = (f.http.clone(), f.url("/v1/chat/completions"), key.clone());
        tokio::spawn(async move {
            http.post(
                &url,
                Some(&key),
                &json!({"model": "p", "max_tokens": 1,
                "messages": [{"role": "user", "content": "in flight"}]}),
            )
            .await
            .status
        })
    };
    let fr = &f;
    let removed = wait_until("the request at a mock", WAIT, || async move {
        for i in 0..2 {
            if fr.mock_requests(i).await == 1 {
                return Some(i);
            }
        }
        None
    })
    .await
    .unwrap();
    let kept = 1 - removed;
    let r = f
        .admin(
            "/router/servers",
            json!({"servers": [{"url": f.mock_url(kept)}, {"url": extra_url, "version": 5}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let urls: Vec<&str> = r.json["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, vec![f.mock_url(kept).as_str(), extra_url.as_str()]);
    f.release_at_mock(removed).await;
    assert_eq!(
        held.await.unwrap(),
        200,
        "the removed server's request finished"
    );
    f.release_at_mock(kept).await;

    // The staleness floor: only the version-5 server takes new picks now.
    let r = f.admin("/router/min_version", json!({"version": 5})).await;
    assert_eq!(r.json, json!({"min_version": 5, "previous": 0}));
    for n in 0..3 {
        let key = if n == 0 {
            key.clone()
        } else {
            f.session().await.1
        };
        let r = f.chat(&key, &format!("after {n}"), false).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(
        f.mock_requests(removed).await,
        1,
        "a removed server gets no new request"
    );
    assert_eq!(
        f.mock_requests(kept).await,
        0,
        "a server below min_version gets none"
    );
    let extra = f.http.get(&format!("{extra_url}/stats")).await.json["requests"].as_u64();
    assert_eq!(extra, Some(3));
}
