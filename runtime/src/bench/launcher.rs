//! A forward through the HTTP launcher against a direct keep-alive request to the same child,
//! throughput at 1 and 16 concurrent callers, and spawn-to-ready overhead over the child's own
//! start-up. The child is `fleet mock-llm` (`GET /health`), started from this executable.

use super::stats::{fmt, header, row, Samples};
use crate::Cluster;
use fleet_actors::{
    FleetError, HttpCall, HttpServiceSpec, Job, SchedulingSpec, WorkerId, WorkerKind,
};
use fleet_http::{send_with_retry, Client, HttpRequest, RetryPolicy};
use std::time::{Duration, Instant};

fn child_argv(fleet: &str) -> Vec<String> {
    vec![
        fleet.into(),
        "mock-llm".into(),
        "--port".into(),
        "{port}".into(),
    ]
}

async fn direct(client: &Client, base: &str) -> Result<(), FleetError> {
    let req = HttpRequest::get("/health");
    send_with_retry(
        client,
        base,
        &req,
        &RetryPolicy::idempotent(),
        std::future::pending(),
    )
    .await
    .map(|_| ())
    .map_err(|e| FleetError::internal(e.to_string()))
}

/// Time from spawning the child directly to its first 200 on `/health`, polling every 1 ms.
async fn own_startup(fleet: &str, port: u16) -> Result<Duration, FleetError> {
    let t = Instant::now();
    let mut child = tokio::process::Command::new(fleet)
        .args(["mock-llm", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(FleetError::internal)?;
    // What the child said, for an error that shows why it never answered.
    let said = |child: &mut tokio::process::Child| {
        let stderr = child.stderr.take();
        async move {
            use tokio::io::AsyncReadExt;
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut text)).await;
            }
            text
        }
    };
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let policy = RetryPolicy::idempotent()
        .max_attempts(1)
        .deadline(Duration::from_millis(200));
    loop {
        let req = HttpRequest::get("/health");
        if send_with_retry(&client, &base, &req, &policy, std::future::pending())
            .await
            .is_ok()
        {
            break;
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() > deadline {
            let _ = child.start_kill();
            let text = said(&mut child).await;
            return Err(FleetError::internal(format!(
                "the reference `fleet mock-llm --port {port}` {}; its output: {}",
                if exited {
                    "exited"
                } else {
                    "never answered within 20 s"
                },
                text.trim()
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let d = t.elapsed();
    let _ = child.kill().await;
    Ok(d)
}

/// Runs the launcher benchmarks with `fleet` as the child's executable.
pub async fn run(fleet: &str, iters: usize, spawn_rounds: usize) -> Result<String, FleetError> {
    // Ports from the node's default range, claimed host-wide: free ones, never fixed ones.
    let cluster = Cluster::local().start().await?;
    let s = cluster.scheduler().clone();
    let kind = WorkerKind::HttpService(HttpServiceSpec::new(child_argv(fleet)));
    let ws = s
        .create_workers(
            Job::new("svc", 1)
                .kind(kind.clone())
                .spec(SchedulingSpec::default().ports(1)),
        )
        .await?;
    s.get_workers("svc", Duration::from_secs(20)).await?;
    let w = WorkerId::new("svc", 0);
    let base = format!("http://127.0.0.1:{}", ws[0].ports[0]);
    let client = Client::new();
    let call = || HttpCall::get("/health").timeout(Duration::from_secs(5));

    // Latency, interleaved.
    let mut d_direct = Vec::new();
    let mut d_fwd = Vec::new();
    for i in 0..(iters + iters / 10) {
        // Alternate which goes first, so neither always runs on a warm cache.
        let (mut a, mut b) = (Duration::ZERO, Duration::ZERO);
        let mut status = 200;
        for k in 0..2 {
            if (i + k) % 2 == 0 {
                let t = Instant::now();
                direct(&client, &base).await?;
                a = t.elapsed();
            } else {
                let t = Instant::now();
                status = s.http(&w, call()).await?.status;
                b = t.elapsed();
            }
        }
        let r = fleet_actors::HttpResponseData {
            status,
            headers: vec![],
            body: vec![],
            attempts: 1,
        };
        if r.status != 200 {
            return Err(FleetError::internal(format!(
                "forward answered {}",
                r.status
            )));
        }
        if i >= iters / 10 {
            d_direct.push(a);
            d_fwd.push(b);
        }
    }
    let direct_s = Samples::new("direct keep-alive GET /health to the child", d_direct);
    let fwd_s = Samples::new("Scheduler::http → HttpLauncher → child", d_fwd);

    // Throughput at 1 and 16 concurrent callers.
    let mut tput = String::from("| callers | direct req/s | through the launcher req/s | ratio |\n| ---: | ---: | ---: | ---: |\n");
    for callers in [1usize, 16] {
        let per = (iters / callers).max(50);
        let t = Instant::now();
        let jobs: Vec<_> = (0..callers)
            .map(|_| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    for _ in 0..per {
                        direct(&client, &base).await?;
                    }
                    Ok::<_, FleetError>(())
                })
            })
            .collect();
        for j in jobs {
            j.await.map_err(FleetError::internal)??;
        }
        let direct_rate = (callers * per) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let jobs: Vec<_> = (0..callers)
            .map(|_| {
                let (s, w) = (s.clone(), w.clone());
                tokio::spawn(async move {
                    for _ in 0..per {
                        s.http(&w, HttpCall::get("/health").timeout(Duration::from_secs(5)))
                            .await?;
                    }
                    Ok::<_, FleetError>(())
                })
            })
            .collect();
        for j in jobs {
            j.await.map_err(FleetError::internal)??;
        }
        let fwd_rate = (callers * per) as f64 / t.elapsed().as_secs_f64();
        tput.push_str(&format!(
            "| {callers} | {direct_rate:.0} | {fwd_rate:.0} | {:.2} |\n",
            fwd_rate / direct_rate
        ));
    }
    s.delete_workers(None, false).await?;

    // Spawn to ready, against the child's own start-up.
    let mut own = Vec::new();
    let mut ours = Vec::new();
    for round in 0..spawn_rounds + 1 {
        let lease = cluster.reserve_ports(1).await?;
        let o = own_startup(fleet, lease.ports[0]).await;
        cluster.release_ports(lease.id);
        let o = o?;
        let t = Instant::now();
        s.create_workers(
            Job::new("spawn", 1)
                .kind(kind.clone())
                .spec(SchedulingSpec::default().ports(1)),
        )
        .await?;
        s.get_workers("spawn", Duration::from_secs(20)).await?;
        let d = t.elapsed();
        s.delete_workers(Some("spawn"), false).await?;
        if round > 0 {
            own.push(o);
            ours.push(d);
        }
    }
    cluster.shutdown().await?;
    let own_s = Samples::new(
        "child's own start-up (spawn → first 200 on /health, 1 ms polling)",
        own,
    );
    let ours_s = Samples::new("create_workers + get_workers of an HttpService", ours);
    let overhead = ours_s.p50().saturating_sub(own_s.p50());
    Ok(format!(
        "{}\n{}\n{}\n\nThroughput, {iters} requests split over the callers:\n\n{tput}\n{}\n{}\n{}\n\nSpawn-to-ready overhead (median difference): {}\n",
        header(),
        row(&direct_s, None),
        row(&fwd_s, Some(&direct_s)),
        header(),
        row(&own_s, None),
        row(&ours_s, Some(&own_s)),
        fmt(overhead),
    ))
}
