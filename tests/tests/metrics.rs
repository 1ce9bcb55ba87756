//! Prometheus metrics: every node (the head too) serves `GET /metrics` on its HTTP port
//! (the object store's), the text parses as Prometheus exposition format, and the counters
//! move while work runs, on the head (calls by kind and outcome, latency by worker kind) and on
//! a real node process (its engine queue, request-id dedupe hits).

use fleet_actors::{CallOptions, FleetError, Job};
use fleet_runtime::StatusReport;
use fleet_tests::scrape::{scrape, value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_prometheus_metrics_that_move_while_calls_run() {
    let cluster = fleet_tests::TestCluster::builder()
        .nodes(1)
        .start()
        .await
        .unwrap();
    // The head here is this test process, placing no workers (so it has no store port): it
    // serves its metrics on a port of its own, like `fleet head --metrics ADDR`.
    let (_served, head_addr) = fleet_runtime::metrics::serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let head_url = format!("http://{head_addr}");
    let status: StatusReport = cluster.head().status().await.unwrap();
    let node_url = status
        .nodes
        .iter()
        .find_map(|n| n.store.clone())
        .expect("the node runs a store, whose port serves /metrics");
    let s = cluster.scheduler().clone();
    s.create_workers(Job::new("m", 1)).await.unwrap();
    let w = s.get_workers("m", Duration::from_secs(10)).await.unwrap()[0]
        .id
        .clone();
    s.create_engine(&w, "c", "counter", &()).await.unwrap();
    let before = scrape(&head_url).await;
    let node_before = scrape(&node_url).await;
    let opts = CallOptions::default().request_id("metrics-1");
    for _ in 0..5 {
        let _: u64 = s.call(&w, "c", "incr", &1u64, &opts).await.unwrap();
    }
    let e = s
        .call::<_, u64>(&w, "c", "no_such_method", &(), &CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::MethodNotFound { .. }), "{e}");
    let after = scrape(&head_url).await;
    let node_after = scrape(&node_url).await;

    let ok = [("kind", "engine"), ("outcome", "ok")];
    assert!(
        value(&after, "fleet_calls_total", &ok) >= value(&before, "fleet_calls_total", &ok) + 5.0
    );
    let failed = [("kind", "engine"), ("outcome", "method_not_found")];
    assert!(
        value(&after, "fleet_calls_total", &failed)
            >= value(&before, "fleet_calls_total", &failed) + 1.0
    );
    assert!(
        after
            .samples
            .iter()
            .any(|x| x.metric == "fleet_call_seconds" && x.labels.get("worker_kind").is_some()),
        "latency is by worker kind"
    );
    // The head counts its nodes by state (set at its next failure-detector sweep).
    let mut alive = 0.0;
    for _ in 0..50 {
        alive = value(
            &scrape(&head_url).await,
            "fleet_nodes",
            &[("state", "alive")],
        );
        if alive >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(alive >= 1.0, "fleet_nodes{{state=\"alive\"}} = {alive}");
    // On the node process: four of the five calls were answered from the request-id record.
    assert!(
        value(&node_after, "fleet_dedupe_hits_total", &[])
            >= value(&node_before, "fleet_dedupe_hits_total", &[]) + 4.0
    );
    assert!(node_after
        .samples
        .iter()
        .any(|x| x.metric == "fleet_engine_queue_depth"));
}

/// A real `fleet proxy` process serves its own metrics, with the latency of each route by
/// status class (its backend here is unreachable, so `/health` answers 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_its_route_latency_as_prometheus_metrics() {
    let port = fleet_tests::free_port();
    let mut cmd = std::process::Command::new(fleet_tests::fleet_bin());
    cmd.args([
        "proxy",
        "--port",
        &port.to_string(),
        "--backend",
        "http://127.0.0.1:9",
    ]);
    let _proxy = fleet_tests::ChildGuard::spawn("fleet proxy", &mut cmd).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "fleet proxy did not listen on {port} within 10 s");
    for _ in 0..2 {
        let u = format!("127.0.0.1:{port}");
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&u).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                s,
                "GET /health HTTP/1.1\r\nHost: {u}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
        })
        .await
        .unwrap();
    }
    let m = scrape(&url).await;
    let names: Vec<&str> = m.samples.iter().map(|x| x.metric.as_str()).collect();
    let health = value(
        &m,
        "fleet_proxy_route_seconds",
        &[("route", "/health"), ("status", "5xx")],
    );
    assert!(health >= 2.0, "{health} /health answers counted; {names:?}");
}
