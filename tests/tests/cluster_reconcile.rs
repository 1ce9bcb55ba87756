//! The scheduler reconciles its view of a node with the roster the node sends on every
//! heartbeat: a worker stopped behind the scheduler's back is seen as failed within a few
//! beats.

use fleet_actors::wire::Wire;
use fleet_actors::{CallOptions, FleetError};
use fleet_runtime::node::messages::{AgentMsg, StopRequest};
use fleet_runtime::WorkerState;
use fleet_tests::cluster::TestCluster;
use fleet_tests::wait_until;
use ractor::ActorRef;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_behind_the_schedulers_back_is_marked_failed_within_a_few_beats() {
    let (cluster, workers) = TestCluster::one_node_with_workers("w", 2).await;
    let node = cluster.node_id(0).unwrap();
    let s = cluster.scheduler().clone();

    // The node's agent, straight from its process group: the scheduler is not told.
    let agent: ActorRef<AgentMsg> =
        ractor::pg::get_scoped_members(&"fleet".to_string(), &format!("agent/{node}"))
            .into_iter()
            .find(|c| !c.get_id().is_local())
            .expect("the node's agent is visible")
            .into();
    let victim = workers[0].id.clone();
    let req = StopRequest {
        worker: victim.clone(),
        destroy_timeout_ms: 1000,
    };
    agent
        .call(
            |p| AgentMsg::Stop(Wire::new(req), p),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();

    let reason = wait_until(
        "the scheduler to mark the stopped worker failed",
        Duration::from_secs(15),
        || {
            let s = s.clone();
            let victim = victim.clone();
            async move {
                let (_, roles) = s.snapshot().await;
                roles
                    .into_iter()
                    .flat_map(|(_, ws)| ws)
                    .find(|w| w.id == victim)
                    .and_then(|w| match w.state {
                        WorkerState::Failed(e) => Some(e.to_string()),
                        _ => None,
                    })
            }
        },
    )
    .await
    .unwrap();
    assert!(
        reason.contains(&format!("node {node} no longer runs it")),
        "{reason}"
    );
    let e = s
        .call::<_, u64>(
            &victim,
            "c",
            "get",
            &(),
            &CallOptions::default().timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::WorkerFailed { .. }), "{e}");
    // The other worker is untouched.
    let (_, roles) = s.snapshot().await;
    let other = roles
        .into_iter()
        .flat_map(|(_, ws)| ws)
        .find(|w| w.id == workers[1].id)
        .unwrap();
    assert_eq!(other.state, WorkerState::Running);
    s.delete_workers(None, false).await.unwrap();
}
