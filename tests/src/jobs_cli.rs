//! Driving a real `fleet head` through its command-line clients (`fleet submit`, `fleet job
//! status --json`, `fleet status --json`), for the tests of jobs and of the dashboard.

use crate::head_proc::HeadProc;
use crate::wait::wait_until;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `examples/demo.toml` of this checkout.
pub fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml")
}

/// Runs a client command to its end (no stdin).
pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().expect("running a fleet client")
}

/// A command's exit status and output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `fleet submit` and the job id on its last line.
pub fn submit(head: &HeadProc, name: &str, episodes: u64) -> String {
    let job = demo();
    let o = run(head.client(&[
        "submit",
        job.to_str().unwrap(),
        "--name",
        name,
        "--episodes",
        &episodes.to_string(),
    ]));
    assert!(o.status.success(), "fleet submit failed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let id = out.lines().last().unwrap_or("").trim().to_string();
    assert_eq!(id.len(), 8, "the last line is the job id: {}", text(&o));
    id
}

/// `fleet job status ID --json`.
pub fn status(head: &HeadProc, id: &str) -> Value {
    let o = run(head.client(&["job", "status", id, "--json"]));
    assert!(o.status.success(), "fleet job status failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// The `state` of a job's status.
pub fn state(v: &Value) -> String {
    v["state"].as_str().unwrap_or("").to_string()
}

/// Waits up to `within` for job `id` to reach a state `done` accepts; returns its status.
pub async fn wait_state(
    head: &HeadProc,
    id: &str,
    within: Duration,
    done: fn(&str) -> bool,
) -> Value {
    let mut last = Value::Null;
    let r = wait_until(&format!("job {id} to reach its state"), within, || {
        let v = status(head, id);
        let hit = done(&state(&v)).then(|| v.clone());
        last = v;
        async move { hit }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}; last status: {last:#}"))
}

/// Whether a job state is an end.
pub fn is_final(s: &str) -> bool {
    matches!(s, "Succeeded" | "Failed" | "Stopped")
}

/// `fleet status --json`.
pub fn cluster_status(head: &HeadProc) -> Value {
    let o = run(head.client(&["status", "--json"]));
    assert!(o.status.success(), "fleet status failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Waits (up to 90 s) until job `id` has accepted at least `n` episodes.
pub async fn wait_accepted(head: &HeadProc, id: &str, n: u64) {
    wait_until("the job to make progress", Duration::from_secs(90), || {
        let v = status(head, id);
        let p = v["progress"]["accepted"].as_u64().unwrap_or(0);
        async move { (p >= n).then_some(()) }
    })
    .await
    .unwrap();
}
