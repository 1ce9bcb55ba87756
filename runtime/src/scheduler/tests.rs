//! Scheduler behaviour that needs its internals: a remote call in flight fails as soon as its
//! worker's failure is pushed; a late event about an earlier incarnation changes nothing.

use super::{Scheduler, SchedulerConfig, WorkerState};
use crate::node::messages::{AgentMsg, WorkerEvent, WorkerEventKind};
use crate::node::{AgentArgs, LocalDirectory, NodeAgent, NodeResources};
use fleet_actors::{CallOptions, FleetError, Job, NodeId, SchedulingSpec, WorkerId};
use ractor::Actor;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn start_agent(node: &NodeId, resources: &NodeResources) -> ractor::ActorRef<AgentMsg> {
    let (agent, _) = Actor::spawn(
        None,
        NodeAgent,
        AgentArgs {
            node: node.clone(),
            resources: resources.clone(),
            registry: fleet_actors::engine::builtin::registry(),
            directory: LocalDirectory::default(),
            events: None,
            run_dir: std::env::temp_dir(),
            runs_root: None,
            max_message: 8 << 20,
            agents: crate::rollout::AgentRegistry::builtin(),
            store: None,
            leftovers: Default::default(),
        },
    )
    .await
    .unwrap();
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_in_flight_fails_as_soon_as_its_worker_is_reported_failed() {
    let node = NodeId::generate("far");
    let resources = NodeResources {
        cpu_millis: 4000,
        mem_mib: 1024,
        gpus: vec![],
        port_range: (50000, 50099),
        labels: BTreeMap::new(),
    };
    let agent = start_agent(&node, &resources).await;
    // No local node: every call takes the remote path (through the agent, racing node loss and
    // pushed worker failures), as it does for a worker on another machine.
    let s = Scheduler::new(SchedulerConfig::default(), LocalDirectory::default(), None);
    s.add_node(node.clone(), agent.clone(), resources)
        .await
        .unwrap();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    let w = WorkerId::new("w", 0);
    s.create_engine(&w, "s", "sleep", &()).await.unwrap();

    let call = {
        let (s, w) = (s.clone(), w.clone());
        tokio::spawn(async move {
            let opts = CallOptions::default().timeout(Duration::from_secs(30));
            let t = Instant::now();
            let r = s.call::<_, u64>(&w, "s", "sleep", &10_000u64, &opts).await;
            (r, t.elapsed())
        })
    };
    // Once the call is running, the worker's node reports it dead (as it would after the
    // worker's actor died; a dead remote actor sends no answer of its own).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = s.status(&w, Duration::from_secs(1)).await.unwrap();
        if st.in_flight.is_some() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let incarnation = s.workers("w").await.unwrap()[0].incarnation;
    s.apply_event(WorkerEvent {
        worker: w.clone(),
        node: node.clone(),
        incarnation,
        kind: WorkerEventKind::Failed {
            reason: "its actor panicked".into(),
            tail: vec![],
        },
    })
    .await;
    let (r, _elapsed) = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ended without waiting for its 30 s deadline or the 10 s engine call")
        .unwrap();
    let e = r.unwrap_err();
    assert!(
        matches!(e, FleetError::WorkerFailed { ref reason, .. } if reason.contains("panicked")),
        "{e}"
    );
    agent.stop(None);
}

/// C10: after `r/0` is deleted and recreated (on the same node), a late failure event about the
/// old incarnation leaves the new worker `Running`, its route usable, and the mirror ledger as
/// it was. Before, the event marked the new `r/0` failed and freed its CPU and GPUs in the
/// mirror, so the scheduler over-committed the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_about_an_earlier_incarnation_leaves_the_recreated_worker_alone() {
    let node = NodeId::generate("near");
    let resources = NodeResources {
        cpu_millis: 4000,
        mem_mib: 1024,
        gpus: vec![0],
        port_range: (50100, 50199),
        labels: BTreeMap::new(),
    };
    let agent = start_agent(&node, &resources).await;
    let s = Scheduler::new(SchedulerConfig::default(), LocalDirectory::default(), None);
    s.add_node(node.clone(), agent.clone(), resources)
        .await
        .unwrap();
    let job = Job::new("r", 1).spec(SchedulingSpec::default().gpu(1));
    let old = s.create_workers(job.clone()).await.unwrap()[0].incarnation;
    s.delete_workers(Some("r"), false).await.unwrap();
    let new = s.create_workers(job).await.unwrap()[0].incarnation;
    assert_ne!(old, new, "every spawn gets its own incarnation");
    let w = WorkerId::new("r", 0);
    let ledger = |s: &Scheduler| {
        let s = s.clone();
        let node = node.clone();
        async move {
            let st = s.inner.state.lock().await;
            let l = &st.nodes[&node].ledger;
            (
                l.free_cpu(),
                l.free_mem(),
                l.free_gpus().collect::<Vec<_>>(),
                l.holders(),
            )
        }
    };
    let before = ledger(&s).await;
    assert!(before.2.is_empty(), "the new r/0 holds GPU 0: {before:?}");

    s.apply_event(WorkerEvent {
        worker: w.clone(),
        node: node.clone(),
        incarnation: old,
        kind: WorkerEventKind::Failed {
            reason: "the old r/0 exited".into(),
            tail: vec![],
        },
    })
    .await;

    let now = s.workers("r").await.unwrap();
    assert_eq!(now[0].state, WorkerState::Running, "{:?}", now[0].state);
    assert_eq!(now[0].incarnation, new);
    assert!(s.route(&w).is_ok());
    assert_eq!(ledger(&s).await, before, "the mirror ledger is unchanged");
    assert!(s.status(&w, Duration::from_secs(5)).await.is_ok());

    // The same event for the current incarnation does apply.
    s.apply_event(WorkerEvent {
        worker: w.clone(),
        node: node.clone(),
        incarnation: new,
        kind: WorkerEventKind::Failed {
            reason: "the new r/0 exited".into(),
            tail: vec![],
        },
    })
    .await;
    assert!(matches!(
        s.workers("r").await.unwrap()[0].state,
        WorkerState::Failed(_)
    ));
    agent.stop(None);
}
