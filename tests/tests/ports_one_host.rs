//! One machine just works: fleet processes on one host never hand out the same worker port,
//! a killed process leaks no port claims, and a port range inside the kernel's ephemeral range
//! is warned about. Real processes: a `fleet node` beside an in-process head, and copies of
//! this test binary holding ports.

use fleet_actors::{Job, SchedulingSpec};
use fleet_runtime::membership::MemberEvent;
use fleet_runtime::node::PortAllocator;
use fleet_runtime::Cluster;
use fleet_tests::{fleet_bin, wait_until, PipedChild};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const HOLD_ENV: &str = "FLEET_TEST_HOLD_PORTS";

/// Not a test on its own: with `FLEET_TEST_HOLD_PORTS=LO-HI-COUNT` set (by the tests below,
/// which run this binary as a child), it reserves COUNT ports of LO..=HI, prints
/// `holding P1,P2,...` and then waits (at most 120 s) to be killed.
#[test]
fn port_holder_child_process() {
    let Ok(spec) = std::env::var(HOLD_ENV) else {
        return;
    };
    let n: Vec<u16> = spec.split('-').map(|x| x.parse().unwrap()).collect();
    let mut a = PortAllocator::new(n[0], n[1]);
    let lease = a.reserve(n[2]).unwrap();
    let ports: Vec<String> = lease.ports.iter().map(u16::to_string).collect();
    println!("holding {}", ports.join(","));
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    for _ in 0..1200 {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_holder(lo: u16, hi: u16, count: u16) -> PipedChild {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "port_holder_child_process",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(HOLD_ENV, format!("{lo}-{hi}-{count}"));
    PipedChild::spawn("holder", &mut cmd).unwrap()
}

async fn held_by(child: &PipedChild) -> Vec<u16> {
    child
        .wait_for_stdout(Duration::from_secs(30), |l| {
            // libtest prints `test port_holder_child_process ... ` before it on the same line.
            l.split_once("holding ")
                .map(|(_, p)| p.split(',').map(|x| x.parse::<u16>().unwrap()).collect())
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_and_a_fleet_node_on_one_host_with_the_same_range_never_hand_out_the_same_port() {
    let (lo, hi) = (28700u16, 28799u16);
    let cookie = format!("ports-one-host-{}", std::process::id());
    let head = Cluster::head()
        .cookie(cookie.clone())
        .cpus(64.0)
        .port_range(lo, hi)
        .label("side", "head")
        .start()
        .await
        .unwrap();
    let mut events = head.member_events();
    let mut cmd = Command::new(fleet_bin());
    cmd.arg("node")
        .arg("--join")
        .arg(format!("127.0.0.1:{}", head.listen_port()))
        .arg("--name")
        .arg("same-host")
        .arg("--cpus")
        .arg("64")
        .arg("--port-range")
        .arg(format!("{lo}-{hi}"))
        .arg("--label")
        .arg("side=node")
        .env("FLEET_COOKIE", &cookie)
        .env("NO_COLOR", "1")
        .env("CUDA_VISIBLE_DEVICES", "");
    let _node = PipedChild::spawn("node", &mut cmd).unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(MemberEvent::Joined { resources, .. }) = events.recv().await {
                if resources.labels.get("side").map(String::as_str) == Some("node") {
                    return;
                }
            }
        }
    })
    .await
    .expect("the fleet node joined the head within 30 s");

    // Both nodes start from the bottom of the same range at the same moment.
    let s = head.scheduler();
    let job = |role: &str, side: &str| {
        Job::new(role, 10).spec(SchedulingSpec::default().ports(4).node_label("side", side))
    };
    let (on_head, on_node) = tokio::join!(
        s.create_workers(job("h", "head")),
        s.create_workers(job("n", "node"))
    );
    let (on_head, on_node) = (on_head.unwrap(), on_node.unwrap());
    let mut seen = BTreeSet::new();
    for w in on_head.iter().chain(&on_node) {
        assert_eq!(w.ports.len(), 4, "{w:?}");
        for p in &w.ports {
            assert!((lo..=hi).contains(p), "port {p} outside the range");
            assert!(
                seen.insert(*p),
                "port {p} handed out twice (worker {})",
                w.id
            );
        }
    }
    assert_eq!(seen.len(), 80);
    assert!(on_head.iter().all(|w| &w.node == head.node_id()));
    assert!(on_node.iter().all(|w| &w.node != head.node_id()));
    head.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_claim_is_released_when_its_holder_process_is_sigkilled() {
    let (lo, hi) = (28900u16, 28903u16);
    let mut holder = spawn_holder(lo, hi, 4);
    let held: BTreeSet<u16> = held_by(&holder).await.into_iter().collect();
    assert_eq!(held, (lo..=hi).collect());

    // While it lives, this process gets none of them, and the error says why and what to do.
    let mut mine = PortAllocator::new(lo, hi);
    let err = mine.reserve(1).unwrap_err().to_string();
    assert!(
        err.contains("4 claimed by other fleet processes on this host")
            && err.contains(&format!("{lo}-{hi}"))
            && err.contains("--port-range"),
        "{err}"
    );

    // SAFETY: kill of the pid of a child this test started.
    unsafe {
        libc::kill(holder.pid() as i32, libc::SIGKILL);
    }
    wait_until("the holder to exit", Duration::from_secs(10), || {
        let done = holder.try_wait().is_some();
        async move { done.then_some(()) }
    })
    .await
    .unwrap();
    let lease = mine.reserve(4).expect("the dead holder's claims are gone");
    assert_eq!(lease.ports.into_iter().collect::<BTreeSet<_>>(), held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_in_several_processes_with_one_range_are_disjoint() {
    let (lo, hi) = (28800u16, 28899u16);
    // Three holders race for 25 ports each while this process's node takes 25 more.
    let holders: Vec<PipedChild> = (0..3).map(|_| spawn_holder(lo, hi, 25)).collect();
    // Without a store: its port would be the 101st of this 100-port range.
    let cluster = std::sync::Arc::new(
        Cluster::local()
            .port_range(lo, hi)
            .no_store()
            .start()
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let c = cluster.clone();
            tokio::spawn(async move { c.reserve_ports(1).await })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for t in tasks {
        for p in t.await.unwrap().unwrap().ports {
            assert!(seen.insert(p), "port {p} handed out twice in this process");
        }
    }
    for h in &holders {
        for p in held_by(h).await {
            assert!(seen.insert(p), "port {p} handed out twice across processes");
        }
    }
    assert_eq!(seen.len(), 100);
    drop(holders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_warns_when_its_port_range_overlaps_the_ephemeral_range() {
    let Some((elo, ehi)) =
        std::fs::read_to_string(fleet_runtime::node::ports::EPHEMERAL_RANGE_FILE)
            .ok()
            .and_then(|t| fleet_runtime::node::ports::parse_ephemeral_range(&t))
    else {
        eprintln!("no ephemeral range file on this host; nothing to warn about");
        return;
    };
    let lo = elo.saturating_add(ehi.saturating_sub(elo) / 2);
    let hi = lo.saturating_add(9).min(ehi);
    let out = Command::new(fleet_bin())
        .args(["node", "--serve-for", "0s", "--port-range"])
        .arg(format!("{lo}-{hi}"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("overlaps the kernel's ephemeral port range"))
        .unwrap_or_else(|| panic!("no ephemeral-range warning in:\n{stderr}"));
    assert!(
        line.contains(&format!("{lo}-{hi}"))
            && line.contains(&format!("{elo}-{ehi}"))
            && line.contains("--port-range"),
        "{line}"
    );

    // The default range draws no such warning.
    let out = Command::new(fleet_bin())
        .args(["node", "--serve-for", "0s"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (dlo, dhi) = fleet_runtime::node::ports::DEFAULT_PORT_RANGE;
    if dhi < elo || dlo > ehi {
        assert!(!stderr.contains("ephemeral port range"), "{stderr}");
    }
}
