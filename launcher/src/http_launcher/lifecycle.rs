//! The child's lifecycle: starting it, supervising it (readiness, liveness, exit), and what
//! each lifecycle event does (ready, not ready, unanswered probes, exit: restart by policy or
//! fail the worker).

use super::actor::{process_error, HttpLauncher, Phase, State};
use crate::process::{
    wait_ready, watch_liveness, ChildHandle, LivenessProbe, ProcessError, ReadinessProbe,
};
use fleet_actors::rpc_server::{Lifecycle, WorkerMsg};
use fleet_actors::{FleetError, RestartPolicy};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts the readiness probe and the exit watcher of generation `generation`, reporting both
/// to the actor.
fn supervise(
    myself: ActorRef<WorkerMsg>,
    child: &ChildHandle,
    generation: u64,
    probe: Option<ReadinessProbe>,
    liveness: Option<LivenessProbe>,
) {
    let watch = child.watch();
    tokio::spawn(async move {
        if let Some(probe) = probe {
            match wait_ready(&probe, &watch).await {
                Ok(()) => {
                    let _ =
                        myself.send_message(WorkerMsg::Lifecycle(Lifecycle::Ready { generation }));
                    if let Some(l) = liveness {
                        // Reports only changes: a failure, or the first success after one.
                        let me = myself.clone();
                        let mut last = 0u32;
                        watch_liveness(&l, &watch, move |failures, detail| {
                            let changed = failures > 0 || last > 0;
                            last = failures;
                            !changed
                                || me
                                    .send_message(WorkerMsg::Lifecycle(Lifecycle::Probe {
                                        generation,
                                        failures,
                                        detail,
                                    }))
                                    .is_ok()
                        })
                        .await;
                    }
                }
                Err(ProcessError::ExitedBeforeReady { .. }) => {
                    // The exit is reported below.
                }
                Err(e) => {
                    let _ = myself.send_message(WorkerMsg::Lifecycle(Lifecycle::NotReady {
                        generation,
                        reason: e.to_string(),
                    }));
                }
            }
        } else {
            let _ = myself.send_message(WorkerMsg::Lifecycle(Lifecycle::Ready { generation }));
        }
        let info = watch.exited().await;
        let _ = myself.send_message(WorkerMsg::Lifecycle(Lifecycle::Exited {
            generation,
            code: info.code,
            signal: info.signal,
            tail: info.tail,
        }));
    });
}

impl HttpLauncher {
    pub(super) async fn start_child(
        &self,
        myself: &ActorRef<WorkerMsg>,
        state: &mut State,
    ) -> Result<(), FleetError> {
        let spec = state.child_spec()?;
        let child = ChildHandle::spawn(spec)
            .await
            .map_err(|e| process_error(&state.args.worker, &state.args.node, e))?;
        state.generation += 1;
        let r = &state.args.spec.readiness;
        let probe = state.args.ports.first().map(|port| {
            let mut p = ReadinessProbe::http(*port, r.path.clone())
                .deadline(Duration::from_millis(r.deadline_ms));
            p.expected_status = r.expected_status;
            p.interval = Duration::from_millis(r.interval_ms.max(1));
            p
        });
        let l = &state.args.spec.liveness;
        let liveness = match (state.args.ports.first(), l.interval_ms) {
            (Some(port), 1..) => Some(LivenessProbe {
                port: *port,
                path: r.path.clone(),
                expected_status: r.expected_status,
                interval: Duration::from_millis(l.interval_ms),
                timeout: Duration::from_millis(l.timeout_ms.max(1)),
            }),
            _ => None,
        };
        tracing::info!(worker = %state.args.worker, pid = child.pid(), argv = ?state.args.spec.argv, ports = ?state.args.ports, generation = state.generation, "http service process started");
        state.unanswered = (0, String::new());
        state.killed_unresponsive = None;
        state.args.child_pid.set(child.pid());
        supervise(myself.clone(), &child, state.generation, probe, liveness);
        state.target = Some(state.make_target(&child));
        state.child = Some(Arc::new(child));
        state.phase = Phase::Starting {
            since: Instant::now(),
        };
        Ok(())
    }

    pub(super) async fn lifecycle(
        &self,
        myself: ActorRef<WorkerMsg>,
        event: Lifecycle,
        state: &mut State,
    ) {
        match event {
            Lifecycle::Ready { generation } if generation == state.generation => {
                if let Phase::Starting { since } = state.phase {
                    tracing::info!(worker = %state.args.worker, ready_ms = since.elapsed().as_millis() as u64, "http service ready");
                    state.phase = Phase::Ready;
                }
            }
            Lifecycle::NotReady { generation, reason } if generation == state.generation => {
                if matches!(state.phase, Phase::Stopping) {
                    return;
                }
                let tail = state.child.as_ref().map(|c| c.tail()).unwrap_or_default();
                if let Some(c) = &state.child {
                    c.kill();
                }
                let err = state.failed(format!("it did not become ready: {reason}"), tail.clone());
                state.report(&format!("not ready: {reason}"), &tail);
                state.phase = Phase::Failed(err);
            }
            Lifecycle::Exited {
                generation,
                code,
                signal,
                tail,
            } if generation == state.generation => {
                if let Some(c) = &state.child {
                    state.args.child_pid.clear(c.pid());
                }
                if matches!(state.phase, Phase::Stopping | Phase::Failed(_)) {
                    return;
                }
                let how = match (code, signal, state.killed_unresponsive.take()) {
                    (_, _, Some(why)) => why,
                    (Some(c), _, _) => format!("its process exited with code {c}"),
                    (None, Some(s), _) => format!("its process was killed by signal {s}"),
                    _ => "its process exited".to_string(),
                };
                let was_ready = matches!(state.phase, Phase::Ready);
                let when = if was_ready {
                    ""
                } else {
                    " before it was ready"
                };
                let may_restart = match state.args.spec.restart {
                    RestartPolicy::OnFailure {
                        max_restarts,
                        backoff_ms,
                    } if code != Some(0) && state.restarts < max_restarts => Some(backoff_ms),
                    _ => None,
                };
                if let Some(backoff_ms) = may_restart {
                    state.restarts += 1;
                    metrics::counter!("fleet_worker_restarts_total").increment(1);
                    let wait = Duration::from_millis(
                        backoff_ms.saturating_mul(1u64 << (state.restarts - 1).min(10)),
                    );
                    tracing::warn!(worker = %state.args.worker, %how, restart = state.restarts, wait_ms = wait.as_millis() as u64, "http service exited{when}; restarting");
                    state.phase = Phase::Restarting;
                    let me = myself.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = me.send_message(WorkerMsg::Lifecycle(Lifecycle::RestartDue {
                            generation,
                        }));
                    });
                } else {
                    let reason = format!("{how}{when}");
                    state.report(&reason, &tail);
                    state.phase = Phase::Failed(state.failed(reason, tail));
                }
            }
            Lifecycle::Probe {
                generation,
                failures,
                detail,
            } if generation == state.generation => {
                if !matches!(state.phase, Phase::Ready) {
                    return;
                }
                state.unanswered = (failures, detail.clone());
                let threshold = state.args.spec.liveness.failure_threshold.max(1);
                if failures == 0 {
                    tracing::info!(worker = %state.args.worker, "http service answers its liveness probe again");
                } else if failures >= threshold {
                    let reason = format!(
                        "it stopped answering: {failures} liveness probes in a row failed ({detail}); it was killed"
                    );
                    tracing::warn!(worker = %state.args.worker, %reason, "http service unresponsive");
                    state.killed_unresponsive = Some(reason);
                    // The exit that follows applies the restart policy, with this reason.
                    if let Some(c) = &state.child {
                        c.kill();
                    }
                } else {
                    tracing::warn!(worker = %state.args.worker, failures, threshold, %detail, "http service missed a liveness probe");
                }
            }
            Lifecycle::RestartDue { generation } if generation == state.generation => {
                if !matches!(state.phase, Phase::Restarting) {
                    return;
                }
                if let Err(e) = self.start_child(&myself, state).await {
                    let reason = format!("restart failed: {e}");
                    state.report(&reason, &[]);
                    state.phase = Phase::Failed(e);
                }
            }
            _ => {
                // News about a process generation that was already replaced.
            }
        }
    }
}
