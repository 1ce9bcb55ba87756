//! `fleet infer` (the tiny policy's inference server, a real process on loopback) and the
//! `grpo-trainer` engine: the OpenAI shapes the proxy reads, the recording chain (the trainer
//! recomputes what the server reported), weight loading and its fingerprint, pause/continue,
//! and the request-id guard on `train_batch`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_policy::engine::{GrpoTrainer, TrainBatch, TrainerConfig};
use fleet_policy::grpo::Sample;
use fleet_policy::tokenizer::prompt_ids;
use fleet_tests::{fleet_bin, next_chunk, spawn_listening, ChildGuard, TestHttp};
use hyper::Method;
use serde_json::{json, Value};

const START: Duration = Duration::from_secs(60);

/// A fresh temporary directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fleet-policy-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).expect("create the test directory");
    d
}

/// Starts `fleet infer` on a model directory it creates from `seed`.
async fn start_infer(model: &Path, seed: u64, extra: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(fleet_bin());
    cmd.args([
        "infer",
        "--port",
        "0",
        "--init-seed",
        &seed.to_string(),
        "--model",
    ])
    .arg(model)
    .args(extra);
    let (child, addr) = spawn_listening("infer", &mut cmd, START).await;
    (child, format!("http://{addr}"))
}

/// The request the `openai` SDK sends for `client.chat.completions.create(...)`, plus the
/// fields the proxy adds (`logprobs`, `top_logprobs`, `return_token_ids`).
fn sdk_chat(content: &str, n: u32, stream: bool) -> Value {
    json!({
        "model": "fleet-policy",
        "messages": [{"role": "system", "content": "you reverse strings"},
                     {"role": "user", "content": content}],
        "max_tokens": 8, "temperature": 1.0, "n": n, "stream": stream,
        "logprobs": true, "top_logprobs": 1, "return_token_ids": true,
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn logprobs(choice: &Value) -> Vec<f32> {
    choice["logprobs"]["content"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["logprob"].as_f64())
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// (prompt ids, output ids, logprobs) of every choice of a chat answer.
fn choices(v: &Value) -> Vec<(Vec<u32>, Vec<u32>, Vec<f32>)> {
    let prompt = ids(&v["prompt_token_ids"]);
    v["choices"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| (prompt.clone(), ids(&c["token_ids"]), logprobs(c)))
                .collect()
        })
        .unwrap_or_default()
}

fn trainer(model: &Path) -> GrpoTrainer {
    GrpoTrainer::new(TrainerConfig::new(model)).expect("create the trainer")
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[tokio::test]
async fn fleet_infer_answers_an_openai_request_with_token_ids_logprobs_and_a_fingerprint() {
    let dir = temp_dir("shapes");
    let model = dir.join("model");
    let (_infer, base) = start_infer(&model, 1, &[]).await;
    let http = TestHttp::new();
    let r = http
        .post(
            &format!("{base}/v1/chat/completions"),
            None,
            &sdk_chat("abc=", 3, false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = &r.json;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        ids(&v["prompt_token_ids"]),
        prompt_ids("abc="),
        "the last user message is the prompt"
    );
    let fp = v["system_fingerprint"]
        .as_str()
        .expect("system_fingerprint");
    assert!(
        fp.starts_with("fleet-infer-v0-") && fp.len() == "fleet-infer-v0-".len() + 12,
        "{fp}"
    );
    let cs = choices(v);
    assert_eq!(cs.len(), 3, "n = 3 gives three choices");
    for (i, (_, out, lps)) in cs.iter().enumerate() {
        assert!(!out.is_empty() && out.len() <= 8, "choice {i}: {out:?}");
        assert_eq!(out.len(), lps.len(), "one logprob per token id");
        assert!(lps.iter().all(|l| *l <= 0.0 && l.is_finite()));
        let c = &v["choices"][i];
        let reason = c["finish_reason"].as_str().unwrap_or_default();
        assert!(reason == "stop" || reason == "length", "{reason}");
        assert_eq!(c["logprobs"]["content"][0]["id"], json!(out[0]));
    }
    assert_eq!(v["usage"]["prompt_tokens"], json!(prompt_ids("abc=").len()));

    // Streamed: the same fields chunk by chunk, each chunk naming the weights.
    let resp = http
        .send(
            Method::POST,
            &format!("{base}/v1/chat/completions"),
            None,
            bytes::Bytes::from(sdk_chat("abc=", 1, true).to_string()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut text = String::new();
    for _ in 0..200 {
        let Some(c) = next_chunk(&mut body, Duration::from_secs(30)).await else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(events.iter().all(|e| e["system_fingerprint"] == json!(fp)));
    assert_eq!(ids(&events[0]["prompt_token_ids"]), prompt_ids("abc="));
    let streamed: Vec<u32> = events
        .iter()
        .flat_map(|e| ids(&e["choices"][0]["token_ids"]))
        .collect();
    assert!(!streamed.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_trainer_recomputes_the_logprobs_fleet_infer_returned_to_float_precision() {
    let dir = temp_dir("logprobs");
    let model = dir.join("model");
    let (_infer, base) = start_infer(&model, 2, &[]).await;
    let http = TestHttp::new();
    let mut rows = Vec::new();
    let mut reported = Vec::new();
    // Concurrent requests, so the server batches sequences of different lengths together.
    let prompts = ["abc=", "hgfed=", "ab=", "cdcdc=", "12+7=", "a="];
    let answers = futures::future::join_all(prompts.iter().map(|p| {
        let http = http.clone();
        let url = format!("{base}/v1/chat/completions");
        let body = sdk_chat(p, 4, false);
        async move { http.post(&url, None, &body).await }
    }))
    .await;
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text);
        for (p, o, l) in choices(&r.json) {
            rows.push((p, o));
            reported.push(l);
        }
    }
    let mut t = trainer(&model);
    let recomputed = fleet_policy::train::recompute_logprobs(t.policy(), &rows, 1.0).unwrap();
    let d = max_diff(&recomputed, &reported);
    assert!(d < 1e-4, "largest |recomputed - reported| logprob is {d}");

    // The same check inside a training step: samples of the trainer's current version.
    let samples: Vec<Sample> = rows
        .iter()
        .zip(&reported)
        .enumerate()
        .map(|(i, ((p, o), l))| Sample {
            group: format!("g{}", i / 4),
            prompt_ids: p.clone(),
            output_ids: o.clone(),
            logprobs: l.clone(),
            loss_mask: vec![],
            reward: (i % 4) as f64 / 3.0,
            version: 0,
        })
        .collect();
    let report = t
        .train_batch(TrainBatch {
            request_id: "step-1".into(),
            version: 1,
            samples,
            out_dir: dir.join("weights"),
        })
        .unwrap();
    let step_diff = report
        .stats
        .max_logprob_diff
        .expect("samples of the current version");
    assert!(step_diff < 1e-4, "the step's logprob check: {step_diff}");
    assert_eq!(report.stats.checked_samples, rows.len() as u64);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn fleet_infer_loads_new_weights_from_disk_and_its_fingerprint_names_them() {
    let dir = temp_dir("update");
    let model = dir.join("model");
    let (_infer, base) = start_infer(&model, 3, &[]).await;
    let http = TestHttp::new();
    let v0 = http.get(&format!("{base}/get_weight_version")).await;
    assert_eq!(v0.json, json!({"weight_version": "0"}));
    let before = http
        .post(
            &format!("{base}/v1/chat/completions"),
            None,
            &sdk_chat("abcd=", 4, false),
        )
        .await;
    let fp0 = before.json["system_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    // One training step on what the server generated, then load its output.
    let mut t = trainer(&model);
    let samples: Vec<Sample> = choices(&before.json)
        .into_iter()
        .enumerate()
        .map(|(i, (p, o, l))| Sample {
            group: "abcd".into(),
            prompt_ids: p,
            output_ids: o,
            logprobs: l,
            loss_mask: vec![],
            reward: i as f64,
            version: 0,
        })
        .collect();
    let report = t
        .train_batch(TrainBatch {
            request_id: "u-1".into(),
            version: 1,
            samples,
            out_dir: dir.join("weights"),
        })
        .unwrap();
    assert!(report.path.ends_with("weights-v1.safetensors"));
    let r = http
        .post(
            &format!("{base}/update_weights_from_disk"),
            None,
            &json!({"model_path": report.path}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], json!(true));
    let v1 = http.get(&format!("{base}/get_weight_version")).await;
    assert_eq!(
        v1.json,
        json!({"weight_version": "1"}),
        "the version comes from the file name"
    );
    let after = http
        .post(
            &format!("{base}/v1/chat/completions"),
            None,
            &sdk_chat("abcd=", 4, false),
        )
        .await;
    let fp1 = after.json["system_fingerprint"].as_str().unwrap();
    assert!(fp1.starts_with("fleet-infer-v1-"), "{fp1}");
    assert_ne!(fp1[15..], fp0[15..], "another file, another hash");
    // The server now generates with the trainer's current weights.
    let rows: Vec<_> = choices(&after.json)
        .into_iter()
        .map(|(p, o, _)| (p, o))
        .collect();
    let reported: Vec<_> = choices(&after.json)
        .into_iter()
        .map(|(_, _, l)| l)
        .collect();
    let recomputed = fleet_policy::train::recompute_logprobs(t.policy(), &rows, 1.0).unwrap();
    assert!(max_diff(&recomputed, &reported) < 1e-4);

    // A file that is not there: refused in SGLang's shape, naming the path; still serving v1.
    let missing = dir.join("weights/weights-v9.safetensors");
    let r = http
        .post(
            &format!("{base}/update_weights_from_disk"),
            None,
            &json!({"model_path": missing}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["success"], json!(false));
    assert!(
        r.json["message"].as_str().unwrap().contains("weights-v9"),
        "{}",
        r.text
    );
    let v = http.get(&format!("{base}/get_weight_version")).await;
    assert_eq!(v.json["weight_version"], "1");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn pause_holds_new_requests_until_continue_and_abort_ends_in_flight_ones() {
    let dir = temp_dir("pause");
    let model = dir.join("model");
    // 300 ms a step: a 27-token stream generates for seconds, long enough to abort it.
    let (_infer, base) = start_infer(&model, 4, &["--step-delay-ms", "300"]).await;
    let http = TestHttp::new();
    let r = http
        .post(
            &format!("{base}/pause_generation"),
            None,
            &json!({"mode": "in_place"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        http.get(&format!("{base}/health")).await.status,
        200,
        "healthy while paused"
    );
    let held = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/v1/chat/completions"));
        async move { http.post(&url, None, &sdk_chat("abc=", 1, false)).await }
    });
    // The request has arrived (counted) but is not generating.
    fleet_tests::wait_until(
        "the held request to arrive",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            let url = format!("{base}/stats");
            async move {
                let s = http.get(&url).await.json;
                (s["requests"] == json!(1)).then_some(())
            }
        },
    )
    .await
    .expect("the request reaches the server");
    let s = http.get(&format!("{base}/stats")).await.json;
    assert_eq!(s["paused"], json!(true));
    assert_eq!(s["in_flight"], json!(0), "a held request is not generating");
    assert!(!held.is_finished());
    let r = http
        .post(&format!("{base}/continue_generation"), None, &json!({}))
        .await;
    assert_eq!(r.status, 200);
    let answer = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("the held request is answered after continue")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);

    // Abort: a stream in flight ends with finish_reason "abort".
    let mut long = sdk_chat("abc=", 1, true);
    long["max_tokens"] = json!(32);
    long["temperature"] = json!(0.0); // greedy: the same tokens every run, no early end token
    let resp = http
        .send(
            Method::POST,
            &format!("{base}/v1/chat/completions"),
            None,
            bytes::Bytes::from(long.to_string()),
        )
        .await;
    let mut body = resp.into_body();
    let first = next_chunk(&mut body, Duration::from_secs(30)).await;
    assert!(first.is_some());
    let r = http
        .post(
            &format!("{base}/pause_generation"),
            None,
            &json!({"mode": "abort"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut text = String::new();
    for _ in 0..100_000 {
        let Some(c) = next_chunk(&mut body, Duration::from_secs(30)).await else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(text.contains(r#""finish_reason":"abort""#), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_repeated_train_batch_request_id_leaves_the_weights_unchanged() {
    let dir = temp_dir("dedupe");
    let model = dir.join("model");
    fleet_policy::Policy::create_dir(&model, &fleet_policy::ModelConfig::default(), 5).unwrap();
    let mut t = trainer(&model);
    let sample = |reward: f64, out: Vec<u32>| Sample {
        group: "g".into(),
        prompt_ids: prompt_ids("abc="),
        output_ids: out,
        logprobs: vec![-3.0, -3.0, -3.0],
        loss_mask: vec![],
        reward,
        version: 0,
    };
    let batch = TrainBatch {
        request_id: "step-1".into(),
        version: 1,
        samples: vec![sample(1.0, vec![4, 3, 1]), sample(0.0, vec![2, 2, 1])],
        out_dir: dir.join("weights"),
    };
    let first = t.train_batch(batch.clone()).unwrap();
    assert!(!first.replayed);
    let sum1 = t.status().unwrap().checksum;
    let file1 = std::fs::read(&first.path).unwrap();
    let again = t.train_batch(batch.clone()).unwrap();
    assert!(again.replayed, "answered from the record");
    assert_eq!(again.path, first.path);
    assert_eq!(
        t.status().unwrap().checksum,
        sum1,
        "weights bitwise unchanged"
    );
    assert_eq!(t.status().unwrap().steps, 1);
    assert_eq!(
        std::fs::read(&first.path).unwrap(),
        file1,
        "the file was not rewritten"
    );
    // The same version under another id is refused, saying where the trainer is.
    let mut other = batch;
    other.request_id = "step-1-bis".into();
    let e = t.train_batch(other).unwrap_err().to_string();
    assert!(e.contains("trainer is at version 1"), "{e}");
    assert_eq!(t.status().unwrap().checksum, sum1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_fleet_infer_mid_job_loses_no_episode_and_the_job_goes_on() {
    use fleet_runtime::rollout::job::RolloutJob;
    use fleet_runtime::rollout::run::{Ending, RunOptions};
    use std::sync::atomic::Ordering;

    let dir = temp_dir("kill");
    let model = dir.join("model");
    fleet_policy::Policy::create_dir(&model, &fleet_policy::ModelConfig::default(), 6).unwrap();
    let fleet = fleet_bin().to_string_lossy().into_owned();
    // Each step sleeps 5 ms, so episodes are in flight when the server dies.
    let command = json!([
        fleet,
        "infer",
        "--model",
        model,
        "--port",
        "{port}",
        "--seed",
        "{index}",
        "--step-delay-ms",
        "5"
    ]);
    let out = dir.join("out.jsonl");
    let toml = format!(
        "role = \"pkill\"\noutput = \"{}\"\nepisodes = 40\nbatch_size = 10\nmax_concurrent = 8\n\
         [workers]\nreplicas = 2\n[backend]\ncommand = {command}\n[tasks]\nprompt = \"abc=\"\nturns = 2\n",
        out.display()
    );
    let job_path = dir.join("job.toml");
    std::fs::write(&job_path, toml).unwrap();
    let job = RolloutJob::from_file(&job_path).unwrap();
    let cluster = fleet_runtime::Cluster::local()
        .port_range(28300, 28349)
        .start()
        .await
        .unwrap();
    let (accepted, observer) = fleet_tests::rollout::count_accepted();
    let opts = RunOptions {
        observe: Some(observer),
        ..Default::default()
    };
    let run = {
        let s = cluster.scheduler().clone();
        let job = job.clone();
        tokio::spawn(async move { job.run(&s, &fleet, opts).await })
    };
    fleet_tests::wait_until("10 episodes accepted", Duration::from_secs(120), || {
        let a = accepted.clone();
        async move { (a.load(Ordering::SeqCst) >= 10).then_some(()) }
    })
    .await
    .unwrap();
    let pid = fleet_runtime::membership::child_pids::by_worker()
        .get("pkill.backend/0")
        .copied()
        .expect("the first fleet infer runs");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let report = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the job finishes")
        .unwrap()
        .unwrap();
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.accepted, 40, "rejections: {:?}", report.rejected);
    let lines = fleet_tests::rollout::output_lines(&out);
    assert_eq!(
        fleet_tests::rollout::keys_once(&lines),
        (0..40).map(|i| (i, 0)).collect(),
        "every task exactly once"
    );
    // The turns were generated by the policy: token ids and logprobs recorded, fingerprinted.
    let turn = &lines[0]["turns"][0];
    assert_eq!(turn["complete"], json!(true), "{turn}");
    assert!(!ids(&turn["output_token_ids"]).is_empty());
    cluster.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The margin a short seeded run must improve the mean reward by.
const LEARNING_MARGIN: f64 = 0.2;

#[test]
fn a_short_seeded_grpo_run_improves_the_mean_reward_by_a_clear_margin() {
    use fleet_policy::sample::SplitMix;
    use fleet_policy::task::Task;
    use fleet_policy::train::{evaluate, self_play_step, warm_up, Learner};

    let mut rng = SplitMix::new(7);
    let policy = fleet_policy::Policy::init(&fleet_policy::ModelConfig::default(), 1).unwrap();
    let mut learner = Learner::new(policy, 3e-3).unwrap();
    let random = evaluate(learner.policy(), Task::Reverse, 128, 1.0, &mut rng).unwrap();
    warm_up(&mut learner, Task::Reverse, 30, 32, &mut rng).unwrap();
    let before = evaluate(learner.policy(), Task::Reverse, 256, 1.0, &mut rng).unwrap();
    let mut worst_diff: f64 = 0.0;
    for version in 0..30 {
        let st = self_play_step(&mut learner, Task::Reverse, 8, 8, version, &mut rng).unwrap();
        worst_diff = worst_diff.max(st.max_logprob_diff.expect("on-policy samples"));
    }
    let after = evaluate(learner.policy(), Task::Reverse, 256, 1.0, &mut rng).unwrap();
    println!(
        "reward: random {random:.3}, after warm-up {before:.3}, after 30 GRPO steps {after:.3}"
    );
    assert!(random < 0.1, "a random policy scores low: {random}");
    assert!(
        after - before >= LEARNING_MARGIN,
        "GRPO moved the reward from {before:.3} to {after:.3}, less than {LEARNING_MARGIN}"
    );
    assert!(
        worst_diff < 1e-4,
        "sampled and recomputed logprobs differ by {worst_diff}"
    );
}

const SDK_SCRIPT: &str = r#"
import json, os
from openai import OpenAI

client = OpenAI(base_url=os.environ["INFER_URL"], api_key="unused", max_retries=0, timeout=30)
messages = [{"role": "user", "content": "abcd="}]
r = client.chat.completions.create(model="fleet-policy", messages=messages, max_tokens=6,
                                   logprobs=True, seed=11, extra_body={"return_token_ids": True})
parts = []
for chunk in client.chat.completions.create(model="fleet-policy", messages=messages, max_tokens=6,
                                            seed=11, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
extra = r.model_extra or {}
choice = r.choices[0]
print(json.dumps({
    "text": choice.message.content, "streamed": "".join(parts),
    "logprobs": [c.logprob for c in choice.logprobs.content],
    "token_ids": (choice.model_extra or {}).get("token_ids"),
    "prompt_token_ids": extra.get("prompt_token_ids"),
    "fingerprint": r.system_fingerprint,
}))
"#;

#[tokio::test]
async fn the_openai_python_client_gets_token_ids_and_logprobs_from_fleet_infer() {
    let python = std::env::var("FLEET_PYTHON").ok().or_else(|| {
        let ok = Command::new("python3")
            .args(["-c", "import openai"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then(|| "python3".to_string())
    });
    let Some(python) = python else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but neither FLEET_PYTHON nor `python3 -c 'import openai'` works"
        );
        eprintln!("\n*** SKIP: no Python with the `openai` package (set FLEET_PYTHON) ***\n");
        return;
    };
    let dir = temp_dir("sdk");
    let (_infer, base) = start_infer(&dir.join("model"), 8, &[]).await;
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", SDK_SCRIPT])
        .env("INFER_URL", format!("{base}/v1"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the Python client finishes within 120 s")
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("JSON from python");
    assert_eq!(ids(&v["prompt_token_ids"]), prompt_ids("abcd="));
    let out_ids = ids(&v["token_ids"]);
    assert!(!out_ids.is_empty() && out_ids.len() <= 6, "{v}");
    assert_eq!(v["logprobs"].as_array().map(Vec::len), Some(out_ids.len()));
    assert_eq!(
        v["streamed"], v["text"],
        "the same seed streams the same tokens"
    );
    assert!(v["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .starts_with("fleet-infer-v0-"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_batch_on_an_rpc_server_worker_in_a_node_process_applies_a_step_once() {
    use fleet_actors::{CallOptions, Job, SchedulingSpec};
    use fleet_policy::engine::{TrainReport, TrainerStatus};

    let dir = temp_dir("node-trainer");
    let cluster = fleet_tests::cluster::TestCluster::builder()
        .node(fleet_tests::cluster::NodeSpec::new())
        .start()
        .await
        .expect("a head and a node process");
    let s = cluster.scheduler();
    s.create_workers(Job::new("trainer", 1).spec(SchedulingSpec::default()))
        .await
        .unwrap();
    let w = s
        .get_workers("trainer", Duration::from_secs(20))
        .await
        .unwrap()[0]
        .clone();
    let mut cfg = TrainerConfig::new(dir.join("model"));
    cfg.init_seed = Some(9);
    cfg.warmup = Some(fleet_policy::train::Warmup {
        task: fleet_policy::task::Task::Reverse,
        steps: 2,
    });
    let trainer = s
        .create_engine(&w.id, "trainer", "grpo-trainer", &cfg)
        .await
        .unwrap();
    let opts = CallOptions::default().timeout(Duration::from_secs(120));
    let before: TrainerStatus = trainer.call("status", &(), &opts).await.unwrap();
    let sample = |reward: f64, out: Vec<u32>| Sample {
        group: "abc".into(),
        prompt_ids: prompt_ids("abc="),
        logprobs: vec![-2.0; out.len()],
        output_ids: out,
        loss_mask: vec![],
        reward,
        version: 0,
    };
    let batch = TrainBatch {
        request_id: "v1".into(),
        version: 1,
        samples: vec![sample(1.0, vec![4, 3, 2, 1]), sample(0.0, vec![2, 2, 1])],
        out_dir: dir.join("weights"),
    };
    let with_id = opts.clone().request_id("train-v1");
    let first: TrainReport = trainer.call("train_batch", &batch, &with_id).await.unwrap();
    let after: TrainerStatus = trainer.call("status", &(), &opts).await.unwrap();
    assert_ne!(
        after.checksum, before.checksum,
        "a step changes the weights"
    );
    // Re-sent with the same call id: the RpcServer answers from its record.
    let again: TrainReport = trainer.call("train_batch", &batch, &with_id).await.unwrap();
    assert_eq!(again, first);
    // Re-sent under a new call id (the RpcServer's record cannot help): the engine's own record
    // answers, marked as a replay.
    let other = opts.clone().request_id("train-v1-resent");
    let replay: TrainReport = trainer.call("train_batch", &batch, &other).await.unwrap();
    assert!(replay.replayed);
    let end: TrainerStatus = trainer.call("status", &(), &opts).await.unwrap();
    assert_eq!(
        (end.checksum, end.steps),
        (after.checksum, 1),
        "applied once"
    );
    assert!(
        first.path.is_file(),
        "the weights file is on disk: {}",
        first.path.display()
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpo_over_a_fleet_infer_process_raises_the_reward_version_after_version() {
    use fleet_policy::sample::SplitMix;
    use fleet_policy::task::{reward, Task};

    let dir = temp_dir("loop");
    let model = dir.join("model");
    // Warmed up to about 0.3: partly right, so GRPO has signal; the trainer at its defaults.
    let (_infer, base) = start_infer(&model, 1, &["--warmup-steps", "40"]).await;
    let mut t = trainer(&model);
    let http = TestHttp::new();
    let mut rng = SplitMix::new(21);
    let mut curve = Vec::new();
    for version in 0..40u64 {
        // 8 tasks, a group of 8 completions each (n = 8), sampled by the server.
        let problems: Vec<_> = (0..8).map(|_| Task::Reverse.problem(&mut rng)).collect();
        let answers = futures::future::join_all(problems.iter().enumerate().map(|(i, p)| {
            let (http, url) = (http.clone(), format!("{base}/v1/chat/completions"));
            let mut body = sdk_chat(&p.prompt, 8, false);
            body["max_tokens"] = json!(16);
            body["seed"] = json!(version * 100 + i as u64);
            async move { http.post(&url, None, &body).await }
        }))
        .await;
        let mut samples = Vec::new();
        for (p, r) in problems.iter().zip(&answers) {
            assert_eq!(r.status, 200, "{}", r.text);
            let fp = r.json["system_fingerprint"].as_str().unwrap_or_default();
            assert!(fp.starts_with(&format!("fleet-infer-v{version}-")), "{fp}");
            for (i, (pi, o, l)) in choices(&r.json).into_iter().enumerate() {
                let text = r.json["choices"][i]["message"]["content"]
                    .as_str()
                    .unwrap_or_default();
                samples.push(Sample {
                    group: p.prompt.clone(),
                    reward: reward(&p.answer, text),
                    prompt_ids: pi,
                    output_ids: o,
                    logprobs: l,
                    loss_mask: vec![],
                    version,
                });
            }
        }
        let report = t
            .train_batch(TrainBatch {
                request_id: format!("v{}", version + 1),
                version: version + 1,
                samples,
                out_dir: dir.join("weights"),
            })
            .unwrap();
        let d = report
            .stats
            .max_logprob_diff
            .expect("samples of the current version");
        assert!(
            d < 1e-4,
            "version {version}: recorded and recomputed logprobs differ by {d}"
        );
        curve.push(report.stats.mean_reward);
        let r = http
            .post(
                &format!("{base}/update_weights_from_disk"),
                None,
                &json!({"model_path": report.path}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // The first and the last 10% of the versions, as the demo's acceptance measures.
    let first = curve[..4].iter().sum::<f64>() / 4.0;
    let last = curve[36..].iter().sum::<f64>() / 4.0;
    println!("mean reward: first 4 versions {first:.3}, last 4 {last:.3}; curve {curve:.2?}");
    assert!(
        last - first >= LEARNING_MARGIN,
        "the reward went from {first:.3} to {last:.3}, less than {LEARNING_MARGIN}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
