//! A real `fleet mock-llm` and a real `fleet proxy` in front of it, on loopback, for the proxy
//! tests. Both pick their own port (`--port 0`) and announce it on stdout.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use fleet_tests::{fleet_bin, spawn_listening, ChildGuard, JsonResponse, TestHttp};
use serde_json::{json, Value};

/// How long a server may take to start.
pub const START: Duration = Duration::from_secs(20);
/// The admin key the rig configures.
pub const ADMIN: &str = "test-admin-key-0123456789";

/// A mock backend and a proxy in front of it.
pub struct Rig {
    pub mock: Option<ChildGuard>,
    pub mock_addr: SocketAddr,
    pub proxy: ChildGuard,
    pub addr: SocketAddr,
    pub http: TestHttp,
    _key_dir: KeyFile,
}

/// A temporary admin key file, removed on drop.
struct KeyFile(std::path::PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts a mock with `mock_args`.
pub async fn start_mock(mock_args: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(fleet_bin());
    cmd.args(["mock-llm", "--port", "0"]).args(mock_args);
    spawn_listening("mock-llm", &mut cmd, START).await
}

/// Starts a proxy for `backend` with `args`, admin key from a file.
pub async fn start_proxy(backend: &str, args: &[&str]) -> (ChildGuard, SocketAddr, KeyFileHandle) {
    let path = std::env::temp_dir().join(format!(
        "fleet-test-admin-key-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, format!("{ADMIN}\n")).expect("write the key file");
    let mut cmd = Command::new(fleet_bin());
    cmd.args([
        "proxy",
        "--port",
        "0",
        "--backend",
        backend,
        "--admin-key-file",
    ])
    .arg(&path)
    .args(args)
    .env_remove("FLEET_ADMIN_KEY");
    let (child, addr) = spawn_listening("proxy", &mut cmd, START).await;
    (child, addr, KeyFileHandle(KeyFile(path)))
}

/// Keeps the admin key file alive (and removes it at the end).
pub struct KeyFileHandle(KeyFile);

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Rig {
    /// Starts a mock with `mock_args` and a proxy in front of it with `proxy_args`.
    pub async fn start(mock_args: &[&str], proxy_args: &[&str]) -> Rig {
        let (mock, mock_addr) = start_mock(mock_args).await;
        let (proxy, addr, key) = start_proxy(&format!("http://{mock_addr}"), proxy_args).await;
        Rig {
            mock: Some(mock),
            mock_addr,
            proxy,
            addr,
            http: TestHttp::new(),
            _key_dir: key.0,
        }
    }

    /// The proxy's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs as the admin.
    pub async fn admin(&self, path: &str, body: Value) -> JsonResponse {
        self.http.post(&self.url(path), Some(ADMIN), &body).await
    }

    /// POSTs with a session key.
    pub async fn as_session(&self, key: &str, path: &str, body: Value) -> JsonResponse {
        self.http.post(&self.url(path), Some(key), &body).await
    }

    /// Grants one unit of capacity and starts a session; returns (session id, key).
    pub async fn session(&self, task: &str) -> (String, String) {
        let r = self.admin("/grant_capacity", json!({"n": 1})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = self
            .admin("/rl/start_session", json!({"task_id": task}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.json["session_id"]
                .as_str()
                .expect("session_id")
                .to_string(),
            r.json["api_key"].as_str().expect("api_key").to_string(),
        )
    }

    /// One non-streamed chat completion with `content` as the user message.
    pub async fn chat(&self, key: &str, content: &str, max_tokens: u32) -> JsonResponse {
        self.as_session(
            key,
            "/v1/chat/completions",
            json!({"model": "policy", "messages": [{"role": "user", "content": content}],
                   "max_tokens": max_tokens}),
        )
        .await
    }

    /// The mock's `/stats`.
    pub async fn mock_stats(&self) -> Value {
        let r = self
            .http
            .get(&format!("http://{}/stats", self.mock_addr))
            .await;
        assert_eq!(r.status, 200);
        r.json
    }

    /// Exports a session.
    pub async fn export(&self, session: &str, discount: f64) -> JsonResponse {
        self.admin(
            "/export_trajectories",
            json!({"session_id": session, "discount": discount, "timeout_secs": 30}),
        )
        .await
    }
}

/// Asserts `r` is an error with `status` in the one JSON shape; returns its message.
pub fn assert_error(r: &JsonResponse, status: u16) -> String {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text);
    let err = &r.json["error"];
    assert!(
        err["type"].is_string() && err["message"].is_string(),
        "not the error shape: {}",
        r.text
    );
    err["message"].as_str().unwrap_or_default().to_string()
}
