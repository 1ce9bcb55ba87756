//! Flags shared by `fleet head`, `fleet node` and `fleet status`: what a node offers, and how
//! fleet processes authenticate each other (cookie, TLS).

use crate::membership::port::PortLimits;
use crate::membership::{loopback_cookie, TlsConfig, TlsFiles};
use crate::node::resources::NodeResources;
use crate::node::system;
use anyhow::Context;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// What this node offers to workers.
#[derive(Debug, Clone, clap::Args)]
pub struct ResourceArgs {
    /// This node's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// CPU cores to offer (default: the machine's logical CPUs).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory to offer in MiB (default: the machine's total).
    #[arg(long)]
    pub mem_mib: Option<u64>,
    /// GPU ids to offer, comma separated (default: CUDA_VISIBLE_DEVICES, else the driver's GPUs).
    #[arg(long, value_delimiter = ',')]
    pub gpus: Option<Vec<u32>>,
    /// Ports handed to workers, LO-HI. Keep it outside the kernel's ephemeral range
    /// (/proc/sys/net/ipv4/ip_local_port_range); nodes on one host claim ports host-wide, so
    /// they may share a range.
    #[arg(long, default_value = "20000-29999", value_parser = super::node::parse_range)]
    pub port_range: (u16, u16),
    /// A `key=value` label for placement constraints (repeatable, or comma separated).
    #[arg(long = "label", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

impl ResourceArgs {
    /// The node's name.
    pub fn node_name(&self, default: &str) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default.to_string())
        })
    }

    /// The resources, machine defaults filled in.
    pub fn resources(&self) -> NodeResources {
        NodeResources {
            cpu_millis: self
                .cpus
                .map(|c| (c.max(0.0) * 1000.0).round() as u64)
                .unwrap_or_else(|| system::cpu_count() * 1000),
            mem_mib: self.mem_mib.unwrap_or_else(system::mem_mib),
            gpus: self.gpus.clone().unwrap_or_else(system::detect_gpus),
            port_range: self.port_range,
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        }
    }
}

/// How fleet processes authenticate each other.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    /// File holding the cluster's cookie (a shared secret; required on any non-loopback
    /// address unless FLEET_COOKIE is set).
    #[arg(long)]
    pub cookie_file: Option<PathBuf>,
    /// This node's TLS certificate (PEM); turns TLS on, with --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This node's TLS private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA that signed every node's certificate (PEM); peers without one are refused.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl SecurityArgs {
    /// The cookie: `--cookie-file`, else `FLEET_COOKIE`, else (only when every address in
    /// `addrs` is loopback) the user's loopback cookie file, created if missing
    /// ([`loopback_cookie`]).
    pub fn cookie(&self, addrs: &[IpAddr]) -> anyhow::Result<String> {
        if let Some(path) = &self.cookie_file {
            let c = std::fs::read_to_string(path)
                .with_context(|| format!("reading the cookie file {}", path.display()))?;
            let c = c.trim().to_string();
            anyhow::ensure!(!c.is_empty(), "the cookie file {} is empty", path.display());
            return Ok(c);
        }
        if let Some(c) = crate::secrets::take("FLEET_COOKIE") {
            let c = c.trim().to_string();
            anyhow::ensure!(!c.is_empty(), "FLEET_COOKIE is set but empty");
            return Ok(c);
        }
        if let Some(ip) = addrs.iter().find(|ip| !ip.is_loopback()) {
            anyhow::bail!(
                "a cookie is required on a non-loopback address ({ip}): give --cookie-file FILE or set FLEET_COOKIE, the same on every node"
            );
        }
        Ok(loopback_cookie::load_or_create()?)
    }

    /// The TLS configuration, if asked for.
    pub fn tls(&self) -> anyhow::Result<Option<TlsConfig>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsConfig::load(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })?)),
            _ => Ok(None),
        }
    }
}

/// Limits on connections to this process's cluster port that have not authenticated yet.
#[derive(Debug, Clone, clap::Args)]
pub struct PortLimitArgs {
    /// A connection must finish the TLS handshake and the cookie challenge within this long,
    /// or it is closed.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_duration)]
    pub auth_timeout: std::time::Duration,
    /// At most this many connections may be authenticating at once; one more closes the
    /// oldest.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_handshakes: u32,
}

impl PortLimitArgs {
    /// The limits (the frame limit before authentication is fixed at its default).
    pub fn limits(&self) -> PortLimits {
        PortLimits {
            auth_timeout: self.auth_timeout,
            max_pending: self.max_pending_handshakes as usize,
            ..PortLimits::default()
        }
    }
}

/// Resolves `HOST:PORT` to its first address.
pub fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{addr:?} resolves to no address"))
}

/// The node's object store (the bulk data plane; see `fleet_runtime::store`).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory for the object store; objects go to DIR/<node>/ (default
    /// /dev/shm/fleet-store-<uid> when /dev/shm exists, else the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// Byte budget of the object store, e.g. 4GiB or 512MiB (default: 25% of its file
    /// system, at most 4 GiB when it is not /dev/shm). A put past it is refused.
    #[arg(long, value_name = "BYTES", value_parser = crate::store::config::parse_bytes)]
    pub store_budget: Option<u64>,
    /// Run this node without an object store.
    #[arg(long, conflicts_with_all = ["store_dir", "store_budget"])]
    pub no_store: bool,
}

impl StoreArgs {
    /// The store's config for a node with this cookie listening on `ip`, or `None` with
    /// `--no-store`.
    pub fn config(&self, cookie: &str, ip: IpAddr) -> Option<crate::store::StoreConfig> {
        if self.no_store {
            return None;
        }
        let mut c = crate::store::StoreConfig::new(cookie, ip);
        c.root = self.store_dir.clone();
        c.budget = self.store_budget;
        Some(c)
    }

    /// Applies the flags to an embedded cluster's builder.
    pub fn apply(&self, mut b: crate::LocalBuilder) -> crate::LocalBuilder {
        if self.no_store {
            return b.no_store();
        }
        if let Some(d) = &self.store_dir {
            b = b.store_dir(d);
        }
        if let Some(n) = self.store_budget {
            b = b.store_budget(n);
        }
        b
    }
}
