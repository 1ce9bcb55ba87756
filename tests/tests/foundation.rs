//! The embedded single-node runtime: workers, engines, calls, typed errors, request-id
//! deduplication, the port allocator and teardown, through the public API a program uses.

use fleet_actors::{CallOptions, FleetError, Job, SchedulingSpec, WorkerId};
use fleet_runtime::{Cluster, WorkerState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn opts() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_roles_of_several_workers_are_created_called_and_deleted() {
    let cluster = Cluster::local().cpus(16.0).start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("actor", 3).spec(SchedulingSpec::default().cpu(1.0)))
        .await
        .unwrap();
    s.create_workers(Job::new("ref", 2)).await.unwrap();
    let actors = s
        .get_workers("actor", Duration::from_secs(5))
        .await
        .unwrap();
    let refs = s.get_workers("ref", Duration::from_secs(5)).await.unwrap();
    assert_eq!(actors.len(), 3);
    assert_eq!(refs.len(), 2);
    assert!(actors.iter().all(|w| w.state == WorkerState::Running));

    for w in actors.iter().chain(&refs) {
        let e = s
            .create_engine(&w.id, "main", "counter", &())
            .await
            .unwrap();
        let total: u64 = e
            .call("incr", &(w.id.index as u64 + 1), &opts())
            .await
            .unwrap();
        assert_eq!(total, w.id.index as u64 + 1, "{}", w.id);
    }
    // Engines are per worker: actor/2 has its own counter.
    let total: u64 = s
        .call(&WorkerId::new("actor", 2), "main", "incr", &10u64, &opts())
        .await
        .unwrap();
    assert_eq!(total, 13);

    let info = cluster.node_info().await.unwrap();
    assert_eq!(info.workers.len(), 5);
    assert_eq!(info.free_cpu_millis, 16000 - 3000);

    s.delete_workers(Some("actor"), true).await.unwrap();
    assert!(matches!(
        s.get_workers("actor", Duration::from_secs(1)).await,
        Err(FleetError::RoleNotFound { .. })
    ));
    let err = s
        .call::<_, u64>(&WorkerId::new("actor", 0), "main", "get", &(), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::WorkerNotFound { .. }), "{err}");
    s.delete_workers(None, false).await.unwrap();
    let info = cluster.node_info().await.unwrap();
    assert!(info.workers.is_empty());
    assert_eq!(info.free_cpu_millis, 16000);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_misuse_gets_its_typed_error() {
    let cluster = Cluster::local().gpus([0, 1]).start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 2)).await.unwrap();
    let w0 = WorkerId::new("w", 0);
    s.create_engine(&w0, "c", "counter", &()).await.unwrap();

    let e = s
        .call::<_, u64>(&WorkerId::new("w", 7), "c", "get", &(), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::WorkerNotFound { .. }), "{e}");
    assert!(
        e.to_string().contains("w/7") && e.to_string().contains("indices 0..2"),
        "{e}"
    );

    let e = s
        .call::<_, u64>(&WorkerId::new("nope", 0), "c", "get", &(), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::WorkerNotFound { .. }), "{e}");

    let e = s
        .call::<_, u64>(&w0, "missing", "get", &(), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::EngineNotFound { ref known, .. } if known == "c"),
        "{e}"
    );

    let e = s
        .call::<_, u64>(&w0, "c", "frobnicate", &(), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::MethodNotFound { ref method, .. } if method == "frobnicate"),
        "{e}"
    );

    let e = s.create_engine(&w0, "c", "counter", &()).await.unwrap_err();
    assert!(matches!(e, FleetError::EngineExists { .. }), "{e}");

    let e = s
        .create_engine(&w0, "x", "no-such-type", &())
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::EngineTypeUnknown { .. }), "{e}");
    assert!(
        e.to_string().contains("counter"),
        "lists the registered types: {e}"
    );

    // `incr` takes a u64; a string does not decode.
    let e = s
        .call::<_, u64>(&w0, "c", "incr", &"not a number", &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::BadRequest { .. }), "{e}");

    let e = s
        .create_workers(Job::new("big", 2).spec(SchedulingSpec::default().gpu(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::InsufficientResources { ref resource, .. } if resource == "gpu"),
        "{e}"
    );
    // All or nothing: the first replica that did fit was not left holding the GPUs.
    s.create_workers(Job::new("fits", 1).spec(SchedulingSpec::default().gpu(2)))
        .await
        .unwrap();

    let e = s.create_workers(Job::new("zero", 0)).await.unwrap_err();
    assert!(matches!(e, FleetError::BadRequest { .. }), "{e}");
    let e = s.create_workers(Job::new("w", 1)).await.unwrap_err();
    assert!(matches!(e, FleetError::RoleExists { .. }), "{e}");
    let e = s.create_workers(Job::new("bad role", 1)).await.unwrap_err();
    assert!(matches!(e, FleetError::BadRequest { .. }), "{e}");

    // The engine failing is reported as such, and the worker keeps serving.
    s.create_engine(&w0, "s", "sleep", &()).await.unwrap();
    let e = s
        .call::<_, ()>(&w0, "s", "fail", &"disk full", &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::EngineFailed { ref message, .. } if message == "disk full"),
        "{e}"
    );
    let e = s
        .call::<_, ()>(&w0, "s", "panic", &"boom", &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::EngineFailed { ref message, .. } if message.contains("boom")),
        "{e}"
    );
    let n: u64 = s.call(&w0, "c", "incr", &1u64, &opts()).await.unwrap();
    assert_eq!(n, 1);

    // A call that outlives its deadline is a timeout naming the worker and method.
    let e = s
        .call::<_, u64>(
            &w0,
            "s",
            "sleep",
            &500u64,
            &opts().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::Timeout { .. }) && e.to_string().contains("s.sleep"),
        "{e}"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_status_are_answered_while_a_3_second_engine_call_runs() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler().clone();
    s.create_workers(Job::new("gpu", 1)).await.unwrap();
    let w = WorkerId::new("gpu", 0);
    s.create_engine(&w, "e", "sleep", &()).await.unwrap();

    let events = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let long = {
        let (s, w, events) = (s.clone(), w.clone(), events.clone());
        tokio::spawn(async move {
            let r: Result<u64, _> = s.call(&w, "e", "sleep", &3000u64, &opts()).await;
            events.lock().unwrap().push("long call done");
            r
        })
    };
    // Wait (with a deadline) until the engine thread is inside the call.
    fleet_tests::wait_until("the sleep call to start", Duration::from_secs(5), || {
        let (s, w) = (s.clone(), w.clone());
        async move {
            let st = s.status(&w, Duration::from_secs(1)).await.ok()?;
            st.in_flight.filter(|(m, _)| m == "e.sleep").map(|_| ())
        }
    })
    .await
    .unwrap();
    s.ping(&w, Duration::from_secs(1)).await.unwrap();
    events.lock().unwrap().push("ping answered");
    let st = s.status(&w, Duration::from_secs(1)).await.unwrap();
    events.lock().unwrap().push("status answered");
    assert_eq!(
        st.in_flight.as_ref().map(|(m, _)| m.as_str()),
        Some("e.sleep")
    );

    assert_eq!(long.await.unwrap().unwrap(), 3000);
    assert_eq!(
        *events.lock().unwrap(),
        vec!["ping answered", "status answered", "long call done"]
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_runs_the_method_once() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("trainer", 1)).await.unwrap();
    let w = WorkerId::new("trainer", 0);
    let e = s.create_engine(&w, "c", "counter", &()).await.unwrap();

    let o = opts().request_id("train-step-7");
    let first: u64 = e.call("incr", &5u64, &o).await.unwrap();
    let repeat: u64 = e.call("incr", &5u64, &o).await.unwrap();
    assert_eq!((first, repeat), (5, 5));
    let runs: u64 = e.call("runs", &(), &opts().idempotent(true)).await.unwrap();
    assert_eq!(runs, 1, "the repeat was answered from the record");

    // Concurrent repeats of a new id also run once.
    let o = opts().request_id("train-step-8");
    let rs = futures::future::join_all((0..8).map(|_| e.call::<_, u64>("incr", &1u64, &o))).await;
    assert!(rs.iter().all(|r| r.as_ref().unwrap() == &6));
    let runs: u64 = e.call("runs", &(), &opts().idempotent(true)).await.unwrap();
    assert_eq!(runs, 2);

    // Without an explicit id, each non-idempotent call is its own request.
    let _: u64 = e.call("incr", &1u64, &opts()).await.unwrap();
    let _: u64 = e.call("incr", &1u64, &opts()).await.unwrap();
    let runs: u64 = e.call("runs", &(), &opts().idempotent(true)).await.unwrap();
    assert_eq!(runs, 4);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_one_range_hand_out_no_duplicates_across_1000_concurrent_reservations() {
    // Two nodes (two agents, two allocators) in one process share one range: the mailbox of
    // each serializes only its own requests, so only the host-wide claims keep them apart.
    let (lo, hi) = (27000, 28199);
    let mut clusters = Vec::new();
    for name in ["left", "right"] {
        clusters.push(Arc::new(
            Cluster::local()
                .name(name)
                .port_range(lo, hi)
                .start()
                .await
                .unwrap(),
        ));
    }
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let c = clusters[i % 2].clone();
            tokio::spawn(async move { (i % 2, c.reserve_ports(1).await) })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut leases = Vec::new();
    for t in tasks {
        let (side, lease) = t.await.unwrap();
        let lease = lease.unwrap();
        for p in &lease.ports {
            assert!(seen.insert(*p), "port {p} handed out twice");
        }
        leases.push((side, lease.id));
    }
    assert_eq!(seen.len(), 1000);
    for c in &clusters {
        assert_eq!(c.node_info().await.unwrap().ports_held, 500);
    }
    for (side, id) in leases {
        clusters[side].release_ports(id);
    }
    for c in &clusters {
        fleet_tests::wait_until("ports to be released", Duration::from_secs(5), || {
            let c = c.clone();
            async move { (c.node_info().await.ok()?.ports_held == 0).then_some(()) }
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_workers_get_exclusive_ids_and_their_visible_devices() {
    let cluster = Cluster::local().gpus([0, 1, 2, 3]).start().await.unwrap();
    let s = cluster.scheduler();
    let ws = s
        .create_workers(Job::new("train", 2).spec(SchedulingSpec::default().gpu(2).ports(2)))
        .await
        .unwrap();
    assert_eq!(ws[0].gpus, vec![0, 1]);
    assert_eq!(ws[1].gpus, vec![2, 3]);
    assert_eq!(
        ws[0].env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("0,1")
    );
    assert_eq!(
        ws[1].env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("2,3")
    );
    assert_eq!(ws[0].ports.len(), 2);
    let all_ports: BTreeSet<u16> = ws.iter().flat_map(|w| w.ports.clone()).collect();
    assert_eq!(all_ports.len(), 4);

    // The engine sees the worker's env, not the node process's.
    let env: BTreeMap<String, String> = {
        let e = s
            .create_engine(&ws[1].id, "echo", "echo", &())
            .await
            .unwrap();
        e.call("env", &(), &opts()).await.unwrap()
    };
    assert_eq!(
        env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("2,3")
    );

    let e = s
        .create_workers(Job::new("more", 1).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("gpu") && e.to_string().contains("0 of 4 free"),
        "{e}"
    );

    // Released GPUs are reusable.
    s.delete_workers(Some("train"), false).await.unwrap();
    s.create_workers(Job::new("more", 1).spec(SchedulingSpec::default().gpu(4)))
        .await
        .unwrap();
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocation_without_fork_reuses_the_target_workers_and_fork_starts_new_ones_beside_them() {
    let cluster = Cluster::local().gpus([0, 1]).start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("actor", 2).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap();
    for i in 0..2 {
        s.create_engine(&WorkerId::new("actor", i), "c", "counter", &())
            .await
            .unwrap();
    }
    // `ref` is another name for actor's workers: same counter, no new GPUs.
    let refs = s
        .create_workers(Job::new("ref", 2).colocate("actor", false))
        .await
        .unwrap();
    assert_eq!(refs[1].alias_of, Some(WorkerId::new("actor", 1)));
    let _: u64 = s
        .call(&WorkerId::new("actor", 1), "c", "incr", &2u64, &opts())
        .await
        .unwrap();
    let n: u64 = s
        .call(&WorkerId::new("ref", 1), "c", "incr", &3u64, &opts())
        .await
        .unwrap();
    assert_eq!(n, 5);

    // Forks: same node, no GPU of their own, the target's visible devices.
    let forks = s
        .create_workers(Job::new("proxy", 2).colocate("actor", true))
        .await
        .unwrap();
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(f.node, *cluster.node_id());
        assert!(f.gpus.is_empty());
        assert_eq!(
            f.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
            Some(i.to_string().as_str())
        );
    }
    let e = s
        .create_workers(
            Job::new("greedy", 2)
                .colocate("actor", true)
                .spec(SchedulingSpec::default().gpu(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, FleetError::BadRequest { .. }) && e.to_string().contains("gpu = 0"),
        "{e}"
    );

    // Deleting the target takes its forks and aliases with it, dependents first.
    s.delete_workers(Some("actor"), false).await.unwrap();
    assert!(s.roles().await.is_empty());
    assert!(cluster.node_info().await.unwrap().workers.is_empty());
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_workers_twice_is_fine_and_set_env_reaches_engines() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("r", 2)).await.unwrap();
    let w = WorkerId::new("r", 1);
    let e = s.create_engine(&w, "echo", "echo", &()).await.unwrap();
    let mut env = BTreeMap::new();
    env.insert("SEED".to_string(), "42".to_string());
    s.set_worker_env("r", &env).await.unwrap();
    let seen: BTreeMap<String, String> = e.call("env", &(), &opts()).await.unwrap();
    assert_eq!(seen.get("SEED").map(String::as_str), Some("42"));
    assert!(
        std::env::var("SEED").is_err(),
        "the node process env is untouched"
    );
    let meta: BTreeMap<String, String> = e
        .call("meta", &(), &opts().meta("step", "3"))
        .await
        .unwrap();
    assert_eq!(
        meta.get("step").map(String::as_str),
        Some("3"),
        "rpc_meta is forwarded"
    );

    s.delete_workers(Some("r"), false).await.unwrap();
    s.delete_workers(Some("r"), false).await.unwrap();
    s.delete_workers(None, true).await.unwrap();
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_argument_is_refused_before_it_is_sent() {
    let cluster = Cluster::local().start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("r", 1)).await.unwrap();
    let w = WorkerId::new("r", 0);
    s.create_engine(&w, "echo", "echo", &()).await.unwrap();
    let big = vec![0u8; 9 * 1024 * 1024];
    let e = s
        .call::<_, u64>(&w, "echo", "len", &big, &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::PayloadTooLarge { .. }), "{e}");
    let n: u64 = s
        .call(&w, "echo", "len", &vec![0u8; 1000], &opts())
        .await
        .unwrap();
    assert!(n >= 1000);
    cluster.shutdown().await.unwrap();
}
