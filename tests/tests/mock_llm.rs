//! `fleet mock-llm`, the test double of an inference server: deterministic for a seed, OpenAI
//! shapes with vLLM's token-id fields, streaming, and injected failures. A real process on
//! loopback.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use fixture::start_mock;
use fleet_tests::{fleet_bin, TestHttp};
use serde_json::{json, Value};

fn chat(max_tokens: u32, stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "hello world"}],
           "max_tokens": max_tokens, "logprobs": true, "top_logprobs": 2,
           "return_token_ids": true, "stream": stream})
}

#[tokio::test]
async fn the_mock_is_deterministic_for_a_seed() {
    let http = TestHttp::new();
    let mut answers = Vec::new();
    for seed in ["1", "1", "2"] {
        let (_mock, addr) = start_mock(&["--seed", seed]).await;
        let r = http
            .post(
                &format!("http://{addr}/v1/chat/completions"),
                None,
                &chat(8, false),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        answers.push((
            r.json["choices"][0]["token_ids"].clone(),
            r.json["choices"][0]["logprobs"].clone(),
        ));
    }
    assert_eq!(answers[0], answers[1], "same seed, same answer");
    assert_ne!(answers[0].0, answers[2].0, "another seed, another answer");
}

#[tokio::test]
async fn the_mock_returns_token_ids_and_openai_logprobs() {
    let (_mock, addr) = start_mock(&["--seed", "3"]).await;
    let http = TestHttp::new();
    let r = http
        .post(
            &format!("http://{addr}/v1/chat/completions"),
            None,
            &chat(6, false),
        )
        .await;
    let v = &r.json;
    assert_eq!(v["object"], "chat.completion");
    let prompt = v["prompt_token_ids"].as_array().expect("prompt_token_ids");
    // Toy tokenizer: a role marker per message, one id per word, and the assistant marker.
    assert_eq!(prompt.len(), 1 + 2 + 1 + 2 + 1);
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
    let choice = &v["choices"][0];
    let ids = choice["token_ids"].as_array().expect("token_ids");
    assert_eq!(ids.len(), 6);
    assert_eq!(choice["finish_reason"], "length");
    let content = choice["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    assert_eq!(content.len(), 6);
    let mut text = String::new();
    for c in content {
        assert!(c["logprob"].as_f64().unwrap() < 0.0);
        let token = c["token"].as_str().unwrap();
        text.push_str(token);
        assert_eq!(c["bytes"], json!(token.as_bytes()));
        assert_eq!(c["top_logprobs"].as_array().unwrap().len(), 2);
    }
    assert_eq!(choice["message"]["content"], text);

    // Without the flags, neither token ids nor logprobs.
    let r = http
        .post(
            &format!("http://{addr}/v1/chat/completions"),
            None,
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert!(r.json.get("prompt_token_ids").is_none());
    assert!(r.json["choices"][0]["logprobs"].is_null());
    assert_eq!(r.json["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        r.json["usage"]["completion_tokens"], 16,
        "the default length"
    );

    // Legacy completions: the legacy logprobs shape, ids per choice.
    let r = http
        .post(
            &format!("http://{addr}/v1/completions"),
            None,
            &json!({"prompt": [5, 6, 7], "max_tokens": 3, "logprobs": 1, "return_token_ids": true}),
        )
        .await;
    let c = &r.json["choices"][0];
    assert_eq!(c["prompt_token_ids"], json!([5, 6, 7]));
    assert_eq!(c["token_ids"].as_array().unwrap().len(), 3);
    assert_eq!(c["logprobs"]["token_logprobs"].as_array().unwrap().len(), 3);
    assert_eq!(c["logprobs"]["tokens"].as_array().unwrap().len(), 3);

    // Streaming gives the same tokens, one per chunk, and ends with [DONE].
    let whole = http
        .post(
            &format!("http://{addr}/v1/chat/completions"),
            None,
            &chat(6, false),
        )
        .await;
    let s = http
        .post(
            &format!("http://{addr}/v1/chat/completions"),
            None,
            &chat(6, true),
        )
        .await;
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert!(s.text.trim_end().ends_with("data: [DONE]"));
    let mut ids = Vec::new();
    for line in s.text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            if let Some(t) = v["choices"][0]["token_ids"].as_array() {
                ids.extend(t.iter().cloned());
            }
        }
    }
    assert_eq!(Value::Array(ids), whole.json["choices"][0]["token_ids"]);

    // Models and health.
    let m = http.get(&format!("http://{addr}/v1/models")).await;
    assert_eq!(m.json["data"][0]["id"], "fleet-mock");
    assert_eq!(http.get(&format!("http://{addr}/health")).await.status, 200);
    let stats = http.get(&format!("http://{addr}/stats")).await;
    assert_eq!(stats.json["streams_started"], 1);
    assert_eq!(stats.json["streams_completed"], 1);
}

#[tokio::test]
async fn the_mock_injects_503s_and_connection_drops() {
    let http = TestHttp::new();
    let (_m, addr) = start_mock(&["--fail-rate", "1", "--fail-mode", "503"]).await;
    let r = http
        .post(
            &format!("http://{addr}/v1/chat/completions"),
            None,
            &chat(2, false),
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["error"]["type"], "service_unavailable");
    // Health is never failed.
    assert_eq!(http.get(&format!("http://{addr}/health")).await.status, 200);

    let (_m, addr) = start_mock(&["--fail-rate", "1", "--fail-mode", "drop"]).await;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let body = chat(2, false).to_string();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(
        out.is_empty(),
        "a drop answers nothing: {}",
        String::from_utf8_lossy(&out)
    );
    let stats = http.get(&format!("http://{addr}/stats")).await;
    assert_eq!(stats.json["failed_drop"], 1);
}

#[test]
fn the_mock_help_says_it_is_a_test_double() {
    let out = std::process::Command::new(fleet_bin())
        .args(["mock-llm", "--help"])
        .output()
        .expect("run fleet mock-llm --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TEST DOUBLE"), "{text}");
    assert!(
        text.contains("vLLM") && text.contains("--backend"),
        "{text}"
    );
}
