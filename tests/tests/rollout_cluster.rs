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

/// A node SIGKILLed mid-job: its worker's episodes in flight fail with `NodeLost` and run again
/// on the other node; the job completes with every task exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sigkilled_mid_job_loses_no_episode_and_runs_none_twice() {
    use fleet_runtime::rollout::run::{Ending, RunOptions};
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let cluster = TestCluster::builder()
        .nodes(2)
        .policy(Policy::Spread)
        .start()
        .await
        .expect("head and two nodes up");
    let dir = cluster.dir().to_path_buf();
    let mut job = RolloutJob::demo();
    job.episodes = 80;
    job.batch_size = 10;
    job.max_concurrent = 8;
    job.tasks.turns = Some(2);
    job.backend.command = Some(fleet_tests::rollout::mock_backend(40));
    job.output = dir.join("trajectories.jsonl");
    let (accepted, observer) = fleet_tests::rollout::count_accepted();
    let opts = RunOptions {
        observe: Some(observer),
        ..Default::default()
    };
    let run = {
        let s = cluster.scheduler().clone();
        let job = job.clone();
        tokio::spawn(async move { job.run(&s, "fleet", opts).await })
    };
    fleet_tests::wait_until("10 episodes accepted", Duration::from_secs(60), || {
        let a = accepted.clone();
        async move { (a.load(Ordering::SeqCst) >= 10).then_some(()) }
    })
    .await
    .unwrap();
    cluster.kill_node(1);
    let report = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the job finishes")
        .unwrap()
        .unwrap();
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.accepted, 80, "rejections: {:?}", report.rejected);
    assert!(
        report.requeued > 0,
        "episodes in flight on the lost node ran again elsewhere"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&job.output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen = BTreeSet::new();
    for l in &lines {
        assert!(
            seen.insert(l["task_index"].as_u64().unwrap()),
            "a task twice: {l}"
        );
    }
    assert_eq!(seen, (0..80).collect(), "every task exactly once");
}
