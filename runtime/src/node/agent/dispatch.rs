//! What the node agent does with each message. Nothing here awaits: calls and controls are
//! handed to the worker with the caller's reply port, stops run in tasks that report back.

use super::*;

/// Handles one agent message. Not `async`: nothing here may wait (see the module doc).
pub(super) fn on_message(
    myself: ActorRef<AgentMsg>,
    message: AgentMsg,
    state: &mut AgentState,
) -> Result<(), ActorProcessingErr> {
    match message {
        AgentMsg::Spawn(req, port) => {
            let req = match req.into_result() {
                Ok(req) => req,
                Err(e) => {
                    let _ = port.send(Wire::new(Err(e)));
                    return Ok(());
                }
            };
            let worker = req.worker.clone();
            let (pending, start) = match state.prepare(&myself, req) {
                Ok((mut pending, start)) => {
                    pending.port = Some(port);
                    (pending, start)
                }
                Err(e) => {
                    let _ = port.send(Wire::new(Err(e)));
                    return Ok(());
                }
            };
            let key = state.next_spawn;
            state.next_spawn += 1;
            state.starting.insert(worker, key);
            state.pending.insert(key, pending);
            let (me, outcomes) = (myself.clone(), state.outcomes.clone());
            tokio::spawn(async move {
                let outcome = start.await;
                let started = outcome.as_ref().ok().map(|(a, _)| a.clone());
                outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, outcome);
                if me.cast(AgentMsg::Started(Wire::new(key))).is_err() {
                    // The agent is gone: nothing will own this worker.
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    if let Some(a) = started {
                        a.stop(Some("node agent stopped".into()));
                    }
                }
            });
        }
        AgentMsg::Started(key) => {
            let Ok(key) = key.into_result() else {
                return Ok(());
            };
            let outcome = state
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            let (Some(pending), Some(outcome)) = (state.pending.remove(&key), outcome) else {
                return Ok(());
            };
            state.starting.remove(&pending.reply.worker);
            let deferred = state.finish_spawn(pending, outcome);
            if state.pending.is_empty() {
                state.early_exits.clear();
            }
            for (arrived, msg) in deferred {
                if let Some(msg) = super::spawn::aged(arrived, msg) {
                    on_message(myself.clone(), msg, state)?;
                }
            }
        }
        AgentMsg::Call(call, port) => match call.into_result() {
            Ok(WorkerCall { worker, req }) => match state.workers.get(&worker) {
                Some(w) if !w.stopping => {
                    let sent = if matches!(
                        w.kind,
                        WorkerKind::RpcServer(RpcServerSpec {
                            isolation: Isolation::InProcess
                        })
                    ) {
                        // It refuses oversized results itself: hand it the caller's port,
                        // no extra hop.
                        w.actor
                            .send_message(WorkerMsg::Call(req, port))
                            .map_err(|e| e.to_string())
                    } else {
                        crate::remote::forward_call_checked(
                            &w.actor,
                            worker.clone(),
                            req,
                            port,
                            state.max_message,
                        )
                    };
                    if let Err(e) = sent {
                        tracing::warn!(worker = %worker, error = %e, "call to a stopped worker dropped");
                    }
                }
                Some(_) => {
                    let _ = port.send(CallReply(Err(FleetError::Unavailable {
                        what: format!("worker {worker}"),
                        detail: "it is stopping".into(),
                    })));
                }
                None => {
                    let msg = AgentMsg::Call(
                        Wire::new(WorkerCall {
                            worker: worker.clone(),
                            req,
                        }),
                        port,
                    );
                    if let Some(AgentMsg::Call(_, port)) = state.defer_if_starting(&worker, msg) {
                        let _ = port.send(CallReply(Err(state.not_found(&worker))));
                    }
                }
            },
            Err(e) => {
                let _ = port.send(CallReply(Err(e)));
            }
        },
        AgentMsg::Control(ctl, port) => match ctl.into_result() {
            Ok(WorkerControl { worker, control }) => match state.workers.get(&worker) {
                Some(w) => {
                    if let Err(e) = w.actor.send_message(WorkerMsg::Control(control, port)) {
                        tracing::warn!(worker = %worker, error = %e, "control message to a stopped worker dropped");
                    }
                }
                None => {
                    let msg = AgentMsg::Control(
                        Wire::new(WorkerControl {
                            worker: worker.clone(),
                            control,
                        }),
                        port,
                    );
                    if let Some(AgentMsg::Control(_, port)) = state.defer_if_starting(&worker, msg)
                    {
                        let _ = port.send(ControlReply(Err(state.not_found(&worker))));
                    }
                }
            },
            Err(e) => {
                let _ = port.send(ControlReply(Err(e)));
            }
        },
        AgentMsg::Stop(req, port) => {
            let StopRequest {
                worker,
                destroy_timeout_ms,
            } = match req.into_result() {
                Ok(r) => r,
                Err(e) => {
                    let _ = port.send(ControlReply(Err(e)));
                    return Ok(());
                }
            };
            if state.starting.contains_key(&worker) {
                // Handled once the spawn is done, so the worker it started is stopped.
                let msg = AgentMsg::Stop(
                    Wire::new(StopRequest {
                        worker: worker.clone(),
                        destroy_timeout_ms,
                    }),
                    port,
                );
                let _ = state.defer_if_starting(&worker, msg);
                return Ok(());
            }
            state.tombstones.remove(&worker);
            let Some(w) = state.workers.get_mut(&worker) else {
                // Already gone: stopping is idempotent.
                let _ = port.send(ControlReply(Ok(ControlOk::Done)));
                return Ok(());
            };
            w.stopping = true;
            let actor = w.actor.clone();
            let join = w.join.take();
            let engine_exit = w.engine_exit.take();
            let drain_key = state.next_drain;
            state.next_drain += 1;
            let me = myself.clone();
            tokio::spawn(async move {
                let bound = Duration::from_millis(destroy_timeout_ms);
                let destroyed = actor
                    .call(
                        |p| {
                            WorkerMsg::Control(
                                Control::Destroy {
                                    timeout_ms: destroy_timeout_ms,
                                },
                                p,
                            )
                        },
                        Some(bound + Duration::from_secs(1)),
                    )
                    .await;
                let outcome = match destroyed {
                    Ok(ractor::rpc::CallResult::Success(ControlReply(r))) => r,
                    _ => Ok(ControlOk::Done),
                };
                if let Some(join) = join {
                    if tokio::time::timeout(Duration::from_secs(2), join)
                        .await
                        .is_err()
                    {
                        tracing::warn!(worker = %worker, "worker did not stop after destroy; killing it");
                        actor.kill();
                    }
                } else {
                    actor.stop(None);
                }
                // An in-process engine cannot be killed: until its thread has ended it may
                // still run on its GPUs, so its resources stay held until then.
                let mut exit = match engine_exit {
                    Some(mut rx) => match tokio::time::timeout(ENGINE_EXIT_GRACE, &mut rx).await {
                        Ok(_) => None,
                        Err(_) => Some(rx),
                    },
                    None => None,
                };
                let Some(rx) = exit.as_mut() else {
                    let _ = me.cast(AgentMsg::Reclaim(Wire::new(worker)));
                    let _ = port.send(ControlReply(outcome));
                    return;
                };
                let mut reason = format!(
                    "its engine thread is still running after the destroy deadline ({destroy_timeout_ms} ms); its GPUs, ports and memory stay held until the thread ends"
                );
                if let Err(e) = &outcome {
                    reason.push_str(&format!(" ({e})"));
                }
                tracing::warn!(worker = %worker, %reason, "worker stopping, resources held");
                let _ = me.cast(AgentMsg::Draining(Wire::new((
                    worker.clone(),
                    drain_key,
                    reason.clone(),
                ))));
                let _ = port.send(ControlReply(Ok(ControlOk::Deferred(reason))));
                let since = std::time::Instant::now();
                // Ends when the thread does; it cannot be cut short, only reported.
                while tokio::time::timeout(Duration::from_secs(60), &mut *rx)
                    .await
                    .is_err()
                {
                    tracing::warn!(worker = %worker, running_for_s = since.elapsed().as_secs(), "zombie engine: the deleted worker's engine thread is still running; its resources stay held");
                }
                let _ = me.cast(AgentMsg::Drained(Wire::new(drain_key)));
            });
        }
        AgentMsg::Http(req, port) => match req.into_result() {
            Ok(crate::node::messages::WorkerHttp { worker, call }) => match state
                .workers
                .get(&worker)
            {
                Some(w) => {
                    let sent = crate::remote::forward_http_checked(
                        &w.actor,
                        worker.clone(),
                        call,
                        port,
                        state.max_message,
                    );
                    if let Err(e) = sent {
                        tracing::warn!(worker = %worker, error = %e, "http request to a stopped worker dropped");
                    }
                }
                None => {
                    let msg = AgentMsg::Http(
                        Wire::new(crate::node::messages::WorkerHttp {
                            worker: worker.clone(),
                            call,
                        }),
                        port,
                    );
                    if let Some(AgentMsg::Http(_, port)) = state.defer_if_starting(&worker, msg) {
                        let _ = port.send(fleet_actors::HttpReply(Err(state.not_found(&worker))));
                    }
                }
            },
            Err(e) => {
                let _ = port.send(fleet_actors::HttpReply(Err(e)));
            }
        },
        AgentMsg::Failed(event) => {
            if let Ok(ev) = event.into_result() {
                let starting = state
                    .starting
                    .get(&ev.worker)
                    .and_then(|k| state.pending.get(k))
                    .is_some_and(|p| p.reply.incarnation == ev.incarnation);
                if starting {
                    // Its launcher reported before its spawn was registered.
                    let worker = ev.worker.clone();
                    let _ = state.defer_if_starting(&worker, AgentMsg::Failed(Wire::new(ev)));
                    return Ok(());
                }
                // About an earlier instance of this id (already stopped and replaced)?
                let current = state.workers.get(&ev.worker).map(|w| w.incarnation);
                if current != Some(ev.incarnation) {
                    tracing::debug!(worker = %ev.worker, incarnation = ev.incarnation, ?current, "failure of an earlier incarnation ignored");
                    return Ok(());
                }
                // Failed for good (no restart left): its process is gone, so stop its actor
                // and give its GPUs, CPU, memory and ports back now. The scheduler keeps the
                // worker as failed, with the reason, until it is deleted.
                if let Some(w) = state.workers.get_mut(&ev.worker) {
                    w.stopping = true;
                    w.actor.stop(Some("failed".into()));
                }
                if let WorkerEventKind::Failed { reason, tail } = &ev.kind {
                    state.tombstones.insert(
                        ev.worker.clone(),
                        FleetError::WorkerFailed {
                            worker: ev.worker.to_string(),
                            node: state.node.to_string(),
                            reason: reason.clone(),
                            tail: tail.clone(),
                        },
                        std::time::Instant::now(),
                    );
                }
                if state.reclaim(&ev.worker) {
                    tracing::info!(worker = %ev.worker, node = %state.node, "failed worker stopped, resources released");
                }
                if let Some(events) = &state.events {
                    let _ = events.send(ev);
                }
            }
        }
        AgentMsg::ReservePorts(count, port) => {
            let r = count.into_result().and_then(|n| state.ports.reserve(n));
            let _ = port.send(Wire::new(r));
        }
        AgentMsg::ReleasePorts(lease) => {
            if let Ok(id) = lease.into_result() {
                state.ports.release(id);
            }
        }
        AgentMsg::Info(port) => {
            let _ = port.send(Wire::new(Ok(state.info())));
        }
        AgentMsg::Roster(port) => {
            use crate::node::messages::{RosterEntry, RosterState};
            // Workers still starting are not listed: the scheduler holds them as starting
            // and reconciles only the ones it thinks are running.
            let roster = state
                .workers
                .iter()
                .map(|(id, w)| RosterEntry {
                    worker: id.clone(),
                    incarnation: w.incarnation,
                    state: if w.stopping {
                        RosterState::Stopping
                    } else {
                        RosterState::Running
                    },
                })
                .chain(state.draining.values().map(|d| RosterEntry {
                    worker: d.worker.clone(),
                    incarnation: d.incarnation,
                    state: RosterState::Stopping,
                }))
                .collect();
            let _ = port.send(Wire::new(roster));
        }
        AgentMsg::Draining(notice) => {
            if let Ok((worker, key, reason)) = notice.into_result() {
                if let Some(w) = state.workers.remove(&worker) {
                    state.by_actor.remove(&w.actor.get_id());
                    state.directory.remove(&worker);
                    let ledger_key =
                        WorkerId::new(format!("{}~draining{key}", worker.role), worker.index);
                    state.ledger.rekey(&worker, ledger_key.clone());
                    state.draining.insert(
                        key,
                        DrainingWorker {
                            worker,
                            incarnation: w.incarnation,
                            ledger_key,
                            kind: w.kind,
                            gpus: w.gpus,
                            ports: w.ports,
                            lease: w.lease,
                            reason,
                        },
                    );
                }
            }
        }
        AgentMsg::Drained(key) => {
            if let Some(d) = key
                .into_result()
                .ok()
                .and_then(|k| state.draining.remove(&k))
            {
                state.ledger.release(&d.ledger_key);
                if let Some(lease) = d.lease {
                    state.ports.release(lease);
                }
                tracing::info!(worker = %d.worker, node = %state.node, "engine thread ended; the stopped worker's resources are released");
                if let Some(events) = &state.events {
                    let _ = events.send(WorkerEvent {
                        worker: d.worker,
                        node: state.node.clone(),
                        incarnation: d.incarnation,
                        kind: WorkerEventKind::Released,
                    });
                }
            }
        }
        AgentMsg::Reclaim(worker) => {
            if let Ok(worker) = worker.into_result() {
                if state.reclaim(&worker) {
                    tracing::info!(worker = %worker, node = %state.node, "worker stopped, resources released");
                }
            }
        }
    }
    Ok(())
}
