//! `fleet mock-llm` loads weights and pauses like SGLang (and vLLM): its outputs are a
//! deterministic function of the weights file, every answer names the weights version in
//! `system_fingerprint`, pauses hold new requests, `abort` ends in-flight ones, and `in_place`
//! lets them finish with the weights they started with. Real mock processes on loopback.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::net::SocketAddr;
use std::time::Duration;

use fixture::start_mock;
use fleet_tests::{wait_until, TestHttp};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn chat(stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 6, "stream": stream, "return_token_ids": true,
           "messages": [{"role": "user", "content": "write the tests"}]})
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("fleet-mock-weights-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p).expect("create the dir");
    p
}

async fn answer(http: &TestHttp, addr: SocketAddr) -> Value {
    let r = http
        .post(
            &format!("http://{addr}/v1/chat/completions"),
            None,
            &chat(false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

async fn load(http: &TestHttp, addr: SocketAddr, body: Value) -> fleet_tests::JsonResponse {
    http.post(
        &format!("http://{addr}/update_weights_from_disk"),
        None,
        &body,
    )
    .await
}

async fn stats(http: &TestHttp, addr: SocketAddr) -> Value {
    http.get(&format!("http://{addr}/stats")).await.json
}

#[tokio::test]
async fn the_mocks_outputs_are_a_function_of_the_weights_file_and_the_request() {
    let dir = tmp("fn");
    let a = dir.join("a-v3.bin");
    let b = dir.join("b-v4.bin");
    std::fs::write(&a, vec![7u8; 3 << 20]).unwrap(); // several read buffers' worth
    std::fs::write(&b, b"other weights").unwrap();
    let (a_s, b_s) = (
        a.to_string_lossy().into_owned(),
        b.to_string_lossy().into_owned(),
    );
    let http = TestHttp::new();
    let (_m1, one) = start_mock(&["--weights", &a_s]).await;
    let (_m2, two) = start_mock(&[]).await;

    let r = http.get(&format!("http://{two}/get_weight_version")).await;
    assert_eq!(r.json["weight_version"], "0");
    let initial = answer(&http, two).await;
    assert_eq!(initial["system_fingerprint"], "fleet-mock-v0-initial");

    let r = load(&http, two, json!({"model_path": a_s})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["num_paused_requests"], 0);
    let from_a = answer(&http, two).await;
    let started_with_a = answer(&http, one).await;
    assert_eq!(
        from_a["choices"][0]["token_ids"], started_with_a["choices"][0]["token_ids"],
        "the same file and request give the same output, loaded at start or later"
    );
    assert_eq!(
        from_a["system_fingerprint"],
        started_with_a["system_fingerprint"]
    );
    let fp = from_a["system_fingerprint"].as_str().unwrap();
    assert!(
        fp.starts_with("fleet-mock-v3-") && fp.len() == "fleet-mock-v3-".len() + 12,
        "{fp}"
    );
    assert_ne!(
        from_a["choices"][0]["token_ids"],
        initial["choices"][0]["token_ids"]
    );

    let r = load(
        &http,
        two,
        json!({"model_path": b_s, "weight_version": "9"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let from_b = answer(&http, two).await;
    assert_ne!(
        from_b["choices"][0]["token_ids"], from_a["choices"][0]["token_ids"],
        "another file gives another output"
    );
    assert!(from_b["system_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("fleet-mock-v9-"));
    assert_eq!(stats(&http, two).await["weight_version"], "9");

    // Every chunk of a stream carries the fingerprint.
    let r = http
        .post(
            &format!("http://{two}/v1/chat/completions"),
            None,
            &chat(true),
        )
        .await;
    let events: Vec<Value> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("a JSON chunk"))
        .collect();
    assert!(events.len() > 2);
    for e in &events {
        assert_eq!(e["system_fingerprint"], from_b["system_fingerprint"], "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_weights_file_that_cannot_be_read_or_has_no_version_is_a_400_naming_it() {
    let dir = tmp("bad");
    let http = TestHttp::new();
    let (_m, addr) = start_mock(&[]).await;
    let missing = dir.join("missing-v2.bin").to_string_lossy().into_owned();
    let r = load(&http, addr, json!({"model_path": missing})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["success"], false);
    assert!(
        r.json["message"].as_str().unwrap().contains(&missing),
        "{}",
        r.text
    );
    let unversioned = dir.join("weights.bin");
    std::fs::write(&unversioned, b"x").unwrap();
    let r = load(&http, addr, json!({"model_path": unversioned})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("weight_version"),
        "{}",
        r.text
    );
    let r = http.get(&format!("http://{addr}/get_weight_version")).await;
    assert_eq!(
        r.json["weight_version"], "0",
        "a failed load keeps the old weights"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_paused_mock_holds_new_requests_until_continue_and_health_stays_up() {
    let http = TestHttp::new();
    let (_m, addr) = start_mock(&[]).await;
    let r = http
        .post(
            &format!("http://{addr}/pause_generation"),
            None,
            &json!({"mode": "in_place"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        http.get(&format!("http://{addr}/is_paused")).await.json["is_paused"],
        true
    );
    assert_eq!(http.get(&format!("http://{addr}/health")).await.status, 200);
    let held = {
        let http = http.clone();
        tokio::spawn(async move { answer(&http, addr).await })
    };
    let h = &http;
    wait_until("the request to arrive", WAIT, || async move {
        (stats(h, addr).await["requests"] == 1).then_some(())
    })
    .await
    .unwrap();
    let s = stats(&http, addr).await;
    assert_eq!(
        (
            s["paused"].clone(),
            s["in_flight"].clone(),
            s["completed"].clone()
        ),
        (json!(true), json!(0), json!(0))
    );
    let r = http
        .post(
            &format!("http://{addr}/continue_generation"),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = held.await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn abort_ends_in_flight_requests_and_in_place_lets_them_finish_with_their_weights() {
    let dir = tmp("pause");
    let w2 = dir.join("w-v2.bin");
    std::fs::write(&w2, b"the next weights").unwrap();
    let http = TestHttp::new();
    // Slow enough that a request is surely generating when the pause comes: the test waits
    // for `in_flight == 1` before pausing.
    let (_m, addr) = start_mock(&["--tokens-per-s", "4"]).await;
    let h = &http;
    let in_flight = || async move {
        wait_until("one request generating", WAIT, || async move {
            (stats(h, addr).await["in_flight"] == 1).then_some(())
        })
        .await
        .unwrap()
    };

    // abort: the generating request ends at once with finish_reason "abort".
    let req = {
        let http = http.clone();
        tokio::spawn(async move { answer(&http, addr).await })
    };
    in_flight().await;
    let r = http
        .post(
            &format!("http://{addr}/pause_generation"),
            None,
            &json!({"mode": "abort"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = req.await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "abort");
    http.post(
        &format!("http://{addr}/continue_generation"),
        None,
        &json!({}),
    )
    .await;

    // in_place: the request finishes with the weights it started with, even though new ones
    // are loaded while it runs; the pause answers only after it finished.
    let req = {
        let http = http.clone();
        tokio::spawn(async move {
            http.post(
                &format!("http://{addr}/v1/chat/completions"),
                None,
                &chat(true),
            )
            .await
        })
    };
    in_flight().await;
    let pause = {
        let http = http.clone();
        tokio::spawn(async move {
            http.post(
                &format!("http://{addr}/pause_generation"),
                None,
                &json!({"mode": "in_place"}),
            )
            .await
        })
    };
    let r = load(&http, addr, json!({"model_path": w2})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let streamed = req.await.unwrap();
    assert!(pause.await.unwrap().status == 200);
    let fps: Vec<String> = streamed
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["system_fingerprint"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(fps.iter().all(|f| f == "fleet-mock-v0-initial"), "{fps:?}");
    assert!(
        streamed.text.contains("\"finish_reason\":\"length\""),
        "{}",
        streamed.text
    );
    // vLLM's resume is the same as SGLang's continue.
    let r = http
        .post(&format!("http://{addr}/resume"), None, &json!({}))
        .await;
    assert_eq!(r.json["status"], "resumed");
    let after = answer(&http, addr).await;
    assert!(after["system_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("fleet-mock-v2-"));
    let _ = std::fs::remove_dir_all(&dir);
}
