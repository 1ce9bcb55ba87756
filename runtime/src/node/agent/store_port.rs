//! Starting the node's object store on a port of the node's range.
//!
//! The allocator's bind probe cannot close the window between probing a port and binding it:
//! a client socket can take the port as its local port in between when the node's range
//! overlaps the kernel's ephemeral range. The store then tries the next port, a bounded number
//! of times, instead of failing the node's start.

use super::PortAllocator;
use fleet_actors::NodeId;
use ractor::ActorProcessingErr;

/// Starts the node's store on a port from the node's allocator (claimed host-wide, held for
/// the life of the agent), unless the config names a port.
pub(super) async fn start_store(
    node: &NodeId,
    cfg: crate::store::StoreConfig,
    ports: &mut PortAllocator,
) -> Result<crate::store::Store, ActorProcessingErr> {
    if cfg.port.is_some() {
        return crate::store::Store::start(&node.to_string(), cfg)
            .await
            .map_err(|e| format!("node {node}: the object store did not start: {e}").into());
    }
    // A port from the allocator passed its bind probe, but a client socket can still take it
    // before the store binds it (when the range overlaps the ephemeral range): then the next
    // port is tried, a bounded number of times. The taken port stays reserved, so it is not
    // handed to a worker either.
    const TRIES: usize = 8;
    let mut last = String::new();
    for _ in 0..TRIES {
        let lease = ports
            .reserve(1)
            .map_err(|e| format!("node {node}: no port for the object store: {e}"))?;
        let mut attempt = cfg.clone();
        attempt.port = lease.ports.first().copied();
        match crate::store::Store::start(&node.to_string(), attempt).await {
            Ok(store) => return Ok(store),
            Err(e @ crate::store::StoreError::Bind { in_use: true, .. }) => {
                tracing::warn!(node = %node, error = %e, "the store's port was taken between its probe and its bind; trying the next one");
                last = e.to_string();
            }
            Err(e) => {
                return Err(format!("node {node}: the object store did not start: {e}").into())
            }
        }
    }
    Err(format!("node {node}: the object store did not start: {TRIES} ports in a row were taken as it bound them; the last: {last}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_taken_between_probe_and_bind_is_skipped_and_stays_reserved() {
        // Without a probe the allocator hands out the taken port, as a lost race would.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let lo = taken.local_addr().unwrap().port();
        let mut ports = PortAllocator::new(lo, lo.saturating_add(40)).without_probe();
        let node = NodeId {
            name: "store-port-test".into(),
            uid: 7,
        };
        let dir =
            std::env::temp_dir().join(format!("fleet-store-port-test-{}", std::process::id()));
        let mut cfg = crate::store::StoreConfig::new("cookie", "127.0.0.1".parse().unwrap());
        cfg.root = Some(dir.clone());
        let store = start_store(&node, cfg, &mut ports).await.unwrap();
        let url = store.url();
        assert!(!url.ends_with(&format!(":{lo}")), "{url}");
        assert_eq!(ports.held(), 2, "the taken port stays reserved");
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }
}
