//! The official `openai` Python package talks to `fleet proxy` with a session key: a normal
//! and a streaming chat completion, both recorded.
//!
//! Python comes from `FLEET_PYTHON` (set by `.ci/run` to a virtual environment with `openai`
//! installed), else `python3` if it can `import openai`. Without it the test prints a loud SKIP
//! notice, unless `CI` is set, where it fails.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixture::Rig;
use serde_json::json;

const SCRIPT: &str = r#"
import json, os, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["PROXY_URL"], api_key=os.environ["SESSION_KEY"], max_retries=0, timeout=30)
messages = [{"role": "user", "content": "say something"}]
r = client.chat.completions.create(model="policy", messages=messages, max_tokens=5)
text = r.choices[0].message.content
parts = []
stream = client.chat.completions.create(model="policy", messages=messages, max_tokens=5, stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
print(json.dumps({"text": text, "streamed": "".join(parts), "model": r.model}))
"#;

fn python() -> Option<String> {
    if let Ok(p) = std::env::var("FLEET_PYTHON") {
        return Some(p);
    }
    let ok = Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| "python3".to_string())
}

#[tokio::test]
async fn the_openai_python_client_talks_to_the_proxy_with_a_session_key() {
    let Some(python) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but neither FLEET_PYTHON nor `python3 -c 'import openai'` works");
        }
        eprintln!(
            "\n*** SKIP the_openai_python_client_talks_to_the_proxy_with_a_session_key: \
             no Python with the `openai` package (set FLEET_PYTHON or run .ci/run) ***\n"
        );
        return;
    };
    let rig = Rig::start(&["--seed", "9"], &[]).await;
    let (sid, key) = rig.session("python").await;
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .env("PROXY_URL", format!("http://{}/v1", rig.addr))
        .env("SESSION_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the Python client did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from python");
    assert_eq!(result["model"], "policy");
    let text = result["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(
        result["streamed"], text,
        "the same prompt streams the same tokens"
    );

    rig.as_session(&key, "/rl/end_session", json!({})).await;
    let export = rig.export(&sid, 1.0).await;
    let turns = export.json["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{}", export.text);
    for t in turns {
        assert_eq!(t["response"]["content"], text);
        assert_eq!(t["output_token_ids"].as_array().unwrap().len(), 5);
        assert_eq!(t["missing"], json!([]));
    }
}
