//! A driver program for tests of [`fleet_runtime::Cluster::connect`]: attaches to the head at
//! `ADDR` (cookie from FLEET_COOKIE), creates role `ROLE` of `N` HTTP-service workers that run
//! `FLEET mock-llm --port {port}` (real child processes on the nodes), waits until they answer,
//! prints `ready`, and then waits to be killed (at most `--hold`, 300 s by default, so a test
//! that forgets it leaves nothing running for long).
//!
//! Usage: `fleet-test-driver ADDR FLEET ROLE N [HOLD_SECS]`

use fleet_actors::{HttpServiceSpec, Job, SchedulingSpec, WorkerKind};
use fleet_runtime::Cluster;
use std::io::Write;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, fleet, role, n, rest @ ..] = args.as_slice() else {
        return Err("usage: fleet-test-driver ADDR FLEET ROLE N [HOLD_SECS]".into());
    };
    let n: u32 = n.parse()?;
    let hold: u64 = rest.first().map(|h| h.parse()).transpose()?.unwrap_or(300);
    let mut b = Cluster::connect(addr.as_str()).timeout(Duration::from_secs(60));
    if let Ok(c) = std::env::var("FLEET_COOKIE") {
        b = b.cookie(c);
    }
    let cluster = b.start().await?;
    let s = cluster.scheduler();
    let kind = WorkerKind::HttpService(
        HttpServiceSpec::new([fleet.as_str(), "mock-llm", "--port", "{port}"])
            .ready_within(Duration::from_secs(30)),
    );
    let job = Job::new(role.as_str(), n)
        .kind(kind)
        .spec(SchedulingSpec::default().ports(1));
    s.create_workers(job).await?;
    s.get_workers(role, Duration::from_secs(60)).await?;
    println!("ready");
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    cluster.shutdown().await?;
    Ok(())
}
