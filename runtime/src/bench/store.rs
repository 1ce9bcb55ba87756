//! `fleet bench store`: an object moved between the stores of two processes on loopback,
//! against a raw TCP copy of the same bytes in the same run, and the same-node hand-off.
//!
//! The producer is a child process (`fleet bench store-peer`) with its own store: it writes
//! the object (deterministic bytes) into it, and also serves the object's file raw on a TCP
//! port. The consumer (this process) then alternates, round by round:
//!
//! * **store**: [`Store::fetch_to_local`] of the object: HTTP GET, chunked, checksummed while
//!   written, renamed into place, entered in the catalog; then deleted for the next round;
//! * **raw**: connect to the raw port; the peer `tokio::io::copy_buf`s the file (4 MiB
//!   `BufReader`) into the socket, and this side `tokio::io::copy`s the socket into a file
//!   (4 MiB `BufWriter`) in the same destination directory; no checksum, no framing.
//!
//! The hand-off: a consumer on the object's own node asks for it and gets the path
//! (`fetch_to_local` on a local object; no bytes move).

use crate::store::engine::write_pattern;
use crate::store::{ObjectRef, PutOptions, Store, StoreConfig};
use fleet_actors::FleetError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// What the peer prints once its object is in place.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    obj: ObjectRef,
    raw: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::internal(format!("bench store: {what}: {e}"))
}

fn config(dir: &Option<PathBuf>, size: u64) -> Result<StoreConfig, FleetError> {
    let cookie = std::env::var("FLEET_COOKIE").map_err(|_| err("FLEET_COOKIE", "not set"))?;
    let mut c = StoreConfig::new(&cookie, std::net::Ipv4Addr::LOCALHOST.into());
    c.root = dir.clone();
    c.budget = Some(size.saturating_mul(3).max(64 << 20));
    Ok(c)
}

/// The producer process: a store with one object of `size` bytes, and a raw TCP server of the
/// same file; runs until its stdin closes.
pub async fn peer(size: u64, dir: Option<PathBuf>) -> Result<(), FleetError> {
    let store = Store::start(
        &format!("bench-producer-{}", std::process::id()),
        config(&dir, size)?,
    )
    .await?;
    let mut w = store.writer(
        "bench-weights",
        Some(size),
        &PutOptions::default().owner("bench"),
    )?;
    let obj = tokio::task::spawn_blocking(move || {
        write_pattern(&mut w, 42, size).map_err(|e| err("writing the object", e))?;
        w.commit().map_err(FleetError::from)
    })
    .await
    .map_err(|e| err("writer thread", e))??;
    let (obj, path) = obj;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| err("binding the raw port", e))?;
    let raw = listener
        .local_addr()
        .map_err(|e| err("raw port", e))?
        .to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let path = path.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                if let Ok(f) = tokio::fs::File::open(&path).await {
                    let mut r = tokio::io::BufReader::with_capacity(4 << 20, f);
                    let _ = tokio::io::copy_buf(&mut r, &mut sock).await;
                    let _ = sock.shutdown().await;
                }
            });
        }
    });
    let line = serde_json::to_string(&Ready { obj, raw }).map_err(|e| err("ready line", e))?;
    println!("{line}");
    // Until the parent closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
    })
    .await;
    store.shutdown();
    Ok(())
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn raw_copy(addr: &str, dest: &std::path::Path) -> Result<u64, FleetError> {
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| err("connecting to the raw port", e))?;
    let _ = sock.set_nodelay(true);
    let f = tokio::fs::File::create(dest)
        .await
        .map_err(|e| err("creating the raw copy", e))?;
    let mut w = tokio::io::BufWriter::with_capacity(4 << 20, f);
    let n = tokio::io::copy(&mut sock, &mut w)
        .await
        .map_err(|e| err("raw copy", e))?;
    w.flush().await.map_err(|e| err("raw copy flush", e))?;
    Ok(n)
}

/// Runs the benchmark and returns its Markdown table.
pub async fn run(
    fleet: &str,
    size: u64,
    rounds: usize,
    dir: Option<PathBuf>,
) -> Result<String, FleetError> {
    let cookie = format!("{:032x}", rand::random::<u128>());
    let mut cmd = tokio::process::Command::new(fleet);
    cmd.arg("bench")
        .arg("store-peer")
        .arg("--size")
        .arg(size.to_string())
        .env("FLEET_COOKIE", &cookie)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(d) = &dir {
        cmd.arg("--dir").arg(d);
    }
    let mut child = cmd.spawn().map_err(|e| err("starting the peer", e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| err("peer", "no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready: Ready = tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.starts_with('{') => {
                    return serde_json::from_str(&l).map_err(|e| err("peer's ready line", e))
                }
                Ok(Some(_)) => continue,
                Ok(None) => return Err(err("peer", "exited before it was ready")),
                Err(e) => return Err(err("reading the peer", e)),
            }
        }
    })
    .await
    .map_err(|_| err("peer", "not ready within 300 s"))??;

    let mut cfg = StoreConfig::new(&cookie, std::net::Ipv4Addr::LOCALHOST.into());
    cfg.root = dir.clone();
    cfg.budget = Some(size.saturating_mul(3).max(64 << 20));
    let store = Store::start(&format!("bench-consumer-{}", std::process::id()), cfg).await?;
    let raw_dest = store.dir().join("raw-copy");
    let (mut t_store, mut t_raw) = (Vec::new(), Vec::new());
    // One warm-up of each (page cache, connection pool, allocator), then the rounds.
    for round in 0..=rounds {
        let t = Instant::now();
        let p = store.fetch_to_local(&ready.obj, None).await?;
        let d_store = t.elapsed();
        let got = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if got != size {
            return Err(err("store fetch", format!("{got} of {size} bytes")));
        }
        store.delete(&ready.obj.id);
        let t = Instant::now();
        let n = raw_copy(&ready.raw, &raw_dest).await?;
        let d_raw = t.elapsed();
        let _ = std::fs::remove_file(&raw_dest);
        if n != size {
            return Err(err("raw copy", format!("{n} of {size} bytes")));
        }
        if round > 0 {
            t_store.push(d_store);
            t_raw.push(d_raw);
        }
    }
    // Same-node hand-off: an object put on this node, asked for by a consumer on this node.
    let mut w = store.writer("local-weights", Some(size), &PutOptions::default())?;
    let (local, _) = tokio::task::spawn_blocking(move || {
        write_pattern(&mut w, 7, size).map_err(|e| err("writing", e))?;
        w.commit().map_err(FleetError::from)
    })
    .await
    .map_err(|e| err("writer thread", e))??;
    let mut t_hand = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let p = store.fetch_to_local(&local, None).await?;
        t_hand.push(t.elapsed());
        std::hint::black_box(p);
    }
    store.shutdown();
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = child.kill().await;

    let (ms, mr, mh) = (median(t_store), median(t_raw), median(t_hand));
    let mib = size as f64 / (1 << 20) as f64;
    let mut out = String::new();
    out.push_str(&format!(
        "### Object store: {mib:.0} MiB between two processes on loopback ({rounds} rounds, medians)\n\n"
    ));
    out.push_str("| path | time | throughput | vs raw |\n| --- | --- | --- | --- |\n");
    out.push_str(&format!(
        "| raw TCP copy into a file (`tokio::io::copy`) | {:.1} ms | {:.2} GB/s | 1.00x |\n",
        mr.as_secs_f64() * 1e3,
        gbps(size, mr)
    ));
    out.push_str(&format!(
        "| store fetch_to_local (HTTP, chunked, XXH3 checked, renamed) | {:.1} ms | {:.2} GB/s | {:.2}x |\n",
        ms.as_secs_f64() * 1e3,
        gbps(size, ms),
        mr.as_secs_f64() / ms.as_secs_f64()
    ));
    out.push_str(&format!(
        "| same-node hand-off (fetch_to_local of a local object: its path, no bytes move) | {:.2} us | - | - |\n",
        mh.as_secs_f64() * 1e6,
    ));
    Ok(out)
}
