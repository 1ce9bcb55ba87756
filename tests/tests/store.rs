//! The bulk data plane over real `fleet node` processes: objects put on one node are fetched
//! intact by engines and drivers on others (checksummed), the byte budget and leases hold, a
//! peer without the cluster cookie is refused, same-node consumers get the object's own file,
//! and a transfer that is cut off or damaged (a node killed mid-transfer, a peer that sends
//! too few or wrong bytes) never leaves a visible object.

use bytes::Bytes;
use fleet_actors::{CallOptions, Job, SchedulingSpec};
use fleet_runtime::store::engine::{write_pattern, Fetched, PatternArgs};
use fleet_runtime::store::object::Hasher;
use fleet_runtime::store::{Checksum, ObjectId, ObjectRef, PutOptions, StoreStats};
use fleet_runtime::{EngineHandle, MembershipConfig};
use fleet_tests::cluster::{NodeSpec, TestCluster};
use fleet_tests::{wait_until, TestHttp};
use hyper::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn opts() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(120))
}

/// A head (with its own store, as the driver) and two node processes labelled zone=a and
/// zone=b, each with extra `fleet node` flags.
async fn cluster(a: &[&str], b: &[&str]) -> TestCluster {
    let mut na = NodeSpec::new().label("zone", "a");
    for x in a {
        na = na.arg(*x);
    }
    let mut nb = NodeSpec::new().label("zone", "b");
    for x in b {
        nb = nb.arg(*x);
    }
    // These tests move tens of MiB through debug builds of several processes on two cores:
    // a generous heartbeat timeout keeps a busy node from being declared lost (failure
    // detection is tested elsewhere; the kill test here does not wait for it).
    TestCluster::builder()
        .membership(MembershipConfig::new(
            Duration::from_millis(500),
            Duration::from_secs(20),
        ))
        .node(na)
        .node(nb)
        .start()
        .await
        .expect("cluster starts")
}

/// A worker with the built-in `store` engine on the node of `zone`.
async fn store_engine(c: &TestCluster, role: &str, zone: &str) -> EngineHandle {
    let s = c.scheduler();
    s.create_workers(
        Job::new(role, 1).spec(SchedulingSpec::default().cpu(0.5).node_label("zone", zone)),
    )
    .await
    .expect("create worker");
    let w = s
        .get_workers(role, DEADLINE)
        .await
        .expect("worker ready")
        .remove(0);
    s.create_engine(&w.id, "s", "store", &())
        .await
        .expect("store engine")
}

struct HashWriter(Hasher);
impl std::io::Write for HashWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pattern_checksum(seed: u64, size: u64) -> Checksum {
    let mut h = HashWriter(Hasher::default());
    write_pattern(&mut h, seed, size).unwrap();
    h.0.finish()
}

fn pattern(seed: u64, size: u64) -> Vec<u8> {
    let mut v = Vec::new();
    write_pattern(&mut v, seed, size).unwrap();
    v
}

async fn put_pattern(
    e: &EngineHandle,
    name: &str,
    size: u64,
    seed: u64,
    ttl_ms: Option<u64>,
) -> ObjectRef {
    e.call(
        "put_pattern",
        &PatternArgs {
            name: name.into(),
            size,
            seed,
            ttl_ms,
        },
        &opts(),
    )
    .await
    .expect("put_pattern")
}

async fn stats(e: &EngineHandle) -> StoreStats {
    e.call("stats", &(), &opts()).await.expect("stats")
}

fn tmp_files(store_dir: &str) -> Vec<PathBuf> {
    std::fs::read_dir(Path::new(store_dir).join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weights_object_fetched_across_two_node_processes_arrives_intact() {
    let c = cluster(&[], &[]).await;
    let producer = store_engine(&c, "trainer", "a").await;
    let consumer = store_engine(&c, "infer", "b").await;
    let size = 16 << 20;
    let obj = put_pattern(&producer, "policy-v1", size, 1, None).await;
    assert_eq!(obj.size, size);
    assert_eq!(obj.checksum, pattern_checksum(1, size));
    let home = stats(&producer).await;
    assert_eq!(obj.node, home.node);
    assert_eq!(obj.url, home.url);

    let got: Fetched = consumer.call("fetch", &obj, &opts()).await.expect("fetch");
    let there = stats(&consumer).await;
    assert_eq!(
        (got.size, got.checksum),
        (size, obj.checksum),
        "the bytes re-read from the consumer's file"
    );
    assert_eq!(got.node, there.node);
    assert_ne!(got.node, obj.node, "a different node process");
    assert!(
        got.path.starts_with(&there.dir),
        "{} is in the consumer's store {}",
        got.path,
        there.dir
    );
    assert_eq!(
        (there.fetches, there.fetched_bytes, there.objects),
        (1, size, 1)
    );
    assert_eq!(stats(&producer).await.bytes_served, size);
    assert!(tmp_files(&there.dir).is_empty());

    // Asked again, the consumer's node hands out its copy: no second transfer.
    let again: Fetched = consumer
        .call("fetch", &obj, &opts())
        .await
        .expect("fetch again");
    assert_eq!(again.path, got.path);
    let there = stats(&consumer).await;
    assert_eq!((there.fetches, there.local_hits), (1, 1));

    // The driver (the head) fetches it too, into its own store, and reads the bytes.
    let store = c.scheduler().store().expect("the head runs a store");
    let path = store
        .fetch_to_local(&obj, None)
        .await
        .expect("driver fetch");
    assert!(path.starts_with(store.dir()));
    assert!(
        std::fs::read(&path).unwrap() == pattern(1, size),
        "the driver's copy is byte for byte the producer's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_ref_passed_as_an_engine_call_argument_is_read_intact_on_another_node() {
    let c = cluster(&[], &[]).await;
    let engine = store_engine(&c, "infer", "b").await;
    let store = c.scheduler().store().expect("the driver's store");
    let bytes = pattern(9, 3 << 20);
    let obj = store
        .put_bytes(
            "batch-17",
            bytes.clone(),
            &PutOptions::default().owner("driver"),
        )
        .await
        .expect("put");
    assert_eq!(obj.node, c.head().node_id().to_string());
    let encoded = fleet_actors::Payload::bincode(&obj).unwrap();
    assert!(
        encoded.len() < 512,
        "the call's argument is {} bytes, not the object's {}",
        encoded.len(),
        obj.size
    );
    let read: Vec<u8> = engine.call("read", &obj, &opts()).await.expect("read");
    assert!(
        read == bytes,
        "the engine on the other node read the object intact"
    );
    assert_eq!(store.stats().bytes_served, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_cluster_cookie_gets_401_and_the_right_token_gets_the_bytes() {
    let c = cluster(&[], &[]).await;
    let producer = store_engine(&c, "trainer", "a").await;
    let obj = put_pattern(&producer, "w", 1 << 20, 3, None).await;
    let http = TestHttp::new();
    let url = obj.object_url();
    let none = http.call(Method::GET, &url, None, Bytes::new()).await;
    assert_eq!(none.status.as_u16(), 401, "{}", none.text);
    assert!(none.text.contains("cluster cookie"), "{}", none.text);
    let wrong = fleet_runtime::store::config::token_from_cookie("not-the-cookie");
    let bad = http
        .call(Method::GET, &url, Some(&wrong), Bytes::new())
        .await;
    assert_eq!(bad.status.as_u16(), 401);
    let stats_url = format!("{}/v1/stats", obj.url);
    assert_eq!(
        http.call(Method::GET, &stats_url, None, Bytes::new())
            .await
            .status
            .as_u16(),
        401
    );

    let token = fleet_runtime::store::config::token_from_cookie(c.cookie());
    let ok = http
        .send(Method::GET, &url, Some(&token), Bytes::new())
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(
        ok.headers()
            .get("x-fleet-checksum")
            .and_then(|v| v.to_str().ok()),
        Some(obj.checksum.to_string().as_str())
    );
    use http_body_util::BodyExt;
    let body = tokio::time::timeout(DEADLINE, ok.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert!(body.as_ref() == pattern(3, 1 << 20).as_slice());
    assert_eq!(
        stats(&producer).await.served,
        1,
        "only the authenticated request got bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_or_fetch_past_a_nodes_budget_is_refused_with_a_clear_error() {
    let c = cluster(&["--store-budget", "8MiB"], &["--store-budget", "64MiB"]).await;
    let small = store_engine(&c, "small", "a").await;
    let big = store_engine(&c, "big", "b").await;
    let first = put_pattern(&small, "first", 6 << 20, 1, None).await;
    let err = small
        .call::<_, ObjectRef>(
            "put_pattern",
            &PatternArgs {
                name: "second".into(),
                size: 4 << 20,
                seed: 2,
                ttl_ms: None,
            },
            &opts(),
        )
        .await
        .expect_err("over the budget");
    let text = err.to_string();
    assert!(
        text.contains("is full")
            && text.contains("8388608-byte budget")
            && text.contains("6291456 of")
            && text.contains("delete objects"),
        "{text}"
    );
    // A fetch into the full node is refused before a byte moves, and leaves nothing behind.
    let large = put_pattern(&big, "large", 5 << 20, 5, None).await;
    let err = small
        .call::<_, Fetched>("fetch", &large, &opts())
        .await
        .expect_err("no room for the copy");
    assert!(err.to_string().contains("is full"), "{err}");
    let s = stats(&small).await;
    assert_eq!(
        (s.objects, s.bytes, s.reserved, s.refused_full),
        (1, 6 << 20, 0, 2)
    );
    assert!(tmp_files(&s.dir).is_empty());
    assert_eq!(stats(&big).await.served, 0);

    // Deleting frees the room.
    let deleted: bool = small.call("delete", &first.id, &opts()).await.unwrap();
    assert!(deleted);
    let _: Fetched = small
        .call("fetch", &large, &opts())
        .await
        .expect("fits after the delete");
    put_pattern(&small, "second", 3 << 20, 2, None).await;
    assert_eq!(stats(&small).await.bytes, 8 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_lease_runs_out_is_swept_and_a_renewed_one_stays() {
    let c = cluster(&[], &[]).await;
    let producer = store_engine(&c, "trainer", "a").await;
    let consumer = store_engine(&c, "infer", "b").await;
    let expiring = put_pattern(&producer, "old", 1 << 20, 1, Some(300)).await;
    let renewed = put_pattern(&producer, "kept", 1 << 20, 2, Some(300)).await;
    let _: () = producer
        .call("renew", &(renewed.id, None::<u64>), &opts())
        .await
        .unwrap();
    let dir = stats(&producer).await.dir;
    // Both leases had the same deadline: once the first is swept, the second would be too
    // had the renewal not moved it.
    wait_until("the expired object to be swept", DEADLINE, || {
        let p = &producer;
        async move { (stats(p).await.expired == 1).then_some(()) }
    })
    .await
    .unwrap();
    let s = stats(&producer).await;
    assert_eq!((s.objects, s.bytes), (1, 1 << 20));
    assert!(
        !Path::new(&dir)
            .join("objects")
            .join(expiring.id.to_string())
            .exists(),
        "its file is gone"
    );
    assert!(Path::new(&dir)
        .join("objects")
        .join(renewed.id.to_string())
        .exists());
    let err = consumer
        .call::<_, Fetched>("fetch", &expiring, &opts())
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("is not in the store"), "{err}");
    let _: Fetched = consumer
        .call("fetch", &renewed, &opts())
        .await
        .expect("the renewed one is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_the_objects_own_node_gets_its_file_without_a_copy() {
    let c = cluster(&[], &[]).await;
    let producer = store_engine(&c, "trainer", "a").await;
    let neighbour = store_engine(&c, "infer", "a").await;
    let obj = put_pattern(&producer, "policy-v2", 4 << 20, 4, None).await;
    let got: Fetched = neighbour.call("fetch", &obj, &opts()).await.unwrap();
    let s = stats(&producer).await;
    assert_eq!(
        Path::new(&got.path),
        Path::new(&s.dir).join("objects").join(obj.id.to_string())
    );
    assert_eq!(got.checksum, obj.checksum);
    assert_eq!(
        (s.fetches, s.local_hits, s.served, s.objects),
        (0, 1, 0, 1),
        "no bytes moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_transfer_leaves_no_visible_object_on_the_fetcher() {
    let c = cluster(&[], &[]).await;
    let producer = store_engine(&c, "trainer", "a").await;
    let size = 256 << 20;
    let obj = put_pattern(&producer, "huge", size, 6, None).await;
    let store = c.scheduler().store().unwrap();
    let fetch = {
        let (store, obj) = (store.clone(), obj.clone());
        tokio::spawn(async move { store.fetch_to_local(&obj, None).await })
    };
    let dir = store.dir().display().to_string();
    // Hang the producer once bytes have arrived, so the transfer cannot finish first; then kill it.
    wait_until("the transfer to start", DEADLINE, || {
        let started = tmp_files(&dir)
            .iter()
            .any(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
        async move { started.then_some(()) }
    })
    .await
    .unwrap();
    c.stop_node(0);
    let arrived: u64 = tmp_files(&dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    eprintln!("producer hung after {arrived} of {size} bytes had arrived");
    c.kill_node(0);
    let r = tokio::time::timeout(Duration::from_secs(60), fetch)
        .await
        .expect("the fetch ends")
        .unwrap();
    let err =
        r.expect_err("a cut-off transfer fails (did it finish before the producer was hung?)");
    assert!(
        err.to_string().contains("unreachable") || err.to_string().contains("arrived damaged"),
        "{err}"
    );
    assert!(store.get(&obj.id).is_none());
    assert!(!store
        .dir()
        .join("objects")
        .join(obj.id.to_string())
        .exists());
    assert!(tmp_files(&dir).is_empty(), "the partial file is removed");
    assert_eq!(store.stats().reserved, 0, "its reservation is given back");
}

/// A fake store on a raw socket: answers any request with the given head and body, then
/// closes the connection.
async fn fake_store(head: String, body: Vec<u8>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..4 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await;
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_or_damaged_transfer_is_refused_and_leaves_nothing_behind() {
    let cluster = fleet_runtime::Cluster::local().start().await.unwrap();
    let store = cluster.store().unwrap();
    let size = 2u64 << 20;
    let good = pattern(11, size);
    let checksum = Checksum::of(&good);
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nx-fleet-checksum: {checksum}\r\nconnection: close\r\n\r\n");
    let mut damaged = good.clone();
    damaged[12345] ^= 1;
    let cases = [
        (
            "cut short",
            good[..(size as usize) / 2].to_vec(),
            "broke off",
        ),
        ("one byte flipped", damaged, "arrived damaged"),
    ];
    for (what, body, expect) in cases {
        let url = fake_store(head.clone(), body).await;
        let obj = ObjectRef {
            id: ObjectId::generate(),
            name: what.into(),
            size,
            checksum,
            owner: "test".into(),
            node: "fake#1".into(),
            url,
        };
        let err = store.fetch_to_local(&obj, None).await.expect_err(what);
        assert!(err.to_string().contains(expect), "{what}: {err}");
        assert!(store.get(&obj.id).is_none(), "{what}: no object");
        assert!(
            !store
                .dir()
                .join("objects")
                .join(obj.id.to_string())
                .exists(),
            "{what}"
        );
        assert!(
            tmp_files(&store.dir().display().to_string()).is_empty(),
            "{what}: no partial file"
        );
        let s = store.stats();
        assert_eq!((s.objects, s.reserved, s.fetches), (0, 0, 0), "{what}");
    }
    cluster.shutdown().await.unwrap();
}
