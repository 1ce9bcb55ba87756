//! What a cluster refuses and survives: a wrong cookie, peers without TLS, junk and truncated
//! frames on a node's port, and messages over the size limit (refused before they reach
//! ractor_cluster, which would drop the whole peer session). And the basic multi-node test
//! again with TLS between all processes.

use fleet_actors::{CallOptions, FleetError, HttpServiceSpec, Job, SchedulingSpec, WorkerKind};
use fleet_runtime::MemberEvent;
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::wait_until;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn opts() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(10))
}

async fn wait_exit(cluster: &TestCluster, i: usize) -> std::process::ExitStatus {
    wait_until(
        &format!("node {i} to exit"),
        Duration::from_secs(20),
        || {
            let st = cluster.node_exited(i);
            async move { st }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", cluster.node_log(i)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_is_refused_and_both_sides_say_why() {
    let cluster = TestCluster::builder().nodes(1).start().await.unwrap();
    let bad = cluster
        .spawn_node(&NodeSpec::new().cookie("not-the-cookie"))
        .unwrap();
    let status = wait_exit(&cluster, bad).await;
    assert!(!status.success());
    let log = cluster.node_log(bad);
    assert!(log.contains("cookie"), "the node says why: {log}");
    // The head saw and logged the refusal too.
    let ev = cluster
        .wait_event("a refusal", Duration::from_secs(10), |e| {
            matches!(e, MemberEvent::Refused { .. })
        })
        .await
        .unwrap();
    let MemberEvent::Refused { reason, .. } = ev else {
        unreachable!()
    };
    assert!(reason.contains("cookie"), "{reason}");
    // It never became a member; the good node still serves.
    assert_eq!(cluster.scheduler().nodes().await.len(), 1);
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    let w = s.get_workers("w", Duration::from_secs(10)).await.unwrap();
    let e = s
        .create_engine(&w[0].id, "c", "counter", &())
        .await
        .unwrap();
    let n: u64 = e.call("incr", &2u64, &opts()).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_node_test_passes_with_tls_and_a_node_without_tls_is_refused() {
    let cluster = TestCluster::builder()
        .tls()
        .node(NodeSpec::new().gpus([0, 1]))
        .node(NodeSpec::new().gpus([0, 1]))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    let gen = s
        .create_workers(Job::new("gen", 4).spec(SchedulingSpec::default().gpu(1)))
        .await
        .unwrap();
    let nodes: std::collections::BTreeSet<_> = gen.iter().map(|w| w.node.clone()).collect();
    assert_eq!(nodes.len(), 2);
    for w in s.get_workers("gen", Duration::from_secs(20)).await.unwrap() {
        let e = s.create_engine(&w.id, "c", "counter", &()).await.unwrap();
        let n: u64 = e.call("incr", &7u64, &opts()).await.unwrap();
        assert_eq!(n, 7);
    }
    let kind = WorkerKind::HttpService(
        HttpServiceSpec::new([SERVER, "--port", "{port}"]).ready_within(Duration::from_secs(20)),
    );
    let forks = s
        .fork_workers("svc", "gen", kind, SchedulingSpec::default().ports(1))
        .await
        .unwrap();
    s.get_workers("svc", Duration::from_secs(30)).await.unwrap();
    for (f, g) in forks.iter().zip(&gen) {
        assert_eq!(f.node, g.node);
        let r = s
            .http(&f.id, fleet_actors::HttpCall::get("/health"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }

    // `fleet status` needs the certificates too.
    let files = cluster.tls_files().unwrap();
    let out = std::process::Command::new(fleet_tests::fleet_bin())
        .args(["status", "--head", &cluster.head_addr(), "--json"])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .arg("--tls-ca")
        .arg(&files.ca)
        .env("FLEET_COOKIE", cluster.cookie())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A node that speaks plain TCP to the TLS head never gets in.
    // A connection stuck half-way through its TLS handshake does not stop the head from
    // accepting (and judging) the next one.
    let mut stuck = tokio::net::TcpStream::connect(cluster.head_addr())
        .await
        .unwrap();
    stuck
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let plain = cluster.spawn_node(&NodeSpec::new().without_tls()).unwrap();
    let before = s.nodes().await.len();
    let status = wait_exit(&cluster, plain).await;
    assert!(!status.success());
    let log = cluster.node_log(plain);
    assert!(
        log.contains("TLS") && !log.contains("joined cluster"),
        "{log}"
    );
    assert_eq!(s.nodes().await.len(), before);
    drop(stuck);
    s.delete_workers(None, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_truncated_frames_do_not_take_a_node_or_the_head_down() {
    let cluster = TestCluster::builder().nodes(1).start().await.unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    let w = s.get_workers("w", Duration::from_secs(10)).await.unwrap();
    let e = s
        .create_engine(&w[0].id, "c", "counter", &())
        .await
        .unwrap();
    let node_addr = cluster.node_addr(0, Duration::from_secs(10)).await.unwrap();
    let junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 4096],
        // A frame header announcing 1 GiB, then nothing.
        vec![0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        // A plausible small frame cut short.
        vec![0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x0a, 0x05],
        vec![],
    ];
    for addr in [node_addr.clone(), cluster.head_addr()] {
        let mut open = Vec::new();
        for bytes in &junk {
            let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let _ = c.write_all(bytes).await;
            let _ = c.flush().await;
            open.push(c);
        }
        // Half of them hang up at once, the others stay open mid-frame.
        for c in open.iter_mut().step_by(2) {
            let _ = c.shutdown().await;
        }
        let mut total = 0;
        for k in 1..=5u64 {
            total = e.call("incr", &1u64, &opts()).await.unwrap();
            assert_eq!(total, k + if addr == node_addr { 0 } else { 5 });
        }
        assert!(total > 0);
        drop(open);
    }
    assert!(cluster.node_exited(0).is_none(), "{}", cluster.node_log(0));
    assert_eq!(s.nodes().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_before_they_reach_the_wire_and_the_node_stays() {
    let cluster = TestCluster::builder()
        .node(NodeSpec::new().arg("--max-message").arg("1048576"))
        .start()
        .await
        .unwrap();
    let s = cluster.scheduler();
    s.create_workers(Job::new("w", 1)).await.unwrap();
    let w = s.get_workers("w", Duration::from_secs(10)).await.unwrap();
    let id = &w[0].id;
    let echo = s.create_engine(id, "e", "echo", &()).await.unwrap();

    // Over the head's limit (8 MiB): refused here, never sent.
    let big = vec![7u8; 9 * 1024 * 1024];
    let err = echo
        .call::<_, Vec<u8>>("echo", &big, &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::PayloadTooLarge { .. }), "{err}");
    let err = s.create_engine(id, "e2", "echo", &big).await.unwrap_err();
    assert!(matches!(err, FleetError::PayloadTooLarge { .. }), "{err}");

    // Under the head's limit but the result is over the node's (1 MiB): the node refuses to
    // send it back, with the same typed error.
    let medium = vec![7u8; 2 * 1024 * 1024];
    let err = echo
        .call::<_, Vec<u8>>("echo", &medium, &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FleetError::PayloadTooLarge { what, .. } if what.contains("result")),
        "{err}"
    );

    // The session survived all of it: the node is still a member and answers.
    let len: u64 = echo.call("len", &vec![1u8; 1000], &opts()).await.unwrap();
    assert!(len >= 1000);
    let small: Vec<u8> = echo.call("echo", &vec![3u8; 1000], &opts()).await.unwrap();
    assert_eq!(small.len(), 1000);
    assert!(cluster
        .events()
        .iter()
        .all(|e| !matches!(e, MemberEvent::Down { .. })));
}
