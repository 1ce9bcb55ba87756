//! `fleet status --head ADDR`: nodes, roles and workers of a running cluster.

use super::cluster_args::{resolve, SecurityArgs};
use super::node::parse_duration;
use crate::membership::{StatusReport, Transport, TransportConfig};
use anyhow::Context;
use std::fmt::Write;
use std::time::Duration;

/// Show the nodes (state, resources used and free), roles and workers (state, node, child
/// pid) of the cluster whose head listens at --head (default: $FLEET_HEAD, else
/// 127.0.0.1:7700, where `fleet head` listens by default).
///
/// Examples:
///
///   fleet status
///
///   FLEET_HEAD=10.0.0.5:7700 fleet status
///
///   fleet status --head 10.0.0.5:7700 --cookie-file /etc/fleet/cookie --json | jq .nodes
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The head's address, HOST:PORT.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "FLEET_HEAD",
        default_value = "127.0.0.1:7700"
    )]
    head: String,
    /// Print JSON instead of tables (for scripts).
    #[arg(long)]
    json: bool,
    /// Give up after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    security: SecurityArgs,
}

/// Fetches and prints the status.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let head_ip = resolve(&args.head)?.ip();
    let mut cfg = TransportConfig::loopback();
    cfg.cookie = args.security.cookie(&[head_ip])?;
    cfg.tls = args.security.tls()?;
    let transport = Transport::start(&format!("status-{:08x}", rand::random::<u32>()), &cfg)
        .await
        .context("starting a client")?;
    let report = crate::membership::fetch_status(&transport, &args.head, args.timeout)
        .await
        .with_context(|| {
            format!(
                "asking the head at {} for its status (is `fleet head` running there? give --head HOST:PORT or set FLEET_HEAD)",
                args.head
            )
        });
    transport.stop();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn cpus(millis: u64) -> String {
    format!("{:.1}", millis as f64 / 1000.0)
}

/// The report as readable tables.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "cluster {}\n", r.cluster_id);
    let _ = writeln!(
        out,
        "{:<28} {:<8} {:>8} {:>11} {:>13} {:<14} {:>7} {:>8}  labels",
        "NODE", "STATE", "PID", "CPU free", "MEM free MiB", "GPUs free", "workers", "beat ms"
    );
    for n in &r.nodes {
        let name = if n.is_head {
            format!("{} (head)", n.node)
        } else {
            n.node.clone()
        };
        let live = matches!(n.state.name(), "alive" | "suspect");
        let labels: Vec<String> = n
            .resources
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<28} {:<8} {:>8} {:>11} {:>13} {:<14} {:>7} {:>8}  {}",
            name,
            n.state.name(),
            n.pid,
            if live {
                format!(
                    "{}/{}",
                    cpus(n.free_cpu_millis),
                    cpus(n.resources.cpu_millis)
                )
            } else {
                "-".into()
            },
            if live {
                format!("{}/{}", n.free_mem_mib, n.resources.mem_mib)
            } else {
                "-".into()
            },
            if live {
                format!("{:?}/{}", n.free_gpus, n.resources.gpus.len())
            } else {
                "-".into()
            },
            n.workers,
            n.last_beat_ms,
            labels.join(",")
        );
        if let crate::membership::MemberState::Down { reason } = &n.state {
            let _ = writeln!(out, "    down: {reason}");
        }
    }
    if r.roles.is_empty() {
        let _ = writeln!(out, "\nno roles");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:<20} {:<28} {:<22} {:<10} {:>8}  ports",
        "WORKER", "KIND", "NODE", "STATE", "GPUs", "CHILD"
    );
    for (_, workers) in &r.roles {
        for w in workers {
            let id = match &w.alias_of {
                Some(a) => format!("{} (= {a})", w.worker),
                None => w.worker.clone(),
            };
            let _ = writeln!(
                out,
                "{:<20} {:<20} {:<28} {:<22} {:<10} {:>8}  {:?}",
                id,
                w.kind,
                w.node,
                w.state,
                format!("{:?}", w.gpus),
                w.child_pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                w.ports
            );
        }
    }
    out
}
