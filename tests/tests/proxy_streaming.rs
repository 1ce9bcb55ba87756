//! `fleet proxy` passes streams through event by event, and a client that disconnects makes it
//! cancel the backend's generation. The mock backend emits a token every 200 ms; the tests
//! assert the order of events (what the backend had done when the client saw something), never
//! a duration.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::time::Duration;

use bytes::Bytes;
use fixture::Rig;
use fleet_tests::{next_chunk, wait_until, TestHttp};
use hyper::Method;
use serde_json::json;

const CHUNK_DEADLINE: Duration = Duration::from_secs(20);

fn stream_body(max_tokens: u32) -> Bytes {
    Bytes::from(
        json!({"model": "policy", "messages": [{"role": "user", "content": "tell me"}],
               "max_tokens": max_tokens, "stream": true})
        .to_string(),
    )
}

/// Whether the SSE text holds a chunk with generated content (not just the role opening).
fn has_generated_token(sse: &str) -> bool {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .any(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
}

#[tokio::test]
async fn the_first_chunk_reaches_the_client_before_the_backend_has_finished() {
    let rig = Rig::start(&["--tokens-per-s", "5"], &[]).await;
    let (_sid, key) = rig.session("stream").await;
    let http = TestHttp::new();
    let resp = http
        .send(
            Method::POST,
            &rig.url("/v1/chat/completions"),
            Some(&key),
            stream_body(10),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // Read until the first generated token arrives.
    let mut seen = String::new();
    while !has_generated_token(&seen) {
        let chunk = next_chunk(&mut body, CHUNK_DEADLINE)
            .await
            .expect("stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // At this moment the backend is still generating: the proxy did not wait for the whole answer.
    let stats = rig.mock_stats().await;
    assert_eq!(stats["streams_started"], 1, "{stats}");
    assert_eq!(
        stats["streams_completed"], 0,
        "the client saw a token only after the backend finished: the stream was buffered ({stats})"
    );
    // The rest arrives, ending with [DONE], and then the backend has completed.
    while let Some(chunk) = next_chunk(&mut body, CHUNK_DEADLINE).await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.trim_end().ends_with("data: [DONE]"), "{seen}");
    assert_eq!(seen.matches("data: ").count(), 1 + 10 + 1 + 1, "{seen}");
    let stats = rig.mock_stats().await;
    assert_eq!(stats["streams_completed"], 1, "{stats}");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_backend_request() {
    let rig = Rig::start(&["--tokens-per-s", "5"], &[]).await;
    let (sid, key) = rig.session("cancel").await;
    {
        let http = TestHttp::new();
        let resp = http
            .send(
                Method::POST,
                &rig.url("/v1/chat/completions"),
                Some(&key),
                stream_body(1000),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut seen = String::new();
        while !has_generated_token(&seen) {
            let chunk = next_chunk(&mut body, CHUNK_DEADLINE)
                .await
                .expect("stream ended early");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        // Dropping the unfinished body and the client closes the connection to the proxy.
    }
    let stats = wait_until(
        "the backend stream to be cancelled",
        Duration::from_secs(20),
        || async {
            let s = rig.mock_stats().await;
            (s["streams_cancelled"] == 1).then_some(s)
        },
    )
    .await
    .unwrap();
    assert_eq!(stats["streams_completed"], 0, "{stats}");

    // The partial turn is recorded, marked cancelled.
    let r = rig.as_session(&key, "/rl/end_session", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let export = rig.export(&sid, 1.0).await;
    assert_eq!(export.status, 200, "{}", export.text);
    let turns = export.json["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 1, "{}", export.text);
    assert_eq!(turns[0]["status"], "cancelled");
    assert!(!turns[0]["output_token_ids"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn legacy_completions_stream_through_and_are_recorded() {
    let rig = Rig::start(&[], &[]).await;
    let (sid, key) = rig.session("legacy").await;
    let r = rig
        .as_session(
            &key,
            "/v1/completions",
            json!({"model": "policy", "prompt": "a b c", "max_tokens": 4, "stream": true, "logprobs": 2}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text.trim_end().ends_with("data: [DONE]"), "{}", r.text);
    assert!(
        r.text.contains("token_logprobs"),
        "the client asked for logprobs: {}",
        r.text
    );
    rig.as_session(&key, "/rl/end_session", json!({})).await;
    let export = rig.export(&sid, 1.0).await;
    let t = &export.json["turns"][0];
    assert_eq!(t["endpoint"], "completions");
    assert_eq!(t["output_token_ids"].as_array().unwrap().len(), 4);
    assert_eq!(t["output_logprobs"].as_array().unwrap().len(), 4);
    assert_eq!(t["prompt_token_ids"].as_array().unwrap().len(), 3);
}
