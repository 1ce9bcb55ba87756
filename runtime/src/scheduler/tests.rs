//! Scheduler behaviour that needs its internals: a remote call in flight fails as soon as its
//! worker's failure is pushed.

use super::{Scheduler, SchedulerConfig};
use crate::node::messages::{WorkerEvent, WorkerEventKind};
use crate::node::{AgentArgs, LocalDirectory, NodeAgent, NodeResources};
use fleet_actors::{CallOptions, FleetError, Job, NodeId, WorkerId};
use ractor::Actor;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
            max_message: 8 << 20,
            agents: crate::rollout::AgentRegistry::builtin(),
        },
    )
    .await
    .unwrap();
    // No local node: every call takes the remote path (through the agent, racing node loss and
    // pushed worker failures), as it does for a worker on another machine.
    let s = Scheduler::new(SchedulerConfig::default(), LocalDirectory::default(), None);
    s.add_node(node.clone(), agent.clone(), resources).await;
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
    s.apply_event(WorkerEvent {
        worker: w.clone(),
        node: node.clone(),
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
