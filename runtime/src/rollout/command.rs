//! External agents: a command in any language, run per episode.
//!
//! The command gets `OPENAI_BASE_URL` (the proxy's `/v1`) and `OPENAI_API_KEY` (the session
//! key) in its environment, the task as JSON on stdin, and prints its reward as the last line of
//! stdout: `{"reward": r}` or `{"rewards": [r0, r1, ...]}`. It runs in a process group of its
//! own with a parent-death signal; at its deadline (or on cancellation) the whole group is
//! killed. A failure, a hang or garbage output rejects the episode with the reason; the worker
//! goes on to its next episode.

use super::agent::AgentOutcome;
use super::protocol::RejectReason;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes of stdout/stderr kept.
const MAX_OUTPUT: usize = 1 << 20;

fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().rev().take(5).collect();
    let mut v: Vec<&str> = lines.into_iter().rev().collect();
    v.retain(|l| !l.trim().is_empty());
    let joined = v.join(" | ");
    joined.chars().take(400).collect()
}

/// Parses the last non-empty stdout line as the reward.
pub fn parse_outcome(stdout: &[u8]) -> Result<AgentOutcome, RejectReason> {
    let text = String::from_utf8_lossy(stdout);
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Err(RejectReason::AgentGarbage(
            "it printed nothing; print {\"reward\": r} as the last line".into(),
        ));
    };
    let v: Value = serde_json::from_str(line.trim()).map_err(|_| {
        RejectReason::AgentGarbage(format!(
            "last line {:?} is not JSON; print {{\"reward\": r}}",
            line.chars().take(200).collect::<String>()
        ))
    })?;
    if let Some(r) = v.get("reward").and_then(Value::as_f64) {
        if r.is_finite() {
            return Ok(AgentOutcome::Reward(r));
        }
    }
    if let Some(rs) = v.get("rewards").and_then(Value::as_array) {
        let parsed: Option<Vec<f64>> = rs
            .iter()
            .map(|x| x.as_f64().filter(|f| f.is_finite()))
            .collect();
        if let Some(p) = parsed {
            return Ok(AgentOutcome::PerTurn(p));
        }
    }
    Err(RejectReason::AgentGarbage(format!(
        "{line:?} has no finite \"reward\" number nor a \"rewards\" list"
    )))
}

/// One run of an agent command: what to run and what it gets.
#[derive(Clone, Copy, Debug)]
pub struct Invocation<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Extra environment.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<&'a str>,
    /// `OPENAI_BASE_URL`.
    pub base_url: &'a str,
    /// `OPENAI_API_KEY` (the session key).
    pub api_key: &'a str,
    /// The task, written to stdin.
    pub task_json: &'a str,
}

/// Runs the agent command for one episode.
pub async fn run(
    inv: Invocation<'_>,
    deadline: Duration,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<AgentOutcome, RejectReason> {
    let Invocation {
        argv,
        env,
        cwd,
        base_url,
        api_key,
        task_json,
    } = inv;
    let Some((program, args)) = argv.split_first() else {
        return Err(RejectReason::AgentFailed(
            "the agent command is empty".into(),
        ));
    };
    let mut cmd = tokio::process::Command::new(program);
    // An agent runs untrusted tool code: it never inherits fleet's secrets from this process
    // (C12), even in a program that did not take them out of its environment at start.
    for name in fleet_launcher::process::SECRET_ENV_VARS {
        cmd.env_remove(name);
    }
    cmd.args(args)
        .envs(env)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", api_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RejectReason::AgentFailed(format!("cannot start {program:?}: {e}")))?;
    let pid = child.id().map(|p| p as i32);
    let kill_group = move || {
        if let Some(pid) = pid {
            // SAFETY: the group of a child we started.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let task = task_json.to_string();
    let io = async move {
        if let Some(mut s) = stdin.take() {
            let _ = s.write_all(task.as_bytes()).await;
            let _ = s.shutdown().await;
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        (out, err)
    };
    let run = async {
        let (out, err) = io.await;
        let status = child.wait().await;
        (status, out, err)
    };
    let cancelled = async {
        loop {
            if *cancel.borrow() {
                return;
            }
            if cancel.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        (status, out, err) = run => {
            // Anything the agent left running in its group goes with it.
            kill_group();
            let status = status.map_err(|e| RejectReason::AgentFailed(format!("waiting for the agent: {e}")))?;
            if !status.success() {
                return Err(RejectReason::AgentFailed(format!(
                    "{} (stderr: {})",
                    match status.code() { Some(c) => format!("exited with code {c}"), None => "killed by a signal".to_string() },
                    excerpt(&err)
                )));
            }
            parse_outcome(&out)
        }
        _ = tokio::time::sleep(deadline) => {
            kill_group();
            Err(RejectReason::AgentTimeout(deadline.as_millis() as u64))
        }
        _ = cancelled => {
            kill_group();
            Err(RejectReason::Cancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_the_reward() {
        assert_eq!(
            parse_outcome(b"thinking...\n{\"reward\": 0.5}\n").unwrap(),
            AgentOutcome::Reward(0.5)
        );
        assert_eq!(
            parse_outcome(b"{\"rewards\": [1, 0, 2]}").unwrap(),
            AgentOutcome::PerTurn(vec![1.0, 0.0, 2.0])
        );
        assert!(matches!(
            parse_outcome(b"done"),
            Err(RejectReason::AgentGarbage(_))
        ));
        assert!(matches!(
            parse_outcome(b""),
            Err(RejectReason::AgentGarbage(_))
        ));
        assert!(matches!(
            parse_outcome(b"{\"reward\": \"high\"}"),
            Err(RejectReason::AgentGarbage(_))
        ));
    }
}
