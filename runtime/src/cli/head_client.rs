//! What every client of a running head takes: where the head is, how long to wait, and the
//! cluster's cookie and TLS; and the session to its job service built from them.

use super::cluster_args::{resolve, SecurityArgs};
use super::node::parse_duration;
use crate::jobs::JobClient;
use crate::membership::TransportConfig;
use anyhow::Context;
use std::time::Duration;

/// Where the head is and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct HeadClientArgs {
    /// The head's cluster address, HOST:PORT (what `fleet head --listen` printed).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "FLEET_HEAD",
        default_value = "127.0.0.1:7700"
    )]
    pub head: String,
    /// Give up on an answer from the head after this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl HeadClientArgs {
    /// A session to the head's job service.
    pub async fn connect(&self) -> anyhow::Result<JobClient> {
        connect(&self.head, &self.security, self.timeout).await
    }
}

/// A session to the job service of the head at `head`.
pub async fn connect(
    head: &str,
    security: &SecurityArgs,
    timeout: Duration,
) -> anyhow::Result<JobClient> {
    let head_ip = resolve(head)?.ip();
    let mut cfg = TransportConfig::loopback();
    cfg.cookie = security.cookie(&[head_ip])?;
    cfg.tls = security.tls()?;
    JobClient::connect(head, &cfg, timeout).await.with_context(|| {
        format!(
            "reaching the head at {head} (is `fleet head` running there? give --head HOST:PORT or set FLEET_HEAD)"
        )
    })
}
