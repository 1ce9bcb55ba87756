//! Talking to workers: engine calls, control requests and plain HTTP, each by the shortest
//! route (the local actor, the remote worker itself, or its node's agent), racing node loss
//! and pushed failures of the worker.

use super::{Route, Scheduler};
use crate::node::messages::{AgentMsg, WorkerCall, WorkerControl};
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlOk, ControlReply, WorkerMsg,
};
use fleet_actors::wire::Wire;
use fleet_actors::{CallOptions, FleetError, Payload, WorkerId};
use ractor::rpc::CallResult;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::{Duration, Instant};

/// `now + d`, saturating: a caller's `Duration::MAX` ("wait forever") becomes a moment about
/// 30 years away instead of an overflow panic.
pub(crate) fn instant_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Counts one call in the process's metrics: by kind and outcome, and its latency by the
/// worker's kind.
fn observe<T>(kind: &'static str, route: &Route, started: Instant, r: &Result<T, FleetError>) {
    let outcome = match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    metrics::counter!("fleet_calls_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!("fleet_call_seconds", "kind" => kind, "worker_kind" => route.kind)
        .record(started.elapsed().as_secs_f64());
}

/// Maps a ractor call outcome to fleet's errors, naming the worker and what was asked.
fn outcome<T, E: std::fmt::Display>(
    r: Result<CallResult<T>, E>,
    worker: &WorkerId,
    route: &Route,
    what: &str,
    timeout: Duration,
) -> Result<T, FleetError> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(FleetError::timeout(
            format!("{what} on worker {worker}"),
            timeout,
        )),
        Ok(CallResult::SenderError) => Err(FleetError::WorkerFailed {
            worker: worker.to_string(),
            node: route.node.to_string(),
            reason: format!("it stopped while handling {what}"),
            tail: vec![],
        }),
        Err(e) => Err(FleetError::WorkerFailed {
            worker: worker.to_string(),
            node: route.node.to_string(),
            reason: format!("it is not running ({e})"),
            tail: vec![],
        }),
    }
}

/// The remote worker actor of an in-process RpcServer, once its process group has reached this
/// node (looked up once, then kept in the route).
fn direct_worker(route: &Route) -> Option<ractor::ActorRef<WorkerMsg>> {
    let slot = route.direct.as_ref()?;
    if let Some(a) = slot.get() {
        return Some(a.clone());
    }
    let group = crate::membership::protocol::worker_group(&route.node, &route.target);
    let cell = ractor::pg::get_scoped_members(
        &crate::membership::protocol::FLEET_SCOPE.to_string(),
        &group,
    )
    .into_iter()
    .find(|c| !c.get_id().is_local())?;
    let actor: ractor::ActorRef<WorkerMsg> = cell.into();
    tracing::debug!(worker = %route.target, node = %route.node, "direct route to a remote worker");
    Some(slot.get_or_init(|| actor).clone())
}

impl Scheduler {
    /// Runs a remote call, failing it as soon as its worker is reported failed: a worker that
    /// dies on another node sends no answer for the calls it held, but its failure is pushed
    /// here, so callers do not wait for their deadlines.
    async fn fail_fast<T>(
        &self,
        worker: &WorkerId,
        fut: impl std::future::Future<Output = Result<T, FleetError>>,
    ) -> Result<T, FleetError> {
        let mut epoch = self.inner.failures.subscribe();
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                changed = epoch.changed() => {
                    if changed.is_err() {
                        return fut.await;
                    }
                    self.route(worker)?;
                }
            }
        }
    }

    /// A request-reply to an actor on `route`'s node: races node loss and pushed failures of
    /// `worker`, and maps ractor's outcomes to fleet's errors.
    async fn on_node<T, M>(
        &self,
        worker: &WorkerId,
        route: &Route,
        what: &str,
        timeout: Duration,
        fut: impl std::future::Future<Output = Result<CallResult<T>, ractor::MessagingErr<M>>>,
    ) -> Result<T, FleetError> {
        let on_node = crate::remote::call_on_node(
            &self.inner.liveness,
            &route.node,
            worker,
            what,
            timeout,
            fut,
        );
        self.fail_fast(worker, on_node).await
    }

    fn local_actor(&self, route: &Route) -> Option<ractor::ActorRef<WorkerMsg>> {
        if self.inner.local_node.as_ref() == Some(&route.node) {
            self.inner.directory.get(&route.target)
        } else {
            None
        }
    }

    /// Calls `engine.method` on `worker` with already-serialized arguments.
    pub async fn call_raw(
        &self,
        worker: &WorkerId,
        engine: &str,
        method: &str,
        args: Payload,
        opts: &CallOptions,
    ) -> Result<Payload, FleetError> {
        let timeout = opts.timeout;
        let mut req = CallRequest {
            deadline_ms: 0,
            idempotent: opts.idempotent,
            engine: engine.to_string(),
            method: method.to_string(),
            args,
            rpc_meta: opts.rpc_meta.clone(),
            // Only the caller's own id: a generated one could never be repeated, so having the
            // worker record its result would protect nothing.
            request_id: opts.request_id.clone(),
            retry: opts.retry.clone(),
        };
        // The whole budget, at the moment of sending; each hop that holds it subtracts.
        req.set_budget(timeout);
        // The whole encoded message counts (arguments, rpc_meta, names), not only the arguments:
        // one over ractor_cluster's frame limit would drop the node's session.
        fleet_actors::wire::check_len(req.encoded_len(), self.inner.config.max_payload, || {
            format!(
                "the call {engine:.200}.{method:.200} for {worker} (arguments, rpc_meta and names)"
            )
        })?;
        if let Some(r) = &self.remote {
            // Through the head, which calls the worker with the same options (deadline,
            // request id, retries). Giving up here cancels there: the guard's cancel goes
            // through the head too.
            let give_up = super::give_up::GiveUp::new(self, worker, opts.request_id.as_ref());
            let op = crate::attach::protocol::Op::Call {
                worker: worker.clone(),
                engine: engine.to_string(),
                method: method.to_string(),
                args: req.args,
                opts: opts.clone(),
            };
            let reply = r.payload(op, timeout).await;
            give_up.settle(&reply);
            return reply;
        }
        let route = self.route(worker)?;
        let what = format!("{engine}.{method}");
        // A caller that gives up on a call with a request id tells the worker (dropped or
        // timed out): the call is not run for nobody.
        let give_up = super::give_up::GiveUp::new(self, worker, opts.request_id.as_ref());
        let started = Instant::now();
        let reply: Result<CallReply, FleetError> = async {
            Ok(match self.local_actor(&route) {
                Some(actor) => outcome(
                    actor.call(|p| WorkerMsg::Call(req, p), Some(timeout)).await,
                    worker,
                    &route,
                    &what,
                    timeout,
                )?,
                None => match direct_worker(&route) {
                    // One hop: straight to the worker on its node.
                    Some(actor) => {
                        self.on_node(
                            worker,
                            &route,
                            &what,
                            timeout,
                            actor.call(|p| WorkerMsg::Call(req, p), Some(timeout)),
                        )
                        .await?
                    }
                    None => {
                        let call = WorkerCall {
                            worker: route.target.clone(),
                            req,
                        };
                        self.on_node(
                            worker,
                            &route,
                            &what,
                            timeout,
                            route
                                .agent
                                .call(|p| AgentMsg::Call(Wire::new(call), p), Some(timeout)),
                        )
                        .await?
                    }
                },
            })
        }
        .await;
        give_up.settle(&reply);
        let r = reply.and_then(|r| r.0);
        observe("engine", &route, started, &r);
        r
    }

    /// Calls `engine.method` on `worker`: serializes `args`, deserializes the reply.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        worker: &WorkerId,
        engine: &str,
        method: &str,
        args: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, FleetError> {
        let payload = Payload::bincode(args)?;
        self.call_raw(worker, engine, method, payload, opts)
            .await?
            .decode()
    }

    /// Sends a control request to `worker` with a deadline.
    pub async fn control(
        &self,
        worker: &WorkerId,
        control: Control,
        timeout: Duration,
    ) -> Result<ControlOk, FleetError> {
        crate::remote::check_control(&control, worker, self.inner.config.max_payload)?;
        if let Some(r) = &self.remote {
            let op = crate::attach::protocol::Op::Control {
                worker: worker.clone(),
                control,
            };
            return r.control(op, timeout).await;
        }
        let route = self.route(worker)?;
        let what = match &control {
            Control::CreateEngine { .. } => "create_engine",
            Control::Configure(_) => "configure",
            Control::SetEnv(_) => "set_env",
            Control::Health => "health",
            Control::Status => "status",
            Control::Cancel { .. } => "cancel",
            Control::Undecodable(_) => "an undecodable control message",
            Control::Destroy { .. } => "destroy",
        };
        let started = Instant::now();
        let reply: Result<ControlReply, FleetError> = async {
            Ok(match self.local_actor(&route) {
                Some(actor) => outcome(
                    actor
                        .call(|p| WorkerMsg::Control(control, p), Some(timeout))
                        .await,
                    worker,
                    &route,
                    what,
                    timeout,
                )?,
                None => {
                    let msg = WorkerControl {
                        worker: route.target.clone(),
                        control,
                    };
                    self.on_node(
                        worker,
                        &route,
                        what,
                        timeout,
                        route
                            .agent
                            .call(|p| AgentMsg::Control(Wire::new(msg), p), Some(timeout)),
                    )
                    .await?
                }
            })
        }
        .await;
        let r = reply.and_then(|r| r.0);
        observe("control", &route, started, &r);
        r
    }

    /// Sends a plain HTTP request to an HTTP-service worker through its launcher (pooled
    /// connection, retries per the request's idempotency and deadline). Any status is an
    /// answer; errors mean there was none (the worker failed, the deadline passed, ...).
    pub async fn http(
        &self,
        worker: &WorkerId,
        call: fleet_actors::HttpCall,
    ) -> Result<fleet_actors::HttpResponseData, FleetError> {
        crate::remote::check_http(&call, worker, self.inner.config.max_payload)?;
        // Saturating: a caller's `u64::MAX` means "no deadline", not a panic.
        let timeout = Duration::from_millis(call.timeout_ms).saturating_add(Duration::from_secs(1));
        if let Some(r) = &self.remote {
            let give_up = super::give_up::GiveUp::new(self, worker, call.request_id.as_ref());
            let op = crate::attach::protocol::Op::Http {
                worker: worker.clone(),
                call,
            };
            let reply = r.http(op, timeout).await;
            give_up.settle(&reply);
            return reply;
        }
        let route = self.route(worker)?;
        // Errors name the request (one small allocation next to a network round trip).
        let what = format!("{} {}", call.method, call.path);
        let what = what.as_str();
        let give_up = super::give_up::GiveUp::new(self, worker, call.request_id.as_ref());
        let started = Instant::now();
        let reply: Result<fleet_actors::HttpReply, FleetError> = async {
            Ok(match self.local_actor(&route) {
                Some(actor) => outcome(
                    actor
                        .call(|p| WorkerMsg::Http(call, p), Some(timeout))
                        .await,
                    worker,
                    &route,
                    what,
                    timeout,
                )?,
                None => {
                    let msg = crate::node::messages::WorkerHttp {
                        worker: route.target.clone(),
                        call,
                    };
                    self.on_node(
                        worker,
                        &route,
                        what,
                        timeout,
                        route
                            .agent
                            .call(|p| AgentMsg::Http(Wire::new(msg), p), Some(timeout)),
                    )
                    .await?
                }
            })
        }
        .await;
        give_up.settle(&reply);
        let r = reply.and_then(|r| r.0);
        observe("http", &route, started, &r);
        r
    }
}
