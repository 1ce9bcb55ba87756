//! The HTTP launcher actor through the scheduler: HttpService workers started, forwarded to,
//! failing, restarting and stopped, against real child processes on loopback.

use fleet_actors::rpc_server::ControlOk;
use fleet_actors::{
    FleetError, HttpCall, HttpServiceSpec, Job, RestartPolicy, SchedulingSpec, WorkerId, WorkerKind,
};
use fleet_runtime::Cluster;
use fleet_tests::{pid_alive, wait_until};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEST_SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn test_server() -> HttpServiceSpec {
    HttpServiceSpec::new([TEST_SERVER, "--port", "{port}"]).stop_grace(Duration::from_secs(2))
}

fn service(spec: HttpServiceSpec) -> WorkerKind {
    WorkerKind::HttpService(spec)
}

/// A cluster whose port range no other test in this process uses (tests run in parallel, and
/// two clusters' allocators do not know about each other's reservations).
async fn cluster(slot: u16) -> Cluster {
    let lo = 24000 + slot * 100;
    Cluster::local()
        .gpus([0, 1])
        .port_range(lo, lo + 99)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_service_is_started_probed_forwarded_to_and_stopped() {
    let c = cluster(1).await;
    let s = c.scheduler();
    let ws = s
        .create_workers(
            Job::new("svc", 2)
                .kind(service(test_server()))
                .spec(SchedulingSpec::default().ports(1)),
        )
        .await
        .unwrap();
    let ready = s.get_workers("svc", Duration::from_secs(10)).await.unwrap();
    assert_eq!(ready.len(), 2);
    assert_ne!(ws[0].ports, ws[1].ports);

    let r = s
        .http(
            &WorkerId::new("svc", 1),
            HttpCall::post_json("/echo", &serde_json::json!({"x": 1})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let echo: serde_json::Value = r.json().unwrap();
    assert_eq!(echo["body"], "{\"x\":1}");
    // Any status is an answer for a plain HTTP forward.
    let r = s
        .http(&WorkerId::new("svc", 0), HttpCall::get("/status/404"))
        .await
        .unwrap();
    assert_eq!(r.status, 404);

    let st = s
        .status(&WorkerId::new("svc", 0), Duration::from_secs(1))
        .await
        .unwrap();
    let pid = st.pid.expect("an http service reports its pid");
    assert!(pid_alive(pid));
    // The log file holds the child's output.
    let log = ws[0].log_path.clone().expect("a log path");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening on"), "{log}: {text}");

    s.delete_workers(Some("svc"), false).await.unwrap();
    wait_until("the child to exit", Duration::from_secs(5), || async move {
        (!pid_alive(pid)).then_some(())
    })
    .await
    .unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_binary_fails_create_workers_with_the_os_error() {
    let c = cluster(2).await;
    let s = c.scheduler();
    let e = s
        .create_workers(Job::new("bad", 1).kind(service(HttpServiceSpec::new([
            "/nonexistent/inference-server",
            "--port",
            "{port}",
        ]))))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, FleetError::WorkerFailed { .. }), "{e}");
    assert!(
        text.contains("/nonexistent/inference-server") && text.contains("No such file"),
        "{text}"
    );
    // Nothing was left behind: the role does not exist and its port is free again.
    assert!(s.roles().await.is_empty());
    assert_eq!(c.node_info().await.unwrap().ports_held, 0);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_exits_before_ready_fails_get_workers_with_its_code_and_output() {
    let c = cluster(3).await;
    let s = c.scheduler();
    let cmd = HttpServiceSpec::new([
        "sh",
        "-c",
        "echo loading weights; echo CUDA error: out of memory >&2; exit 7",
    ]);
    s.create_workers(
        Job::new("gen", 1)
            .kind(service(cmd))
            .spec(SchedulingSpec::default().gpu(1)),
    )
    .await
    .unwrap();
    let e = s
        .get_workers("gen", Duration::from_secs(10))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, FleetError::WorkerFailed { .. }), "{e}");
    assert!(
        text.contains("code 7") && text.contains("out of memory"),
        "{text}"
    );
    // A worker that failed for good gives its GPU back at once; the role stays, failed, until
    // it is deleted.
    wait_until(
        "the failure to reach the scheduler and the GPU to be free",
        Duration::from_secs(5),
        || {
            let c = &c;
            async move {
                let failed = matches!(
                    c.scheduler().workers("gen").await.ok()?[0].state,
                    fleet_runtime::WorkerState::Failed(_)
                );
                (failed && c.node_info().await.ok()?.free_gpus.len() == 2).then_some(())
            }
        },
    )
    .await
    .unwrap();
    s.create_workers(Job::new("next", 1).spec(SchedulingSpec::default().gpu(2)))
        .await
        .unwrap();
    assert!(matches!(
        s.get_workers("gen", Duration::from_millis(100)).await,
        Err(FleetError::WorkerFailed { .. })
    ));
    s.delete_workers(Some("gen"), false).await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_destroy_are_answered_while_forwards_are_backing_off() {
    let c = cluster(4).await;
    let s = c.scheduler().clone();
    s.create_workers(Job::new("svc", 1).kind(service(test_server())))
        .await
        .unwrap();
    s.get_workers("svc", Duration::from_secs(10)).await.unwrap();
    let w = WorkerId::new("svc", 0);
    let pid = s
        .status(&w, Duration::from_secs(1))
        .await
        .unwrap()
        .pid
        .unwrap();

    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    // Idempotent forwards to a 429 that asks for 5 s between attempts: they back off (an async
    // sleep in their tasks) for up to 30 s.
    let forwards: Vec<_> = (0..20)
        .map(|_| {
            let (s, w, events) = (s.clone(), w.clone(), events.clone());
            tokio::spawn(async move {
                let call =
                    HttpCall::get("/status/429?retry_after=5").timeout(Duration::from_secs(30));
                let r = s.http(&w, call).await;
                events.lock().unwrap().push("forward done".into());
                r
            })
        })
        .collect();
    // Wait until the child has seen retries, i.e. forwards are backing off.
    wait_until(
        "every forward to reach the child once",
        Duration::from_secs(10),
        || {
            let (s, w) = (s.clone(), w.clone());
            async move {
                let r = s
                    .http(&w, HttpCall::get("/count?path=/status/429"))
                    .await
                    .ok()?;
                (r.text().trim().parse::<u64>().ok()? >= 20).then_some(())
            }
        },
    )
    .await
    .unwrap();
    s.ping(&w, Duration::from_secs(1)).await.unwrap();
    events.lock().unwrap().push("ping answered".into());
    let st = s.status(&w, Duration::from_secs(1)).await.unwrap();
    assert!(st.queued > 0, "forwards are in flight: {st:?}");
    events.lock().unwrap().push("status answered".into());
    s.delete_workers(Some("svc"), false).await.unwrap();
    events.lock().unwrap().push("destroy answered".into());

    // Destroy did not wait for the retrying forwards (which would have gone on for 30 s): it
    // cut them short, and each says the worker was destroyed under it.
    for f in forwards {
        let r = tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .unwrap()
            .unwrap();
        match r {
            Err(FleetError::Unavailable { ref detail, .. }) if detail.contains("destroyed") => {}
            other => panic!("a forward was not cut short by destroy: {other:?}"),
        }
    }
    let ev = events.lock().unwrap().clone();
    assert_eq!(&ev[..2], &["ping answered", "status answered"], "{ev:?}");
    assert!(ev.contains(&"destroy answered".to_string()));
    assert!(!pid_alive(pid));
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_during_a_call_fails_it_at_once_with_its_last_lines() {
    let c = cluster(5).await;
    let s = c.scheduler().clone();
    s.create_workers(Job::new("svc", 1).kind(service(test_server())))
        .await
        .unwrap();
    s.get_workers("svc", Duration::from_secs(10)).await.unwrap();
    let w = WorkerId::new("svc", 0);
    let slow = {
        let (s, w) = (s.clone(), w.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = s
                .http(
                    &w,
                    HttpCall::post_json("/delay/20000", &serde_json::json!({}))
                        .timeout(Duration::from_secs(30)),
                )
                .await;
            (r, t.elapsed())
        })
    };
    wait_until(
        "the slow call to reach the child",
        Duration::from_secs(5),
        || {
            let (s, w) = (s.clone(), w.clone());
            async move {
                let r = s
                    .http(&w, HttpCall::get("/count?path=/delay/20000"))
                    .await
                    .ok()?;
                (r.text().trim() == "1").then_some(())
            }
        },
    )
    .await
    .unwrap();
    let _ = s
        .http(
            &w,
            HttpCall::post_json("/crash", &serde_json::json!({})).timeout(Duration::from_secs(5)),
        )
        .await;
    let (r, _elapsed) = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap();
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, FleetError::WorkerFailed { .. }), "{e}");
    assert!(
        text.contains("crash"),
        "the child's last lines are in the error: {text}"
    );
    // The worker is reported failed: calls and get_workers say so.
    let e = s.http(&w, HttpCall::get("/health")).await.unwrap_err();
    assert!(matches!(e, FleetError::WorkerFailed { .. }), "{e}");
    wait_until(
        "the failure to reach the scheduler",
        Duration::from_secs(5),
        || {
            let s = s.clone();
            async move {
                matches!(
                    s.get_workers("svc", Duration::from_millis(200)).await,
                    Err(FleetError::WorkerFailed { .. })
                )
                .then_some(())
            }
        },
    )
    .await
    .unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_service_is_restarted_by_its_policy_and_serves_again() {
    let c = cluster(6).await;
    let s = c.scheduler().clone();
    let spec = test_server().restart(RestartPolicy::OnFailure {
        max_restarts: 2,
        backoff_ms: 50,
    });
    s.create_workers(Job::new("svc", 1).kind(service(spec)))
        .await
        .unwrap();
    s.get_workers("svc", Duration::from_secs(10)).await.unwrap();
    let w = WorkerId::new("svc", 0);
    let pid1 = s
        .status(&w, Duration::from_secs(1))
        .await
        .unwrap()
        .pid
        .unwrap();
    let _ = s
        .http(
            &w,
            HttpCall::post_json("/crash", &serde_json::json!({})).timeout(Duration::from_secs(5)),
        )
        .await;
    let pid2 = wait_until(
        "a restarted process to serve",
        Duration::from_secs(10),
        || {
            let (s, w) = (s.clone(), w.clone());
            async move {
                let st = s.status(&w, Duration::from_secs(1)).await.ok()?;
                let r = s.http(&w, HttpCall::get("/health")).await.ok()?;
                (r.status == 200 && st.pid != Some(pid1)).then_some(st.pid?)
            }
        },
    )
    .await
    .unwrap();
    assert_ne!(pid1, pid2);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_workers_puts_an_http_service_beside_each_target_with_its_devices_and_no_gpu() {
    let c = cluster(7).await;
    let s = c.scheduler().clone();
    s.create_workers(Job::new("actor", 2).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap();
    // The child prints its device variable, then serves.
    let cmd = HttpServiceSpec::new([
        "sh",
        "-c",
        &format!("echo devices=$CUDA_VISIBLE_DEVICES worker=$FLEET_WORKER; exec {TEST_SERVER} --port {{port}}"),
    ]);
    let forks = s
        .fork_workers(
            "proxy",
            "actor",
            service(cmd),
            SchedulingSpec::default().ports(2),
        )
        .await
        .unwrap();
    s.get_workers("proxy", Duration::from_secs(10))
        .await
        .unwrap();
    let info = c.node_info().await.unwrap();
    assert_eq!(
        info.free_gpus.len(),
        0,
        "the targets hold both GPUs; the forks took none"
    );
    let mut ports = std::collections::BTreeSet::new();
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(f.node, *c.node_id());
        assert!(f.gpus.is_empty());
        for p in &f.ports {
            assert!(ports.insert(*p), "port {p} given twice");
        }
        let log = std::fs::read_to_string(f.log_path.as_ref().unwrap()).unwrap();
        assert!(
            log.contains(&format!("devices={i} worker=proxy/{i}")),
            "{log}"
        );
    }
    // set_env on a plain service applies at the next start, and says so.
    let mut env = BTreeMap::new();
    env.insert("X".to_string(), "1".to_string());
    let r = s
        .control(
            &WorkerId::new("proxy", 0),
            fleet_actors::rpc_server::Control::SetEnv(env),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(
        matches!(r, ControlOk::Deferred(ref m) if m.contains("next starts")),
        "{r:?}"
    );
    // Forks go before their targets.
    s.delete_workers(Some("actor"), false).await.unwrap();
    assert!(s.roles().await.is_empty());
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_child_outlives_its_deleted_workers() {
    let c = Cluster::local()
        .port_range(25000, 25999)
        .start()
        .await
        .unwrap();
    let s = c.scheduler().clone();
    // 20 children, each a shell that also forks a grandchild into its group.
    let cmd = HttpServiceSpec::new([
        "sh",
        "-c",
        &format!("sleep 1000 & exec {TEST_SERVER} --port {{port}}"),
    ]);
    s.create_workers(Job::new("many", 20).kind(service(cmd)))
        .await
        .unwrap();
    s.get_workers("many", Duration::from_secs(20))
        .await
        .unwrap();
    let mut pids = Vec::new();
    for i in 0..20 {
        pids.push(
            s.status(&WorkerId::new("many", i), Duration::from_secs(1))
                .await
                .unwrap()
                .pid
                .unwrap(),
        );
    }
    assert!(pids.iter().all(|p| pid_alive(*p)));
    s.delete_workers(None, false).await.unwrap();
    wait_until("every child to be gone", Duration::from_secs(10), || {
        let pids = pids.clone();
        async move { pids.iter().all(|p| !pid_alive(*p)).then_some(()) }
    })
    .await
    .unwrap();
    c.shutdown().await.unwrap();
}

/// A forward waits for one of the service's slots (`max_in_flight`) only until its own
/// deadline, and then fails as a `Timeout` that says it was never sent; a caller that gives up
/// on a forward with a request id cancels it, so it is never sent either, even though its own
/// deadline had long to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_wait_for_a_slot_only_until_their_deadline_and_a_given_up_one_is_never_sent() {
    let c = cluster(9).await;
    let s = c.scheduler().clone();
    s.create_workers(Job::new("svc", 1).kind(service(test_server().max_in_flight(1))))
        .await
        .unwrap();
    s.get_workers("svc", Duration::from_secs(10)).await.unwrap();
    let w = WorkerId::new("svc", 0);
    // Holds the only slot for 2 s.
    let busy = {
        let (s, w) = (s.clone(), w.clone());
        tokio::spawn(async move {
            s.http(
                &w,
                HttpCall::get("/delay/2000").timeout(Duration::from_secs(30)),
            )
            .await
        })
    };
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        let (s, w) = (s.clone(), w.clone());
        async move {
            let st = s.status(&w, Duration::from_secs(1)).await.ok()?;
            (st.queued >= 1).then_some(())
        }
    })
    .await
    .unwrap();
    let e = s
        .http(
            &w,
            HttpCall::get("/delay/10").timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("never sent"), "{e}");
    // A caller with a 30 s deadline gives up after 200 ms.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        s.http(
            &w,
            HttpCall::post_json("/delay/11", &serde_json::json!({}))
                .timeout(Duration::from_secs(30))
                .request_id("given-up-2"),
        ),
    )
    .await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    assert_eq!(busy.await.unwrap().unwrap().status, 200);
    // Give a forward that was not cancelled the time to be sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for path in ["/delay/10", "/delay/11"] {
        let n = s
            .http(&w, HttpCall::get(format!("/count?path={path}")))
            .await
            .unwrap()
            .text();
        assert_eq!(n.trim(), "0", "{path} reached the child");
    }
    c.shutdown().await.unwrap();
}
