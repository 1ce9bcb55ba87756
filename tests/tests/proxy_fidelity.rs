//! `fleet proxy` in front of what real inference servers answer: a fake backend on 127.0.0.1
//! replays the recorded responses of vLLM, SGLang and llama.cpp in `tests/fixtures/openai/`
//! (their shapes follow each server's code; see the README there), whole and streamed, and
//! records the bytes it received. The tests assert what a trainer gets: logprobs and ids where
//! the server has them, turns that say what is missing where it has not, arrays aligned with the
//! tokens, every choice of `n > 1`, one turn for a re-sent request; and what the agent gets: its
//! own key order at the backend, the backend's own error body.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fixture::{start_proxy, KeyFileHandle, ADMIN};
use fleet_tests::{next_chunk, wait_until, ChildGuard, JsonResponse, TestHttp};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);

fn fixture(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/openai")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).expect("fixture is JSON")
}

/// What the fake backend answers.
#[derive(Clone, Default)]
struct Script {
    /// The answer to a non-streamed request.
    whole: Option<String>,
    /// The SSE body answered to a streamed request.
    stream: Option<String>,
    /// Refuse, with this status and body, a request whose top level has this key set (SGLang
    /// refuses `return_token_ids` on streams).
    refuse_stream_with: Option<(&'static str, u16, String)>,
    /// Answer every request with this status and body.
    error: Option<(u16, String)>,
    /// Hold the first streamed answer after its first two events until the proxy lets go.
    hold_first_stream: bool,
}

struct BackendState {
    script: Script,
    received: Mutex<Vec<Bytes>>,
    streams: AtomicUsize,
}

/// A fake OpenAI-compatible backend on 127.0.0.1.
struct Backend {
    addr: SocketAddr,
    state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Out = BoxBody<Bytes, Infallible>;

impl Backend {
    async fn start(script: Script) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(BackendState {
            script,
            received: Mutex::new(Vec::new()),
            streams: AtomicUsize::new(0),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }

    /// The request bodies received so far, as sent.
    fn received(&self) -> Vec<Bytes> {
        self.state.received.lock().unwrap().clone()
    }
}

fn full(status: u16, content_type: &str, body: String) -> Response<Out> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

async fn answer(
    st: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<Out>, Infallible> {
    if req.method() == Method::GET {
        return Ok(full(200, "application/json", "{}".into()));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    st.received.lock().unwrap().push(body.clone());
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let s = &st.script;
    if let Some((status, b)) = &s.error {
        return Ok(full(*status, "application/json", b.clone()));
    }
    let stream = v["stream"] == true;
    if !stream {
        return Ok(full(
            200,
            "application/json",
            s.whole.clone().unwrap_or_default(),
        ));
    }
    if let Some((key, status, b)) = &s.refuse_stream_with {
        if v.get(*key).is_some_and(|x| !x.is_null() && *x != false) {
            return Ok(full(*status, "application/json", b.clone()));
        }
    }
    let include_usage = v["stream_options"]["include_usage"] == true;
    // Real servers send the usage chunk only when asked.
    let events: Vec<String> = s
        .stream
        .clone()
        .unwrap_or_default()
        .split_inclusive("\n\n")
        .filter(|e| include_usage || !(e.contains("\"choices\":[]") && e.contains("\"usage\"")))
        .map(str::to_string)
        .collect();
    let n = st.streams.fetch_add(1, Ordering::SeqCst);
    let hold = s.hold_first_stream && n == 0;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if hold && i == 2 {
                // The proxy closes the connection when its client goes away.
                tx.closed().await;
                return;
            }
            if tx.send(Bytes::from(e)).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    }));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(body))
        .expect("response"))
}

/// A real `fleet proxy` in front of a fake backend.
struct Rig {
    backend: Backend,
    _proxy: ChildGuard,
    addr: SocketAddr,
    http: TestHttp,
    _key: KeyFileHandle,
}

impl Rig {
    async fn start(script: Script) -> Rig {
        let backend = Backend::start(script).await;
        let (proxy, addr, key) = start_proxy(&format!("http://{}", backend.addr), &[]).await;
        Rig {
            backend,
            _proxy: proxy,
            addr,
            http: TestHttp::new(),
            _key: key,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn admin(&self, path: &str, body: Value) -> JsonResponse {
        self.http.post(&self.url(path), Some(ADMIN), &body).await
    }

    async fn session(&self) -> (String, String) {
        assert_eq!(
            self.admin("/grant_capacity", json!({"n": 1})).await.status,
            200
        );
        let r = self
            .admin("/rl/start_session", json!({"task_id": "t"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.json["session_id"].as_str().expect("id").to_string(),
            r.json["api_key"].as_str().expect("key").to_string(),
        )
    }

    /// Sends `body` exactly as given (raw bytes) with a session key.
    async fn raw(&self, key: &str, body: &str) -> JsonResponse {
        self.http
            .call(
                Method::POST,
                &self.url("/v1/chat/completions"),
                Some(key),
                Bytes::from(body.to_string()),
            )
            .await
    }

    async fn chat(&self, key: &str, body: Value) -> JsonResponse {
        self.raw(key, &body.to_string()).await
    }

    /// Ends the session and exports it.
    async fn export(&self, sid: &str, key: &str) -> Value {
        let r = self
            .http
            .post(&self.url("/rl/end_session"), Some(key), &json!({}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = self
            .admin(
                "/export_trajectories",
                json!({"session_id": sid, "timeout_secs": 30}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn stats(&self) -> Value {
        let r = self
            .http
            .call(Method::GET, &self.url("/stats"), Some(ADMIN), Bytes::new())
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }
}

fn ask(stream: bool) -> Value {
    json!({"model": "policy", "messages": [{"role": "user", "content": "What is 2+2?"}],
           "max_tokens": 16, "stream": stream})
}

fn u32s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("integer"))
        .collect()
}

/// The export arrays line up with prompt ++ output, whatever is missing.
fn assert_aligned(turn: &Value) {
    let n_prompt = turn["prompt_token_ids"].as_array().unwrap().len();
    let n_out = turn["output_token_ids"].as_array().unwrap().len();
    for field in ["loss_mask", "logprobs", "versions"] {
        assert_eq!(
            turn[field].as_array().unwrap().len(),
            n_prompt + n_out,
            "{field} is not aligned with the tokens: {turn}"
        );
    }
    let lps = turn["logprobs"].as_array().unwrap();
    assert!(lps[..n_prompt].iter().all(Value::is_null), "{turn}");
    assert!(
        lps.iter()
            .all(|l| l.is_null() || l.as_f64().is_some_and(|x| x < 0.0)),
        "a logprob is invented (0.0 claims probability 1): {turn}"
    );
}

/// The SSE `data:` payloads of a streamed answer.
fn events(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn vllm_whole_and_streamed_turns_record_every_id_and_logprob_and_are_complete() {
    let expected = fixture_json("vllm/chat.json");
    let rig = Rig::start(Script {
        whole: Some(fixture("vllm/chat.json")),
        stream: Some(fixture("vllm/chat_stream.sse")),
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    let whole = rig.chat(&key, ask(false)).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    let c = &whole.json["choices"][0];
    assert!(
        c["logprobs"].is_null() && c.get("token_ids").is_none(),
        "{}",
        whole.text
    );
    assert!(
        whole.json.get("prompt_token_ids").is_none(),
        "what the proxy added is stripped"
    );
    let streamed = rig.chat(&key, ask(true)).await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    let ev = events(&streamed.text);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    assert!(
        !streamed.text.contains("\"usage\"") && !streamed.text.contains("token_ids"),
        "the usage chunk and ids the proxy asked for are not passed on: {}",
        streamed.text
    );
    // What the proxy asked vLLM for.
    for sent in rig.backend.received() {
        let v: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(
            (v["logprobs"].clone(), v["top_logprobs"].clone()),
            (json!(true), json!(1))
        );
        assert_eq!(v["return_token_ids"], true);
    }

    let t = rig.export(&sid, &key).await;
    assert_eq!(t["incomplete_turns"], 0, "{t}");
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    let want_out = u32s(&expected["choices"][0]["token_ids"]);
    let want_lps: Vec<Value> = expected["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["logprob"].clone())
        .collect();
    for turn in turns {
        assert_eq!(turn["complete"], true, "{turn}");
        assert_eq!(turn["prompt_token_ids"], expected["prompt_token_ids"]);
        assert_eq!(u32s(&turn["output_token_ids"]), want_out);
        assert_eq!(turn["output_logprobs"].as_array().unwrap(), &want_lps);
        assert_eq!(turn["response"]["content"], "The answer is 4.");
        assert_aligned(turn);
        let n_prompt = turn["prompt_token_ids"].as_array().unwrap().len();
        assert_eq!(
            &turn["logprobs"].as_array().unwrap()[n_prompt..],
            &want_lps[..]
        );
    }
    let stats = rig.stats().await;
    assert_eq!(stats["turns_recorded"], 2, "{stats}");
    assert_eq!(stats["turns_incomplete"], 0, "{stats}");
}

#[tokio::test]
async fn sglang_ids_are_recorded_and_a_stream_refusing_token_ids_is_resent_without_them_and_marked_incomplete(
) {
    let expected = fixture_json("sglang/chat.json");
    let rig = Rig::start(Script {
        whole: Some(fixture("sglang/chat.json")),
        stream: Some(fixture("sglang/chat_stream.sse")),
        refuse_stream_with: Some((
            "return_token_ids",
            400,
            fixture("sglang/error_stream_token_ids.json"),
        )),
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    assert_eq!(rig.chat(&key, ask(false)).await.status, 200);
    let streamed = rig.chat(&key, ask(true)).await;
    assert_eq!(
        streamed.status, 200,
        "the agent never sees the refusal: {}",
        streamed.text
    );
    assert!(streamed.text.contains("The") && streamed.text.trim_end().ends_with("[DONE]"));
    let sent: Vec<Value> = rig
        .backend
        .received()
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(sent.len(), 3, "whole, refused stream, stream again");
    assert_eq!(sent[1]["return_token_ids"], true);
    assert!(sent[2].get("return_token_ids").is_none(), "{}", sent[2]);
    assert_eq!(sent[2]["logprobs"], true);

    let t = rig.export(&sid, &key).await;
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    let (whole, stream) = (&turns[0], &turns[1]);
    assert_eq!(whole["complete"], true, "{whole}");
    assert_eq!(
        whole["prompt_token_ids"],
        expected["choices"][0]["prompt_token_ids"]
    );
    assert_eq!(
        whole["output_token_ids"],
        expected["choices"][0]["token_ids"]
    );
    assert_aligned(whole);

    assert_eq!(stream["complete"], false);
    assert_eq!(t["incomplete_turns"], 1);
    let why = stream["incomplete"].to_string();
    assert!(why.contains("refused `return_token_ids`"), "{why}");
    assert!(why.contains("no output token ids"), "{why}");
    assert_eq!(stream["output_token_ids"], json!([]));
    assert_eq!(
        stream["output_logprobs"].as_array().unwrap().len(),
        7,
        "logprobs kept"
    );
    assert_aligned(stream);
    let stats = rig.stats().await;
    assert_eq!(stats["turns_missing_token_ids"], 1, "{stats}");
    assert_eq!(stats["turns_incomplete"], 1, "{stats}");
    // /health says so too: missing ids are never silent.
    let health = rig
        .http
        .call(Method::GET, &rig.url("/health"), None, Bytes::new())
        .await;
    assert_eq!(health.json["turns_missing_token_ids"], 1, "{}", health.text);
}

#[tokio::test]
async fn llama_cpp_ids_come_from_the_logprobs_and_a_stream_that_lost_a_token_is_not_complete() {
    let expected = fixture_json("llamacpp/chat.json");
    let rig = Rig::start(Script {
        whole: Some(fixture("llamacpp/chat.json")),
        stream: Some(fixture("llamacpp/chat_stream.sse")),
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    assert_eq!(rig.chat(&key, ask(false)).await.status, 200);
    assert_eq!(rig.chat(&key, ask(true)).await.status, 200);
    // llama.cpp sets n_probs from top_logprobs: the proxy asks for one.
    for sent in rig.backend.received() {
        let v: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(v["top_logprobs"], 1, "{v}");
    }
    let t = rig.export(&sid, &key).await;
    let turns = t["turns"].as_array().unwrap();
    let ids_in_logprobs: Vec<u64> = expected["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    let (whole, stream) = (&turns[0], &turns[1]);
    assert_eq!(u32s(&whole["output_token_ids"]), ids_in_logprobs);
    assert_eq!(whole["output_logprobs"].as_array().unwrap().len(), 7);
    assert_eq!(
        whole["incomplete"],
        json!(["no prompt token ids from the backend"])
    );
    assert_aligned(whole);

    assert_eq!(
        u32s(&stream["output_token_ids"]),
        ids_in_logprobs[..6].to_vec()
    );
    assert_eq!(stream["complete"], false);
    let why = stream["incomplete"].to_string();
    assert!(
        why.contains("counted 7 completion tokens; 6 were recorded"),
        "fewer logprobs than tokens is not complete: {why}"
    );
    assert_aligned(stream);
    assert_eq!(t["incomplete_turns"], 2);
    assert_eq!(rig.stats().await["turns_missing_token_ids"], 2);
}

#[tokio::test]
async fn n_2_records_every_choice_as_sibling_turns_streaming_and_not() {
    let expected = fixture_json("vllm/chat_n2.json");
    let rig = Rig::start(Script {
        whole: Some(fixture("vllm/chat_n2.json")),
        stream: Some(fixture("vllm/chat_n2_stream.sse")),
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    let mut headers = Vec::new();
    for stream in [false, true] {
        let mut body = ask(stream);
        body["n"] = json!(2);
        let r = rig.chat(&key, body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let ids = r.headers["x-fleet-interaction-ids"]
            .to_str()
            .unwrap()
            .to_string();
        let first = r.headers["x-fleet-interaction-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(ids, format!("{first},{first}-c1"));
        headers.push(ids);
    }
    let t = rig.export(&sid, &key).await;
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 4, "two requests, two choices each");
    assert_eq!(t["incomplete_turns"], 0, "{t}");
    for (k, pair) in turns.chunks(2).enumerate() {
        let ids: Vec<&str> = pair
            .iter()
            .map(|t| t["interaction_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.join(","), headers[k]);
        for (i, turn) in pair.iter().enumerate() {
            assert_eq!(turn["choice_index"], i);
            assert_eq!(turn["n_choices"], 2);
            assert_eq!(turn["group_id"], pair[0]["interaction_id"]);
            assert_eq!(
                turn["output_token_ids"], expected["choices"][i]["token_ids"],
                "{turn}"
            );
            assert_eq!(
                turn["response"]["content"],
                expected["choices"][i]["message"]["content"]
            );
            assert_aligned(turn);
        }
    }
}

#[tokio::test]
async fn the_agents_key_order_reaches_the_backend_byte_for_byte_and_logprobs_false_is_respected() {
    let rig = Rig::start(Script {
        whole: Some(fixture("vllm/chat.json")),
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    // Property order is meaning: constrained decoding writes the fields in this order.
    let agent = r#"{"model": "policy", "messages": [{"role": "user", "content": "Book it."}],
 "tools": [{"type": "function", "function": {"name": "book", "parameters": {"type": "object",
   "properties": {"zeta_city": {"type": "string"}, "alpha_date": {"type": "string"}, "mid_seats": {"type": "integer"}},
   "required": ["zeta_city", "alpha_date"]}}}],
 "response_format": {"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": "object",
   "properties": {"z": {"type": "string"}, "a": {"type": "number"}}}}}}"#;
    assert_eq!(rig.raw(&key, agent).await.status, 200);
    let sent = rig.backend.received()[0].clone();
    let sent = std::str::from_utf8(&sent).unwrap();
    let head = agent.trim_end().strip_suffix('}').unwrap();
    assert!(
        sent.starts_with(head),
        "the agent's bytes must reach the backend unchanged, only members appended:\nsent:  {sent}\nagent: {agent}"
    );
    let added: Value =
        serde_json::from_str(&format!("{{{}", sent[head.len()..].trim_start_matches(','))).unwrap();
    assert_eq!(
        added,
        json!({"logprobs": true, "top_logprobs": 1, "return_token_ids": true})
    );

    let declined =
        r#"{"messages": [{"role": "user", "content": "no logprobs please"}], "logprobs": false}"#;
    assert_eq!(rig.raw(&key, declined).await.status, 200);
    let sent: Value = serde_json::from_slice(&rig.backend.received()[1]).unwrap();
    assert_eq!(
        sent["logprobs"], false,
        "an explicit false is never overridden"
    );
    assert!(sent.get("top_logprobs").is_none());
    let t = rig.export(&sid, &key).await;
    let turn = &t["turns"][1];
    assert_eq!(turn["output_logprobs"], json!([]));
    assert_eq!(turn["complete"], false);
    assert!(
        turn["incomplete"].to_string().contains("the agent sent"),
        "{turn}"
    );
    assert_aligned(turn);
    let n_prompt = turn["prompt_token_ids"].as_array().unwrap().len();
    assert!(turn["logprobs"].as_array().unwrap()[n_prompt..]
        .iter()
        .all(Value::is_null));
}

#[tokio::test]
async fn backend_4xx_error_bodies_reach_the_agent_unchanged() {
    for file in [
        "openai/error_context_length.json",
        "vllm/error_context_length.json",
        "llamacpp/error_context_length.json",
        "sglang/error_stream_token_ids.json",
    ] {
        let body = fixture(file);
        let rig = Rig::start(Script {
            error: Some((400, body.clone())),
            ..Script::default()
        })
        .await;
        let (_sid, key) = rig.session().await;
        for stream in [false, true] {
            let r = rig.chat(&key, ask(stream)).await;
            assert_eq!(r.status, 400, "{file}: {}", r.text);
            assert_eq!(
                r.text, body,
                "{file}: the backend's error body is passed on as it is"
            );
            assert_eq!(r.headers["x-fleet-backend-error"], "1");
        }
        if file.starts_with("openai") {
            let r = rig.chat(&key, ask(false)).await;
            assert_eq!(r.json["error"]["code"], "context_length_exceeded");
        }
    }
}

#[tokio::test]
async fn a_request_resent_after_a_client_timeout_leaves_one_turn() {
    let rig = Rig::start(Script {
        whole: Some(fixture("vllm/chat.json")),
        stream: Some(fixture("vllm/chat_stream.sse")),
        hold_first_stream: true,
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    let body = Bytes::from(ask(true).to_string());
    // The SDK's first try: it reads the start of the stream, then times out and hangs up.
    let first = rig
        .http
        .send(
            Method::POST,
            &rig.url("/v1/chat/completions"),
            Some(&key),
            body.clone(),
        )
        .await;
    assert_eq!(first.status(), 200);
    let mut b = first.into_body();
    let chunk = next_chunk(&mut b, DEADLINE).await.expect("first chunk");
    assert!(!chunk.is_empty());
    drop(b);
    // The proxy records the orphan as cancelled once it notices (it counts it in /stats).
    wait_until("the orphan turn is recorded", DEADLINE, || async {
        (rig.stats().await["turns_recorded"] == 1).then_some(())
    })
    .await
    .unwrap();
    // The SDK's second try: the same request, answered in full.
    let again = rig
        .http
        .call(
            Method::POST,
            &rig.url("/v1/chat/completions"),
            Some(&key),
            body,
        )
        .await;
    assert_eq!(again.status, 200);
    // An SDK retry of a non-streamed request too, and one different request after it.
    assert_eq!(rig.chat(&key, ask(false)).await.status, 200);
    assert_eq!(rig.chat(&key, ask(false)).await.status, 200);
    let mut other = ask(false);
    other["messages"][0]["content"] = json!("And 3+3?");
    assert_eq!(rig.chat(&key, other).await.status, 200);

    let t = rig.export(&sid, &key).await;
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "one turn per distinct request: {t}");
    assert_eq!(
        turns[0]["status"], "complete",
        "the orphan was replaced by the answered try"
    );
    assert_eq!(turns[0]["complete"], true);
    assert_eq!(turns[1]["parent_id"], turns[0]["interaction_id"]);
    assert_eq!(turns[2]["parent_id"], turns[1]["interaction_id"]);
    assert_eq!(turns[2]["messages"][0]["content"], "And 3+3?");
    assert_eq!(rig.stats().await["duplicate_turns_replaced"], 2);
}

#[tokio::test]
async fn an_error_event_mid_stream_reaches_the_agent_and_fails_the_turn() {
    let rig = Rig::start(Script {
        stream: Some(fixture("vllm/chat_stream_error.sse")),
        ..Script::default()
    })
    .await;
    let (sid, key) = rig.session().await;
    let r = rig.chat(&key, ask(true)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("EngineDeadError"),
        "the agent sees the backend's error: {}",
        r.text
    );
    let t = rig.export(&sid, &key).await;
    let turn = &t["turns"][0];
    assert_eq!(turn["status"], "failed", "{turn}");
    assert_eq!(turn["complete"], false);
    assert!(
        turn["incomplete"].to_string().contains("EngineDeadError"),
        "{turn}"
    );
    assert_eq!(
        u32s(&turn["output_token_ids"]),
        vec![785, 4226],
        "what was generated is kept"
    );
    assert_aligned(turn);
}
