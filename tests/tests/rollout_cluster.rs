//! Rollout across a real multi-process cluster: the driver is the head (this test process), the
//! rollout workers with their backends and proxies run on two `fleet node` processes.

use fleet_runtime::rollout::job::RolloutJob;
use fleet_runtime::scheduler::Policy;
use fleet_tests::cluster::TestCluster;
use serde_json::Value;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn episodes_run_on_rollout_workers_spread_over_two_nodes() {
    let cluster = TestCluster::builder()
        .nodes(2)
        .policy(Policy::Spread)
        .start()
        .await
        .expect("head and two nodes up");
    let dir = cluster.dir().to_path_buf();
    let mut job = RolloutJob::demo();
    job.episodes = 16;
    job.batch_size = 8;
    job.output = dir.join("trajectories.jsonl");
    // `fleet` in the commands is resolved by each node to its own executable.
    let report = job
        .run(cluster.scheduler(), "fleet", Default::default())
        .await
        .unwrap();
    assert_eq!(report.accepted, 16, "{:?}", report.rejected);
    let lines: Vec<Value> = std::fs::read_to_string(&job.output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 16);
    let workers: BTreeSet<&str> = lines
        .iter()
        .map(|l| l["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2, "both rollout workers ran episodes");
    let st = cluster.head().status().await.unwrap();
    let text = format!("{st:?}");
    assert!(
        !text.contains("rollout/"),
        "the job deleted its workers: {text}"
    );
}
