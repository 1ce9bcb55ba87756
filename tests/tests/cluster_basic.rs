//! A head and two real `fleet node --join` processes on loopback: placement across nodes
//! (pack, spread, GPU ids, labels, forks next to their targets), calls to every worker,
//! `fleet status`, and teardown.

use fleet_actors::{
    CallOptions, FleetError, HttpCall, HttpServiceSpec, Job, SchedulingSpec, WorkerKind,
};
use fleet_runtime::scheduler::Policy;
use fleet_runtime::WorkerInfo;
use fleet_tests::cluster::{NodeSpec, TestCluster};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn opts() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(10))
}

fn by_node(workers: &[WorkerInfo]) -> BTreeMap<String, Vec<&WorkerInfo>> {
    let mut m: BTreeMap<String, Vec<&WorkerInfo>> = BTreeMap::new();
    for w in workers {
        m.entry(w.node.to_string()).or_default().push(w);
    }
    m
}

/// GPU ids are never shared by two workers of one node.
fn assert_gpus_exclusive(workers: &[WorkerInfo]) {
    for (node, ws) in by_node(workers) {
        let mut seen = BTreeSet::new();
        for w in ws {
            for g in &w.gpus {
                assert!(
                    seen.insert(*g),
                    "GPU {g} given twice on {node}: {workers:#?}"
                );
            }
            let visible = w
                .env
                .get("CUDA_VISIBLE_DEVICES")
                .cloned()
                .unwrap_or_default();
            let ids: Vec<String> = w.gpus.iter().map(u32::to_string).collect();
            assert_eq!(visible, ids.join(","), "{}", w.id);
        }
    }
}

async fn call_all(cluster: &TestCluster, role: &str) {
    let s = cluster.scheduler();
    for w in s.get_workers(role, Duration::from_secs(20)).await.unwrap() {
        let e = s.create_engine(&w.id, "c", "counter", &()).await.unwrap();
        for k in 1..=3u64 {
            let total: u64 = e.call("incr", &1u64, &opts()).await.unwrap();
            assert_eq!(total, k, "{} on {}", w.id, w.node);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_fills_a_node_first_and_forks_land_on_their_targets_node() {
    let cluster = TestCluster::builder()
        .policy(Policy::Pack)
        .node(NodeSpec::new().gpus([0, 1, 2, 3]))
        .node(NodeSpec::new().gpus([0, 1, 2, 3]))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    let gen = s
        .create_workers(Job::new("gen", 6).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap();
    let counts: Vec<usize> = by_node(&gen).values().map(Vec::len).collect();
    let mut sorted = counts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![2, 4],
        "pack fills one node (4 GPUs) first: {gen:#?}"
    );
    assert_gpus_exclusive(&gen);
    // Both nodes are remote: every call crosses ractor_cluster.
    let head = cluster.head().node_id().to_string();
    assert!(gen.iter().all(|w| w.node.to_string() != head));
    call_all(&cluster, "gen").await;

    // An HTTP service forked next to each worker lands on that worker's node and answers.
    let kind = WorkerKind::HttpService(
        HttpServiceSpec::new([SERVER, "--port", "{port}"]).ready_within(Duration::from_secs(20)),
    );
    let proxies = s
        .fork_workers("proxy", "gen", kind, SchedulingSpec::default().ports(1))
        .await
        .unwrap();
    s.get_workers("proxy", Duration::from_secs(30))
        .await
        .unwrap();
    for (p, g) in proxies.iter().zip(&gen) {
        assert_eq!(p.node, g.node, "{} must run next to {}", p.id, g.id);
        assert!(p.gpus.is_empty(), "a fork takes no GPU");
        assert_eq!(
            p.env.get("CUDA_VISIBLE_DEVICES"),
            g.env.get("CUDA_VISIBLE_DEVICES"),
            "a fork inherits its target's devices"
        );
        let r = s.http(&p.id, HttpCall::get("/health")).await.unwrap();
        assert_eq!(r.status, 200, "{}", p.id);
    }

    // Status sees every worker with its node and the forks' child pids.
    let status = cluster.head().status().await.unwrap();
    let rows: Vec<_> = status
        .roles
        .iter()
        .find(|(r, _)| r == "proxy")
        .map(|(_, w)| w.clone())
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|w| w.child_pid.is_some()), "{rows:#?}");

    // A seventh, eighth and ninth GPU worker no longer fit: typed error, nothing started.
    let err = s
        .create_workers(Job::new("more", 3).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FleetError::InsufficientResources { resource, .. } if resource == "gpu"),
        "{err}"
    );

    s.delete_workers(None, false).await.unwrap();
    let status = cluster.head().status().await.unwrap();
    assert!(status.roles.is_empty());
    for n in status.nodes.iter().filter(|n| !n.is_head) {
        assert_eq!(n.free_gpus.len(), 4, "{n:?}");
        assert_eq!(n.workers, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_alternates_nodes_and_labels_constrain_placement() {
    let cluster = TestCluster::builder()
        .policy(Policy::Spread)
        .node(NodeSpec::new().gpus([0, 1]).label("zone", "a"))
        .node(NodeSpec::new().gpus([0, 1]).label("zone", "b"))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    let gen = s
        .create_workers(Job::new("gen", 4).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap();
    let counts: Vec<usize> = by_node(&gen).values().map(Vec::len).collect();
    assert_eq!(counts, vec![2, 2], "spread puts two on each: {gen:#?}");
    assert_ne!(gen[0].node, gen[1].node, "spread alternates");
    assert_gpus_exclusive(&gen);
    call_all(&cluster, "gen").await;

    // Labels: only zone=b may take these.
    let zone_b = cluster.node_id(1).unwrap();
    let pinned = s
        .create_workers(
            Job::new("pinned", 3).spec(SchedulingSpec::default().cpu(1.0).node_label("zone", "b")),
        )
        .await
        .unwrap();
    assert!(pinned.iter().all(|w| w.node == zone_b), "{pinned:#?}");
    call_all(&cluster, "pinned").await;
    let err = s
        .create_workers(
            Job::new("nowhere", 1).spec(SchedulingSpec::default().node_label("zone", "c")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FleetError::InsufficientResources { resource, .. } if resource == "labels"),
        "{err}"
    );

    // `fleet status --head` from another process: the table and the JSON agree.
    let out = std::process::Command::new(fleet_tests::fleet_bin())
        .args(["status", "--head", &cluster.head_addr(), "--json"])
        .env("FLEET_COOKIE", cluster.cookie())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 2, "{json}");
    let roles = json["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2, "{json}");
    // Without --head it finds the head through FLEET_HEAD, and says nothing but the table (no
    // library chatter on stderr).
    let out = std::process::Command::new(fleet_tests::fleet_bin())
        .args(["status"])
        .env("FLEET_HEAD", cluster.head_addr())
        .env("FLEET_COOKIE", cluster.cookie())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ractor_cluster") && !stderr.contains(" INFO "),
        "{stderr}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("node0#") && table.contains("node1#") && table.contains("pinned/2"),
        "{table}"
    );

    s.delete_workers(None, true).await.unwrap();
    assert!(matches!(
        s.get_workers("gen", Duration::from_secs(1)).await,
        Err(FleetError::RoleNotFound { .. })
    ));
}
