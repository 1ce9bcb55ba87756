//! The same engine tests against an in-process RpcServer and an isolated one (`fleet
//! rpc-server` in a child process behind the HTTP launcher), both through the scheduler's
//! public API: the worker's isolation is a line in its spec, not a different program.

use fleet_actors::rpc_server::Control;
use fleet_actors::{
    CallOptions, Codec, FleetError, Isolation, Job, Payload, RpcServerSpec, WorkerId, WorkerKind,
};
use fleet_runtime::{Cluster, Scheduler};
use fleet_tests::{fleet_bin, pid_alive, run_engine_suite, wait_until, WorkerCaller};
use std::time::Duration;

struct Through {
    s: Scheduler,
    w: WorkerId,
}

impl WorkerCaller for Through {
    async fn create_engine(
        &self,
        name: &str,
        type_name: &str,
        args: Payload,
    ) -> Result<(), FleetError> {
        let c = Control::CreateEngine {
            name: name.to_string(),
            type_name: type_name.to_string(),
            args,
        };
        self.s
            .control(&self.w, c, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        engine: &str,
        method: &str,
        args: Payload,
        request_id: Option<String>,
    ) -> Result<Payload, FleetError> {
        let mut o = CallOptions::default().timeout(Duration::from_secs(20));
        if let Some(id) = request_id {
            o = o.request_id(id);
        }
        self.s.call_raw(&self.w, engine, method, args, &o).await
    }

    async fn ping(&self) -> Result<(), FleetError> {
        self.s.ping(&self.w, Duration::from_secs(2)).await
    }
}

fn isolated() -> WorkerKind {
    let bin = fleet_bin().to_string_lossy().into_owned();
    WorkerKind::RpcServer(RpcServerSpec {
        isolation: Isolation::Process {
            command: Some(vec![
                bin,
                "rpc-server".into(),
                "--port".into(),
                "{port}".into(),
                "--worker".into(),
                "{worker}".into(),
            ]),
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_suite_passes_in_process_through_the_scheduler() {
    let c = Cluster::local().start().await.unwrap();
    let s = c.scheduler().clone();
    s.create_workers(Job::new("inproc", 2)).await.unwrap();
    s.get_workers("inproc", Duration::from_secs(5))
        .await
        .unwrap();
    run_engine_suite(
        &Through {
            s: s.clone(),
            w: WorkerId::new("inproc", 0),
        },
        Codec::Bincode,
    )
    .await;
    run_engine_suite(
        &Through {
            s: s.clone(),
            w: WorkerId::new("inproc", 1),
        },
        Codec::Json,
    )
    .await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_suite_passes_in_an_isolated_rpc_server_behind_the_launcher() {
    let c = Cluster::local()
        .port_range(26000, 26999)
        .start()
        .await
        .unwrap();
    let s = c.scheduler().clone();
    s.create_workers(Job::new("iso", 2).kind(isolated()))
        .await
        .unwrap();
    s.get_workers("iso", Duration::from_secs(20)).await.unwrap();
    let w = WorkerId::new("iso", 0);
    let pid = s
        .status(&w, Duration::from_secs(1))
        .await
        .unwrap()
        .pid
        .expect("a child process");
    run_engine_suite(
        &Through {
            s: s.clone(),
            w: w.clone(),
        },
        Codec::Bincode,
    )
    .await;
    run_engine_suite(
        &Through {
            s: s.clone(),
            w: WorkerId::new("iso", 1),
        },
        Codec::Json,
    )
    .await;
    // The typed API is the same as in-process.
    let e = s.create_engine(&w, "c", "counter", &()).await.unwrap();
    let n: u64 = e
        .call("incr", &5u64, &CallOptions::default())
        .await
        .unwrap();
    assert_eq!(n, 5);
    let err = s
        .call::<_, u64>(&w, "nope", "get", &(), &CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::EngineNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("iso/0"),
        "the error names the worker: {err}"
    );
    s.delete_workers(None, false).await.unwrap();
    wait_until(
        "the rpc-server process to exit",
        Duration::from_secs(10),
        || async move { (!pid_alive(pid)).then_some(()) },
    )
    .await
    .unwrap();
    c.shutdown().await.unwrap();
}
