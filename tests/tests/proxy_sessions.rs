//! `fleet proxy` records sessions: turns with token ids, logprobs, versions and rewards; the
//! turn discount; and export, which waits for the end and then forgets the session. Real
//! `fleet mock-llm` and `fleet proxy` processes on loopback.

#[path = "proxy_fixture/mod.rs"]
mod fixture;

use std::time::Duration;

use fixture::{assert_error, Rig};
use fleet_tests::{wait_until, TestHttp};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[tokio::test]
async fn turns_are_recorded_with_token_ids_logprobs_versions_and_rewards() {
    let rig = Rig::start(&["--seed", "11"], &["--version", "3"]).await;
    let (sid, key) = rig.session("task-a").await;

    let first = rig.chat(&key, "what is the answer", 5).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let first_id = first.headers["x-fleet-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The client did not ask for logprobs or token ids, so it does not get them.
    assert!(
        first.json["choices"][0]["logprobs"].is_null(),
        "{}",
        first.text
    );
    assert!(first.json["choices"][0].get("token_ids").is_none());
    assert!(first.json.get("prompt_token_ids").is_none());
    assert_eq!(first.json["model"], "policy", "the model field is kept");

    let r = rig.admin("/set_version", json!({"version": 4})).await;
    assert_eq!(r.json, json!({"version": 4, "previous": 3}));

    let second = rig.chat(&key, "and then", 3).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let third = rig
        .as_session(
            &key,
            "/v1/completions",
            json!({"model": "policy", "prompt": "one two three", "max_tokens": 4}),
        )
        .await;
    assert_eq!(third.status, 200, "{}", third.text);

    let r = rig
        .as_session(
            &key,
            "/rl/set_reward",
            json!({"interaction_id": first_id, "reward": 0.5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = rig
        .as_session(&key, "/rl/set_reward", json!({"reward": 1.0}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let third_id = third.headers["x-fleet-interaction-id"].to_str().unwrap();
    assert_eq!(
        r.json["interaction_id"], third_id,
        "no id rewards the last turn"
    );
    let r = rig.as_session(&key, "/rl/end_session", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let export = rig.export(&sid, 1.0).await;
    assert_eq!(export.status, 200, "{}", export.text);
    let t = &export.json;
    assert_eq!(t["task_id"], "task-a");
    assert_eq!(t["end_reason"], "ended");
    let turns = t["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 3);
    assert_eq!(
        turns
            .iter()
            .map(|x| x["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 4, 4],
        "each turn carries the version current when it started"
    );
    assert_eq!(turns[0]["parent_id"], Value::Null);
    assert_eq!(turns[1]["parent_id"], turns[0]["interaction_id"]);
    assert_eq!(turns[2]["parent_id"], turns[1]["interaction_id"]);
    assert_eq!(turns[0]["raw_reward"], 0.5);
    assert_eq!(turns[1]["raw_reward"], Value::Null);
    assert_eq!(turns[2]["raw_reward"], 1.0);
    assert_eq!(turns[2]["endpoint"], "completions");
    assert_eq!(turns[0]["messages"][0]["content"], "what is the answer");
    assert_eq!(turns[2]["messages"], "one two three");

    for (turn, n_out) in turns.iter().zip([5usize, 3, 4]) {
        assert_eq!(turn["missing"], json!([]), "{turn}");
        assert_eq!(turn["status"], "complete");
        let prompt = ids(&turn["prompt_token_ids"]);
        let out = ids(&turn["output_token_ids"]);
        let lps = floats(&turn["output_logprobs"]);
        assert!(!prompt.is_empty());
        assert_eq!(out.len(), n_out);
        assert_eq!(lps.len(), n_out);
        assert!(lps.iter().all(|l| *l < 0.0));
        let mask = ids(&turn["loss_mask"]);
        assert_eq!(mask.len(), prompt.len() + n_out);
        assert!(mask[..prompt.len()].iter().all(|m| *m == 0));
        assert!(mask[prompt.len()..].iter().all(|m| *m == 1));
        let versions: Vec<i64> = turn["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(versions.len(), mask.len());
        assert!(versions[..prompt.len()].iter().all(|v| *v == -1));
        assert!(versions[prompt.len()..]
            .iter()
            .all(|v| *v == turn["version"].as_i64().unwrap()));
        let aligned = turn["logprobs"].as_array().unwrap();
        assert_eq!(aligned.len(), mask.len(), "one logprob entry per token");
        assert!(
            aligned[..prompt.len()].iter().all(Value::is_null),
            "prompt positions have no logprob, and none is invented"
        );
        assert_eq!(
            &floats(&Value::Array(aligned[prompt.len()..].to_vec()))[..],
            &lps[..]
        );
        assert_eq!(turn["complete"], true, "{turn}");
        assert_eq!(turn["incomplete"], json!([]));
    }

    // What was recorded is what the backend generated: ask the mock directly for the same
    // request with the fields the proxy adds (token ids, logprobs with one top logprob).
    let direct = TestHttp::new()
        .post(
            &format!("http://{}/v1/chat/completions", rig.mock_addr),
            None,
            &json!({"model": "policy", "messages": [{"role": "user", "content": "what is the answer"}],
                    "max_tokens": 5, "logprobs": true, "top_logprobs": 1, "return_token_ids": true}),
        )
        .await;
    assert_eq!(
        turns[0]["prompt_token_ids"],
        direct.json["prompt_token_ids"]
    );
    assert_eq!(
        turns[0]["output_token_ids"],
        direct.json["choices"][0]["token_ids"]
    );
    let direct_lps: Vec<f64> = direct.json["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["logprob"].as_f64().unwrap())
        .collect();
    assert_eq!(floats(&turns[0]["output_logprobs"]), direct_lps);
    assert_eq!(turns[0]["response"], first.json["choices"][0]["message"]);
}

#[tokio::test]
async fn discount_matches_a_worked_example() {
    // Rewards [1, 0, 2] with discount 0.9, from the last turn back:
    //   r2 = 2;  r1 = 0 + 0.9 * 2 = 1.8;  r0 = 1 + 0.9 * 1.8 = 2.62.
    let rig = Rig::start(&[], &[]).await;
    let (sid, key) = rig.session("discount").await;
    for (i, reward) in [1.0, 0.0, 2.0].into_iter().enumerate() {
        let r = rig.chat(&key, &format!("turn {i}"), 2).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = rig
            .as_session(&key, "/rl/set_reward", json!({"reward": reward}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    rig.as_session(&key, "/rl/end_session", json!({})).await;
    let export = rig.export(&sid, 0.9).await;
    assert_eq!(export.status, 200, "{}", export.text);
    let rewards: Vec<f64> = export.json["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reward"].as_f64().unwrap())
        .collect();
    let want = [2.62, 1.8, 2.0];
    assert_eq!(rewards.len(), 3);
    for (got, want) in rewards.iter().zip(want) {
        assert!((got - want).abs() < 1e-9, "got {rewards:?}, want {want:?}");
    }
}

#[tokio::test]
async fn export_after_end_returns_and_forgets_the_session() {
    let rig = Rig::start(&[], &[]).await;
    let (sid, key) = rig.session("forget").await;
    assert_eq!(rig.chat(&key, "hello", 2).await.status, 200);
    rig.as_session(&key, "/rl/end_session", json!({})).await;
    let export = rig.export(&sid, 1.0).await;
    assert_eq!(export.status, 200, "{}", export.text);
    assert_eq!(export.json["turns"].as_array().unwrap().len(), 1);

    let again = rig.export(&sid, 1.0).await;
    assert_error(&again, 404);
    // The session's key died with it.
    assert_error(&rig.chat(&key, "hello", 2).await, 401);
    let health = rig.http.get(&rig.url("/health")).await;
    assert_eq!(health.json["sessions"], 0);
}

#[tokio::test]
async fn export_before_end_waits_until_the_session_ends() {
    let rig = Rig::start(&[], &[]).await;
    let (sid, key) = rig.session("wait").await;
    assert_eq!(rig.chat(&key, "first", 2).await.status, 200);

    let http = rig.http.clone();
    let url = rig.url("/export_trajectories");
    let export = tokio::spawn(async move {
        http.post(
            &url,
            Some(fixture::ADMIN),
            &json!({"session_id": sid, "discount": 1.0, "timeout_secs": 60}),
        )
        .await
    });
    // Order of events: the export is waiting inside the proxy...
    wait_until(
        "the export to be waiting",
        Duration::from_secs(20),
        || async {
            let h = rig.http.get(&rig.url("/health")).await;
            (h.json["exports_waiting"] == 1).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(!export.is_finished());
    // ...then the agent plays another turn and ends the session...
    assert_eq!(rig.chat(&key, "second", 2).await.status, 200);
    let r = rig
        .as_session(&key, "/rl/set_reward", json!({"reward": 3.0}))
        .await;
    assert_eq!(r.status, 200);
    rig.as_session(&key, "/rl/end_session", json!({})).await;
    // ...and the export returns with everything, including the turn played while it waited.
    let export = tokio::time::timeout(Duration::from_secs(30), export)
        .await
        .expect("export returns once the session ended")
        .unwrap();
    assert_eq!(export.status, 200, "{}", export.text);
    let turns = export.json["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1]["messages"][0]["content"], "second");
    assert_eq!(turns[1]["raw_reward"], 3.0);
}

#[tokio::test]
async fn idle_sessions_expire_and_their_export_says_so() {
    let rig = Rig::start(&[], &["--session-idle-secs", "0.3"]).await;
    let (sid, key) = rig.session("idle").await;
    assert_eq!(rig.chat(&key, "only turn", 2).await.status, 200);
    // No end_session: the proxy ends the session when it idles out, which releases the export.
    let export = rig.export(&sid, 1.0).await;
    assert_eq!(export.status, 200, "{}", export.text);
    assert_eq!(export.json["end_reason"], "idle_timeout");
    assert_eq!(export.json["turns"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_streamed_turn_is_recorded_like_a_non_streamed_one() {
    let rig = Rig::start(&["--seed", "5"], &[]).await;
    let (sid, key) = rig.session("stream-vs-whole").await;
    let body = |stream: bool| {
        json!({"model": "policy", "messages": [{"role": "user", "content": "same prompt"}],
               "max_tokens": 6, "stream": stream})
    };
    let whole = rig
        .as_session(&key, "/v1/chat/completions", body(false))
        .await;
    assert_eq!(whole.status, 200);
    let streamed = rig
        .as_session(&key, "/v1/chat/completions", body(true))
        .await;
    assert_eq!(streamed.status, 200);
    assert!(
        streamed.text.trim_end().ends_with("data: [DONE]"),
        "{}",
        streamed.text
    );
    assert!(
        !streamed.text.contains("token_ids"),
        "added fields are stripped from chunks"
    );
    rig.as_session(&key, "/rl/end_session", json!({})).await;
    let export = rig.export(&sid, 1.0).await;
    let turns = export.json["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    for field in [
        "prompt_token_ids",
        "output_token_ids",
        "output_logprobs",
        "response",
    ] {
        assert_eq!(turns[0][field], turns[1][field], "{field}");
    }
    assert_eq!(ids(&turns[1]["output_token_ids"]).len(), 6);
}
