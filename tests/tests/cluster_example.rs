//! An example of an integration test a user writes against a real multi-process cluster with
//! the public harness (`fleet_tests::cluster`): start a head and nodes, create workers, call
//! them, read a worker's log, hang a node and watch the cluster react. Copy it as a template.

use fleet_actors::{CallOptions, HttpCall, HttpServiceSpec, Job, SchedulingSpec, WorkerKind};
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::wait_until;
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_engines_and_services_on_a_two_node_cluster() {
    // Every wait below has a deadline; dropping `cluster` (also on panic) kills every process.
    let cluster = TestCluster::builder()
        .node(NodeSpec::new().gpus([0]).label("role", "trainer"))
        .node(NodeSpec::new().label("role", "rollout"))
        .start()
        .await
        .expect("head and two nodes up");
    let s = cluster.scheduler();

    // An engine worker on the GPU node.
    s.create_workers(
        Job::new("trainer", 1).spec(
            SchedulingSpec::default()
                .gpu(1)
                .node_label("role", "trainer"),
        ),
    )
    .await
    .unwrap();
    let t = &s
        .get_workers("trainer", Duration::from_secs(10))
        .await
        .unwrap()[0];
    assert_eq!(
        t.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("0")
    );
    let engine = s
        .create_engine(&t.id, "main", "counter", &())
        .await
        .unwrap();
    let opts = CallOptions::default().timeout(Duration::from_secs(5));
    let total: u64 = engine.call("incr", &41u64, &opts).await.unwrap();
    assert_eq!(total, 41);

    // An HTTP service on the other node; its output goes to a log file we can read.
    let kind = WorkerKind::HttpService(HttpServiceSpec::new([SERVER, "--port", "{port}"]));
    s.create_workers(
        Job::new("svc", 1).kind(kind).spec(
            SchedulingSpec::default()
                .ports(1)
                .node_label("role", "rollout"),
        ),
    )
    .await
    .unwrap();
    let svc = s.get_workers("svc", Duration::from_secs(20)).await.unwrap()[0].clone();
    let r = s.http(&svc.id, HttpCall::get("/health")).await.unwrap();
    assert_eq!(r.status, 200);
    let logged = wait_until(
        "the request in the service's log",
        Duration::from_secs(10),
        || {
            let log = cluster.worker_log(&svc);
            async move { log.contains("GET /health").then_some(()) }
        },
    )
    .await;
    assert!(logged.is_ok(), "{}", cluster.worker_log(&svc));

    // Hang the service's node: the head marks it down, the trainer keeps working.
    cluster.stop_node(1);
    cluster
        .wait_down(1, cluster.membership().timeout + Duration::from_secs(5))
        .await
        .unwrap();
    let total: u64 = engine.call("incr", &1u64, &opts).await.unwrap();
    assert_eq!(total, 42);
    cluster.cont_node(1);
}
