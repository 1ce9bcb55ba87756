//! Control requests to an HTTP-service worker: health, status, environment, engine control
//! (forwarded to a fleet rpc-server child), cancel, and destroy (TERM, grace, KILL).

use super::actor::{HttpLauncher, Phase, State};
use fleet_actors::rpc_server::{Control, ControlOk, ControlReply, WorkerMsg, WorkerStatus};
use fleet_actors::{CallProtocol, FleetError};
use ractor::{ActorRef, RpcReplyPort};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl HttpLauncher {
    pub(super) fn control(
        &self,
        myself: ActorRef<WorkerMsg>,
        control: Control,
        port: RpcReplyPort<ControlReply>,
        state: &mut State,
    ) {
        let fleet_rpc = state.args.spec.protocol == CallProtocol::FleetRpc;
        let worker = state.args.worker.to_string();
        match control {
            Control::Health => {
                let r = match state.refusal() {
                    None => Ok(ControlOk::Done),
                    Some(e) => Err(e),
                };
                let _ = port.send(ControlReply(r));
            }
            Control::Undecodable(detail) => {
                let _ = port.send(ControlReply(Err(FleetError::Protocol { detail })));
            }
            Control::Cancel { request_id } => {
                if state.forwards.cancel(&request_id) {
                    tracing::debug!(worker = %worker, request_id = %request_id, "forward cancelled by its caller");
                }
                let _ = port.send(ControlReply(Ok(ControlOk::Done)));
            }
            Control::Status => {
                let status = WorkerStatus {
                    worker: state.args.worker.clone(),
                    engines: vec![],
                    in_flight: None,
                    queued: state.forwards.in_flight.load(Ordering::Relaxed)
                        + state.forwards.waiting.load(Ordering::Relaxed),
                    calls_done: state.forwards.done.load(Ordering::Relaxed),
                    uptime_ms: state.started.elapsed().as_millis() as u64,
                    pid: state.child.as_ref().map(|c| c.pid()),
                };
                let _ = port.send(ControlReply(Ok(ControlOk::Status(status))));
            }
            Control::SetEnv(vars) => {
                state.env.extend(vars.clone());
                if fleet_rpc {
                    let deadline = Duration::from_secs(10);
                    Self::forward(
                        state,
                        port,
                        ControlReply,
                        deadline,
                        None,
                        move |t, left| async move { t.fleet_control(Control::SetEnv(vars), left).await },
                    );
                } else {
                    let _ = port.send(ControlReply(Ok(ControlOk::Deferred(format!(
                        "worker {worker} is an external process: the new environment applies when it next starts (after a restart, or recreate the worker); the running process keeps its environment"
                    )))));
                }
            }
            c @ (Control::CreateEngine { .. } | Control::Configure(_)) => {
                if fleet_rpc {
                    // The caller's deadline (the reply port carries it): constructors that load
                    // weights take minutes.
                    let deadline = port.get_timeout().unwrap_or(Duration::from_secs(60));
                    Self::forward(
                        state,
                        port,
                        ControlReply,
                        deadline,
                        None,
                        move |t, left| async move { t.fleet_control(c, left).await },
                    );
                } else {
                    let _ = port.send(ControlReply(Err(FleetError::bad_request(
                        format!("engine control for worker {worker}"),
                        "it is a plain HTTP service without engines (CallProtocol::None or Json); talk to it with Scheduler::http",
                    ))));
                }
            }
            Control::Destroy { timeout_ms } => {
                if matches!(state.phase, Phase::Stopping) {
                    let _ = port.send(ControlReply(Ok(ControlOk::Done)));
                    return;
                }
                let was_ready = matches!(state.phase, Phase::Ready);
                state.phase = Phase::Stopping;
                state.stopping.store(true, Ordering::SeqCst);
                let target = state.target();
                let child = state.child.clone();
                let grace = Duration::from_millis(state.args.spec.stop_grace_ms);
                tokio::spawn(async move {
                    let mut outcome = Ok(ControlOk::Done);
                    if let (true, true, Some(t)) = (fleet_rpc, was_ready, target) {
                        let bound = Duration::from_millis(timeout_ms.max(1));
                        if let Err(e) = t
                            .fleet_control(Control::Destroy { timeout_ms }, bound)
                            .await
                        {
                            outcome = Err(e);
                        }
                    }
                    if let Some(child) = child {
                        match child.stop(grace).await {
                            Ok(info) => {
                                tracing::info!(worker = %worker, exit = %info.describe(), "http service process stopped")
                            }
                            Err(e) => {
                                tracing::warn!(worker = %worker, error = %e, "stopping the http service process")
                            }
                        }
                    }
                    myself.stop(Some("destroyed".into()));
                    let _ = port.send(ControlReply(outcome));
                });
            }
        }
    }
}
