//! `delete_workers`: two-phase teardown (engine destroy hooks with a bound, then stop), in an
//! order that respects dependencies: aliases and forks of a role go before the role itself.

use super::state::{RoleLink, State};
use super::Scheduler;
use crate::node::messages::{AgentMsg, StopRequest};
use fleet_actors::rpc_server::{ControlOk, ControlReply};
use fleet_actors::wire::Wire;
use fleet_actors::{FleetError, NodeId, WorkerId};
use ractor::rpc::CallResult;
use std::time::Duration;

/// Books a stopped worker in the mirror ledger: its resources are free again, or, when its node
/// deferred the stop (an engine thread still running), held under a drain key until the node
/// reports that incarnation released.
pub(super) fn book_stop(
    st: &mut State,
    node: &NodeId,
    id: &WorkerId,
    incarnation: u64,
    deferred: bool,
) {
    let key = (node.clone(), incarnation);
    let early = deferred && st.released_early.remove(&key);
    if deferred && !early {
        let held = WorkerId::new(format!("{}~draining{}", id.role, st.next_drain), id.index);
        st.next_drain += 1;
        if let Some(n) = st.nodes.get_mut(node) {
            n.ledger.rekey(id, held.clone());
        }
        st.draining.insert(key, held);
        tracing::warn!(worker = %id, %node, "stopped worker still draining; its resources stay held until its node reports them released");
    } else if let Some(n) = st.nodes.get_mut(node) {
        n.ledger.release(id);
    }
}

impl Scheduler {
    /// Deletes the workers of `role` (or of every role when `None`).
    ///
    /// Roles colocated with or forked next to a deleted role are deleted first (a forked proxy
    /// makes no sense without its target). Within a role, workers are stopped concurrently, or
    /// one at a time from the highest index down when `reverse` is set (for jobs whose rank 0
    /// must outlive the rest). Each worker's engines get their destroy hook, bounded by the
    /// scheduler's destroy timeout; then the worker stops and its resources are released.
    ///
    /// Deleting a role that does not exist (or was already deleted) is not an error.
    ///
    /// On a scheduler connected to a head, `None` means every role *this program* created
    /// (never other programs' roles or submitted jobs); a named role is deleted whoever
    /// created it.
    pub async fn delete_workers(
        &self,
        role: Option<&str>,
        reverse: bool,
    ) -> Result<(), FleetError> {
        if let Some(r) = &self.remote {
            let op = crate::attach::protocol::Op::DeleteWorkers {
                role: role.map(str::to_string),
                reverse,
            };
            return r.done(op, r.timeout()).await;
        }
        let order: Vec<String> = {
            let st = self.inner.state.lock().await;
            match role {
                Some(r) => {
                    if !st.roles.contains_key(r) {
                        tracing::debug!(
                            role = r,
                            "delete_workers: no such role (already deleted?)"
                        );
                        return Ok(());
                    }
                    let mut v = st.dependents(r);
                    v.push(r.to_string());
                    v
                }
                None => {
                    // Dependents before targets; otherwise newest first.
                    let mut roles: Vec<(u64, String, bool)> = st
                        .roles
                        .iter()
                        .map(|(n, e)| (e.order, n.clone(), e.link != RoleLink::Own))
                        .collect();
                    roles.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(&a.0)));
                    roles.into_iter().map(|(_, n, _)| n).collect()
                }
            }
        };
        let mut errors = Vec::new();
        for r in order {
            if let Err(e) = self.delete_role(&r, reverse).await {
                errors.push(format!("{r}: {e}"));
            }
        }
        unclean(errors)
    }

    async fn delete_role(&self, role: &str, reverse: bool) -> Result<(), FleetError> {
        let (entry, agents) = {
            let mut st = self.inner.state.lock().await;
            let Some(entry) = st.roles.remove(role) else {
                return Ok(());
            };
            let agents: Vec<_> = entry
                .workers
                .iter()
                .map(|w| st.nodes.get(&w.node).map(|n| n.agent.clone()))
                .collect();
            (entry, agents)
        };
        {
            let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
            for w in &entry.workers {
                routes.remove(&w.id);
            }
        }
        if let RoleLink::Alias(_) = entry.link {
            // Other names for workers another role owns: nothing to stop.
            return Ok(());
        }
        let destroy_ms = self.inner.config.destroy_timeout.as_millis() as u64;
        let bound = self.inner.config.destroy_timeout + Duration::from_secs(5);
        let stop = |id: WorkerId, agent: Option<ractor::ActorRef<AgentMsg>>| async move {
            let Some(agent) = agent else {
                return Ok(None);
            };
            let req = StopRequest {
                worker: id.clone(),
                destroy_timeout_ms: destroy_ms,
            };
            match agent
                .call(|p| AgentMsg::Stop(Wire::new(req), p), Some(bound))
                .await
            {
                // Stopped, but its engine thread still runs: its node keeps its resources
                // until the thread ends, and so does the mirror.
                Ok(CallResult::Success(ControlReply(Ok(ControlOk::Deferred(why))))) => {
                    Ok(Some(why))
                }
                Ok(CallResult::Success(reply)) => reply.0.map(|_| None),
                Ok(CallResult::Timeout) => {
                    Err(FleetError::timeout(format!("stopping {id}"), bound))
                }
                // The node is gone: so is the worker.
                Ok(CallResult::SenderError) | Err(_) => Ok(None),
            }
        };
        let pairs: Vec<_> = entry
            .workers
            .iter()
            .map(|w| w.id.clone())
            .zip(agents)
            .collect();
        let results: Vec<Result<Option<String>, FleetError>> = if reverse {
            let mut out = Vec::new();
            for (id, agent) in pairs.into_iter().rev() {
                out.push(stop(id, agent).await);
            }
            out
        } else {
            futures::future::join_all(pairs.into_iter().map(|(id, a)| stop(id, a))).await
        };
        {
            let mut st = self.inner.state.lock().await;
            let ids: Vec<_> = entry.workers.iter().map(|w| w.id.clone()).collect();
            let order: Vec<&WorkerId> = if reverse {
                ids.iter().rev().collect()
            } else {
                ids.iter().collect()
            };
            for (id, r) in order.into_iter().zip(&results) {
                let Some(w) = entry.workers.iter().find(|w| &w.id == id) else {
                    continue;
                };
                book_stop(
                    &mut st,
                    &w.node,
                    &w.id,
                    w.incarnation,
                    matches!(r, Ok(Some(_))),
                );
            }
        }
        tracing::info!(role, workers = entry.workers.len(), "workers deleted");
        let errs: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(FleetError::Unavailable {
                what: format!("role {role}"),
                detail: errs.join("; "),
            })
        }
    }
}

/// The error of a deletion whose roles (`"role: error"` each) did not all stop cleanly; `Ok`
/// when none failed.
pub(crate) fn unclean(errors: Vec<String>) -> Result<(), FleetError> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(FleetError::Unavailable {
        what: "delete_workers".into(),
        detail: format!(
            "some workers did not stop cleanly (they are gone from the scheduler): {}",
            errors.join("; ")
        ),
    })
}
