//! The cluster port against hostile peers, over real `fleet head` and `fleet node` processes and
//! raw sockets: idle, slowloris and half-finished-TLS connections do not keep real nodes out,
//! a connection that does not authenticate is closed at its deadline, partial huge frames do
//! not grow the head, a head out of file descriptors backs off with a bounded log, and a
//! loopback cluster without a cookie uses a random one in a private file.

use fleet_tests::head_proc::{HeadProc, HeadSpec};
use fleet_tests::wait_until;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const JOIN: Duration = Duration::from_secs(60);

/// A TLS record header announcing a 512-byte handshake message that comes a byte at a time.
const TLS_PARTIAL_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00];

/// Opens `n` connections to `addr`; `feed` says what each sends first.
async fn open_many(addr: &str, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("junk connection {i} to {addr}: {e}"));
        if !first.is_empty() {
            s.write_all(first).await.unwrap();
        }
        v.push(s);
    }
    v
}

/// Opens up to `n` idle connections to `addr`, stopping at the first that the kernel does not
/// complete within 3 s (a full accept queue).
async fn open_up_to(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => v.push(s),
            _ => break,
        }
    }
    v
}

/// Slowloris: each connection sends one more byte of a frame header every 200 ms, forever
/// (until the task is aborted); a connection the head closed is left alone.
fn trickle(conns: Vec<TcpStream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns: Vec<Option<TcpStream>> = conns.into_iter().map(Some).collect();
        loop {
            for c in conns.iter_mut() {
                if let Some(s) = c {
                    if s.write_all(&[0]).await.is_err() {
                        *c = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Waits until the head closed `s` (EOF or reset).
async fn wait_closed(s: &mut TcpStream, deadline: Duration) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(deadline, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| format!("the head did not close the connection within {deadline:?}"))
}

async fn held_junk_does_not_keep_a_node_out(spec: HeadSpec, first: &[u8]) {
    let mut head = HeadProc::start(spec.arg("--auth-timeout").arg("120s"))
        .await
        .unwrap();
    let base = head.open_fds();
    let idle = open_many(head.addr(), 150, &[]).await;
    let slow = open_many(head.addr(), 150, first).await;
    let slow = trickle(slow);
    head.spawn_node("real").unwrap();
    head.wait_joined("real", JOIN).await.unwrap();
    // The deadline is 120 s, so only the pending limit (128) explains a bounded count: the
    // oldest unauthenticated connections were closed to make room.
    let bound = base + 128 + 16;
    wait_until(
        "the head to hold a bounded number of descriptors",
        JOIN,
        || {
            let n = head.open_fds();
            async move { (n <= bound).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {} open, base {base}", head.open_fds()));
    slow.abort();
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_plain_head_while_300_idle_and_slowloris_connections_are_held() {
    held_junk_does_not_keep_a_node_out(HeadSpec::new(), &[0, 0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_tls_head_while_300_idle_and_half_finished_tls_handshakes_are_held() {
    held_junk_does_not_keep_a_node_out(HeadSpec::new().tls(), TLS_PARTIAL_HELLO).await;
}

async fn deadline_closes(spec: HeadSpec, first: &'static [u8]) -> HeadProc {
    let mut head = HeadProc::start(spec.arg("--auth-timeout").arg("1s"))
        .await
        .unwrap();
    // A real node joins first; its session outlives the deadline of its connection.
    head.spawn_node("real").unwrap();
    head.wait_joined("real", JOIN).await.unwrap();
    let mut idle = TcpStream::connect(head.addr()).await.unwrap();
    let slow = TcpStream::connect(head.addr()).await.unwrap();
    let (mut slow_r, mut slow_w) = slow.into_split();
    let feeder = tokio::spawn(async move {
        // Never idle for long: an idle timer would not catch it, the deadline does.
        let _ = slow_w.write_all(first).await;
        while slow_w.write_all(&[0]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_closed(&mut idle, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("idle: {e}; head log:\n{}", head.stderr()));
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !matches!(slow_r.read(&mut buf).await, Ok(0) | Err(_)) {}
    })
    .await
    .unwrap_or_else(|_| panic!("slowloris was not closed; head log:\n{}", head.stderr()));
    feeder.abort();
    // The junk was closed a deadline after the node's own connection was accepted: the node,
    // authenticated, is still a member (a closed session marks it down at once).
    let out = head.stdout();
    assert!(
        !out.lines().any(
            |l| l.starts_with("node real#") && (l.contains(" is down") || l.ends_with(" left"))
        ),
        "the authenticated node lost its session:\n{out}"
    );
    let log = head.stderr();
    assert!(
        log.contains("--auth-timeout"),
        "the head says which limit closed it:\n{log}"
    );
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_plain_connection_is_closed_at_the_auth_deadline() {
    let head = deadline_closes(HeadSpec::new(), &[]).await;
    // The head's refusal names the limit, not a wrong cookie.
    wait_until("the refusal naming the deadline", JOIN, || {
        let out = head.stdout();
        async move {
            out.lines()
                .any(|l| l.starts_with("refused ") && l.contains("--auth-timeout"))
                .then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; head stdout:\n{}", head.stdout()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_tls_connection_is_closed_at_the_auth_deadline() {
    let _head = deadline_closes(HeadSpec::new().tls(), TLS_PARTIAL_HELLO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_16_mib_frames_from_32_unauthenticated_peers_do_not_grow_the_head() {
    let mut head = HeadProc::start(HeadSpec::new().arg("--auth-timeout").arg("120s"))
        .await
        .unwrap();
    let before = head.memory().unwrap();
    let len: u64 = 16 * 1024 * 1024 - 64;
    let conns = open_many(head.addr(), 32, &len.to_be_bytes()).await;
    // Each peer pushes up to 15 MiB of the frame, for as long as the head (or the kernel's
    // buffers) take it; a head that does not read stops it early.
    let pushes: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let chunk = vec![0xabu8; 1 << 20];
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    for _ in 0..15 {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                s
            })
        })
        .collect();
    let mut held = vec![];
    for p in pushes {
        held.push(p.await.unwrap());
    }
    let after = head.memory().unwrap();
    let grew_mib = after.hwm_kib.saturating_sub(before.hwm_kib) / 1024;
    println!(
        "head VmHWM {} -> {} KiB, VmRSS {} -> {} KiB",
        before.hwm_kib, after.hwm_kib, before.rss_kib, after.rss_kib
    );
    assert!(
        grew_mib < 64,
        "32 partial 16 MiB frames grew the head's peak memory by {grew_mib} MiB (from {} to {} KiB)",
        before.hwm_kib,
        after.hwm_kib
    );
    // And a real node still joins while they are held.
    head.spawn_node("real").unwrap();
    head.wait_joined("real", JOIN).await.unwrap();
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_out_of_file_descriptors_backs_off_logs_a_bounded_number_of_lines_and_admits_a_node()
{
    let mut head = HeadProc::start(HeadSpec::new().nofile(96)).await.unwrap();
    let junk = open_up_to(head.addr(), 300).await;
    assert!(junk.len() > 96, "only {} connections opened", junk.len());
    wait_until(
        "the head to report that it is out of file descriptors",
        JOIN,
        || {
            let hit = head.stderr().contains("Too many open files");
            async move { hit.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; head log:\n{}", head.stderr()));
    head.spawn_node("real").unwrap();
    head.wait_joined("real", JOIN).await.unwrap();
    let log = head.stderr();
    println!(
        "head stderr: {} bytes, {} lines",
        head.stderr_len(),
        log.lines().count()
    );
    let accept_lines = log
        .lines()
        .filter(|l| l.contains("cannot accept a connection"))
        .count();
    assert!(
        accept_lines <= 20,
        "{accept_lines} lines about failed accepts (at most one per 10 s is the budget)"
    );
    assert!(
        head.stderr_len() < 4 << 20,
        "the head logged {} bytes while out of descriptors",
        head.stderr_len()
    );
    drop(junk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_head_without_a_cookie_uses_a_random_cookie_in_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let home = std::env::temp_dir().join(format!("fleet-cookie-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let spec = HeadSpec::new()
        .without_cookie()
        .env("HOME", home.to_string_lossy())
        .env("XDG_RUNTIME_DIR", "");
    let mut head = HeadProc::start(spec).await.unwrap();
    let file = home.join(".fleet").join("cookie");
    let cookie = std::fs::read_to_string(&file).unwrap();
    assert_eq!(cookie.trim().len(), 32, "{cookie:?}");
    assert_ne!(cookie.trim(), "fleet-loopback-only");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only its user can read it");
    // A node of the same user, without a cookie, reads the file and joins.
    head.spawn_node_with_cookie("same-user", None).unwrap();
    head.wait_joined("same-user", JOIN).await.unwrap();
    // The old fixed cookie no longer gets in.
    head.spawn_node_with_cookie("fixed", Some("fleet-loopback-only"))
        .unwrap();
    wait_until("the fixed-cookie node to be refused", JOIN, || {
        let log = head.node_log("fixed");
        async move { log.contains("cookie does not match").then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; its log:\n{}", head.node_log("fixed")));
    assert!(!head.stdout().contains("node fixed#"));
    drop(head);
    let _ = std::fs::remove_dir_all(&home);
}
