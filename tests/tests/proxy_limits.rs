//! The proxy's limits over real sockets, each with the fault it is about: a large export (peak
//! memory of the proxy process, VmHWM), a streaming client that stops reading, a session past
//! its byte limit, and huge numbers in admin requests.

mod proxy_fixture;

use std::time::Duration;

use fleet_tests::wait_until;
use proxy_fixture::{assert_error, Rig, ADMIN};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// A `VmHWM`/`VmRSS`-style line of /proc/PID/status, in bytes.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("the field is there")
        * 1024
}

/// An export of tens of megabytes: the proxy's peak resident memory over its whole life
/// (recording included) stays under twice the export's size. Building the trajectory, then a
/// JSON value of it, then its bytes used to peak at 10-13 times the size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_peaks_under_twice_its_size_in_the_proxy() {
    let rig = Rig::start(&[], &["--max-turns", "512"]).await;
    let (sid, key) = rig.session("big").await;
    // 8 agents' worth of concurrent requests in one session, 4096 tokens each.
    let turns = 192;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let http = rig.http.clone();
        let url = rig.url("/v1/chat/completions");
        let key = key.clone();
        tasks.spawn(async move {
            for i in 0..turns / 8 {
                let body = json!({"model": "policy", "max_tokens": 4096,
                    "messages": [{"role": "user", "content": format!("turn {w}-{i}")}]});
                let r = http.post(&url, Some(&key), &body).await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let before = status_kib(rig.proxy.pid(), "VmHWM:");
    let r = rig
        .admin(
            "/export_trajectories",
            json!({"session_id": sid, "end": true, "timeout_secs": 30}),
        )
        .await;
    assert_eq!(r.status, 200);
    let size = r.text.len() as u64;
    assert_eq!(r.json["turns"].as_array().map(Vec::len), Some(turns));
    let peak = status_kib(rig.proxy.pid(), "VmHWM:");
    eprintln!(
        "export {:.1} MB; proxy peak RSS {:.1} MB before the export, {:.1} MB after ({:.2}x the export)",
        size as f64 / 1e6,
        before as f64 / 1e6,
        peak as f64 / 1e6,
        peak as f64 / size as f64
    );
    assert!(size > 20_000_000, "a large export: {size} bytes");
    assert!(
        peak < 2 * size,
        "peak RSS {peak} bytes is not under twice the export's {size} bytes"
    );
}

/// A streaming client that stops reading (socket open, nothing read) is disconnected after the
/// write stall timeout; its turn is recorded as cancelled (incomplete), so the session ends
/// and exports instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streaming_client_is_disconnected_and_its_turn_recorded_incomplete() {
    let rig = Rig::start(
        &[],
        &["--write-stall-secs", "1", "--max-body-bytes", "16777216"],
    )
    .await;
    let (sid, key) = rig.session("stall").await;
    // A raw client with a tiny receive buffer. The stream's first event carries the prompt's
    // token ids (the client asked for them): with a 600,000-word prompt that is megabytes,
    // more than the kernel's socket buffers hold, so the proxy's writes block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(rig.addr).await.unwrap();
    let body = json!({"model": "policy", "max_tokens": 4096, "stream": true,
        "return_token_ids": true,
        "messages": [{"role": "user", "content": "w ".repeat(600_000)}]})
    .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    // Read nothing. The turn must be recorded, and the session exportable, within a deadline
    // far above the 1 s stall timeout.
    let stats = wait_until("the stalled turn recorded", Duration::from_secs(30), || {
        let rig = &rig;
        async move {
            let r = rig.http.get(&rig.url("/health")).await;
            (r.json["turns_incomplete"].as_u64() >= Some(1)).then_some(r.json)
        }
    })
    .await
    .unwrap();
    assert_eq!(stats["turns_incomplete"], 1, "{stats}");
    let r = rig
        .admin(
            "/export_trajectories",
            json!({"session_id": sid, "end": true, "timeout_secs": 10}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let turn = &r.json["turns"][0];
    assert_eq!(turn["status"], "cancelled", "{turn}");
    assert_eq!(turn["complete"], false);
    drop(conn);
    // The proxy still serves.
    let (_, key2) = rig.session("after").await;
    assert_eq!(rig.chat(&key2, "hi", 4).await.status, 200);
}

/// A session past its byte limit gets 413 naming the limit and the flag; other sessions and
/// the session's export are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_byte_limit_is_refused_413_naming_the_limit() {
    let rig = Rig::start(&[], &["--max-session-bytes", "20000"]).await;
    let (sid, key) = rig.session("bytes").await;
    let mut refused = None;
    for i in 0..100 {
        let r = rig.chat(&key, &format!("turn {i}"), 256).await;
        if r.status != 200 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("the limit is reached within 100 turns");
    assert!(i > 0, "the first turn fits");
    let m = assert_error(&r, 413);
    assert!(
        m.contains("20000") && m.contains("--max-session-bytes"),
        "names the limit: {m}"
    );
    assert_eq!(
        r.json["error"]["type"], "session_byte_limit_reached",
        "{}",
        r.text
    );
    let (_, other) = rig.session("other").await;
    assert_eq!(rig.chat(&other, "hi", 4).await.status, 200);
    let e = rig
        .admin(
            "/export_trajectories",
            json!({"session_id": sid, "end": true, "timeout_secs": 10}),
        )
        .await;
    assert_eq!(e.status, 200);
    assert_eq!(e.json["turns"].as_array().map(Vec::len), Some(i));
}

/// Numbers past what the proxy can hold are 400s naming the field, never a panic or a wrapped
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_in_admin_requests_are_400_and_the_proxy_keeps_serving() {
    let rig = Rig::start(&[], &[]).await;
    let (sid, _key) = rig.session("n").await;
    for t in ["1e300", "-1", "1e19"] {
        let body = format!(r#"{{"session_id": "{sid}", "timeout_secs": {t}}}"#);
        let r = rig
            .http
            .call(
                hyper::Method::POST,
                &rig.url("/export_trajectories"),
                Some(ADMIN),
                body.into(),
            )
            .await;
        let m = assert_error(&r, 400);
        assert!(m.contains("timeout_secs"), "{m}");
    }
    for v in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "1e300",
    ] {
        let r = rig
            .http
            .call(
                hyper::Method::POST,
                &rig.url("/set_version"),
                Some(ADMIN),
                format!(r#"{{"version": {v}}}"#).into(),
            )
            .await;
        assert_error(&r, 400);
    }
    let r = rig
        .admin("/set_version", json!({"version": i64::MAX}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        rig.http.get(&rig.url("/health")).await.json["version"],
        i64::MAX
    );
}
