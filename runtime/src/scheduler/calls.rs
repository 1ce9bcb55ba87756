//! Talking to workers: engine calls, control requests, readiness, and the typed
//! [`EngineHandle`].

use super::{Route, Scheduler, WorkerInfo, WorkerState};
use crate::node::messages::{AgentMsg, WorkerCall, WorkerControl};
use fleet_actors::engine::Configure;
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlOk, ControlReply, WorkerMsg, WorkerStatus,
};
use fleet_actors::wire::Wire;
use fleet_actors::{CallOptions, FleetError, Payload, WorkerId};
use ractor::rpc::CallResult;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `now + d`, saturating: a caller's `Duration::MAX` ("wait forever") becomes a moment about
/// 30 years away instead of an overflow panic.
pub(crate) fn instant_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(now)
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
        let route = self.route(worker)?;
        let what = format!("{engine}.{method}");
        // A caller that gives up on a call with a request id tells the worker (dropped or
        // timed out): the call is not run for nobody.
        let give_up = super::give_up::GiveUp::new(self, worker, opts.request_id.as_ref());
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
        reply?.0
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
        let reply: ControlReply = match self.local_actor(&route) {
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
        };
        reply.0
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
        let route = self.route(worker)?;
        // Saturating: a caller's `u64::MAX` means "no deadline", not a panic.
        let timeout = Duration::from_millis(call.timeout_ms).saturating_add(Duration::from_secs(1));
        // Errors name the request (one small allocation next to a network round trip).
        let what = format!("{} {}", call.method, call.path);
        let what = what.as_str();
        let give_up = super::give_up::GiveUp::new(self, worker, call.request_id.as_ref());
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
        reply?.0
    }

    /// Liveness of `worker`: answered by its actor at once, even while an engine call runs.
    pub async fn ping(&self, worker: &WorkerId, timeout: Duration) -> Result<(), FleetError> {
        self.control(worker, Control::Health, timeout)
            .await
            .map(|_| ())
    }

    /// Engines, call in flight, uptime of `worker`.
    pub async fn status(
        &self,
        worker: &WorkerId,
        timeout: Duration,
    ) -> Result<WorkerStatus, FleetError> {
        match self.control(worker, Control::Status, timeout).await? {
            ControlOk::Status(s) => Ok(s),
            other => Err(FleetError::internal(format!(
                "status answered with {other:?}"
            ))),
        }
    }

    /// Creates engine `name` of registered type `type_name` on `worker`, with constructor
    /// arguments `args`, waiting up to the default call deadline
    /// (`CallOptions::default().timeout`, 60 s). A duplicate name is an error. An engine whose
    /// constructor takes longer (loading weights) needs [`Scheduler::create_engine_with`].
    pub async fn create_engine<A: Serialize + ?Sized>(
        &self,
        worker: &WorkerId,
        name: &str,
        type_name: &str,
        args: &A,
    ) -> Result<EngineHandle, FleetError> {
        self.create_engine_with(worker, name, type_name, args, &CallOptions::default())
            .await
    }

    /// Like [`Scheduler::create_engine`], waiting up to `opts.timeout` for the constructor (and
    /// the `configure` hook it runs): constructors that load weights take minutes. When the
    /// deadline passes the answer is `Timeout` and the engine may still be being built: a
    /// retry with the same name then gets `EngineExists` once it is.
    pub async fn create_engine_with<A: Serialize + ?Sized>(
        &self,
        worker: &WorkerId,
        name: &str,
        type_name: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<EngineHandle, FleetError> {
        let control = Control::CreateEngine {
            name: name.to_string(),
            type_name: type_name.to_string(),
            args: Payload::bincode(args)?,
        };
        self.control(worker, control, opts.timeout).await?;
        Ok(self.engine(worker, name))
    }

    /// Creates the same engine on every worker of `role`, concurrently.
    pub async fn create_engine_on_role<A: Serialize + ?Sized>(
        &self,
        role: &str,
        name: &str,
        type_name: &str,
        args: &A,
    ) -> Result<Vec<EngineHandle>, FleetError> {
        let workers = self.workers(role).await?;
        let futs = workers
            .iter()
            .map(|w| self.create_engine(&w.id, name, type_name, args));
        futures::future::join_all(futs).await.into_iter().collect()
    }

    /// A handle to engine `name` on `worker` (no round trip; errors surface on the first call).
    pub fn engine(&self, worker: &WorkerId, name: &str) -> EngineHandle {
        EngineHandle {
            scheduler: self.clone(),
            worker: worker.clone(),
            engine: name.to_string(),
        }
    }

    /// Passes role, rank and `config` to every engine of every worker of `role` (and to engines
    /// created later). The rank is the worker's index. Waits up to the default call deadline
    /// (`CallOptions::default().timeout`, 60 s); see [`Scheduler::configure_with`].
    pub async fn configure<C: Serialize + ?Sized>(
        &self,
        role: &str,
        config: &C,
    ) -> Result<(), FleetError> {
        self.configure_with(role, config, CallOptions::default().timeout)
            .await
    }

    /// Like [`Scheduler::configure`], waiting up to `timeout` for every worker's `configure`
    /// hooks (each worker runs its hooks on its engine thread, after the calls queued before).
    pub async fn configure_with<C: Serialize + ?Sized>(
        &self,
        role: &str,
        config: &C,
        timeout: Duration,
    ) -> Result<(), FleetError> {
        let config = Payload::bincode(config)?;
        let workers = self.workers(role).await?;
        let futs = workers.iter().map(|w| {
            let cfg = Configure {
                role: role.to_string(),
                rank: w.id.index,
                config: config.clone(),
            };
            self.control(&w.id, Control::Configure(cfg), timeout)
        });
        for r in futures::future::join_all(futs).await {
            r?;
        }
        Ok(())
    }

    /// Merges `env` into the environment of every worker of `role`: engines see it on their next
    /// call and creation, processes forked afterwards inherit it. The node process's own
    /// environment is never changed.
    pub async fn set_worker_env(
        &self,
        role: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), FleetError> {
        let workers = self.workers(role).await?;
        let futs = workers
            .iter()
            .map(|w| self.control(&w.id, Control::SetEnv(env.clone()), Duration::from_secs(10)));
        for r in futures::future::join_all(futs).await {
            r?;
        }
        let mut st = self.inner.state.lock().await;
        let mut targets = Vec::new();
        if let Some(entry) = st.roles.get_mut(role) {
            for w in entry.workers.iter_mut() {
                w.env.extend(env.clone());
                targets.push(w.alias_of.clone().unwrap_or_else(|| w.id.clone()));
            }
        }
        // Keep every name of the same worker (role and its aliases) in agreement.
        for entry in st.roles.values_mut() {
            for w in entry.workers.iter_mut() {
                let real = w.alias_of.clone().unwrap_or_else(|| w.id.clone());
                if targets.contains(&real) {
                    w.env.extend(env.clone());
                }
            }
        }
        Ok(())
    }

    /// Waits until every worker of `role` answers, or fails: the role does not exist, a worker
    /// failed (with its reason and last output), or `timeout` passed (naming the workers that
    /// are not ready).
    ///
    /// Only workers that have not answered yet are pinged again, with a backoff from 5 ms
    /// doubling to 250 ms, and a failure pushed by a node wakes the wait at once: waiting
    /// minutes for one slow inference server among 64 workers costs a few messages a second,
    /// not a ping of every worker every 5 ms.
    pub async fn get_workers(
        &self,
        role: &str,
        timeout: Duration,
    ) -> Result<Vec<WorkerInfo>, FleetError> {
        const FIRST: Duration = Duration::from_millis(5);
        const CAP: Duration = Duration::from_millis(250);
        let deadline = instant_after(timeout);
        let mut failures = self.inner.failures.subscribe();
        // Workers (by incarnation) that answered a ping; a recreated worker is asked again.
        let mut answered: std::collections::HashSet<(WorkerId, u64)> = Default::default();
        let mut backoff = FIRST;
        loop {
            let workers = self.workers(role).await?;
            let mut not_ready = Vec::new();
            let mut to_ping = Vec::new();
            for w in &workers {
                match &w.state {
                    WorkerState::Failed(e) => return Err(e.clone()),
                    WorkerState::Starting => not_ready.push(w.id.to_string()),
                    WorkerState::Running if answered.contains(&(w.id.clone(), w.incarnation)) => {}
                    WorkerState::Running => to_ping.push(w),
                }
            }
            if not_ready.is_empty() {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let pings = to_ping.iter().map(|w| self.ping(&w.id, left));
                let results = futures::future::join_all(pings).await;
                for (w, r) in to_ping.iter().zip(results) {
                    match r {
                        Ok(()) => {
                            answered.insert((w.id.clone(), w.incarnation));
                        }
                        Err(e @ FleetError::WorkerFailed { .. }) => return Err(e),
                        Err(_) => not_ready.push(w.id.to_string()),
                    }
                }
                if not_ready.is_empty() {
                    return Ok(workers);
                }
            }
            if Instant::now() >= deadline {
                return Err(FleetError::timeout(
                    format!(
                        "workers of role {role:?} to become ready (not ready: {})",
                        not_ready.join(", ")
                    ),
                    timeout,
                ));
            }
            let nap = backoff.min(deadline.saturating_duration_since(Instant::now()));
            backoff = (backoff * 2).min(CAP);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                // A worker failed somewhere: look again now.
                _ = failures.changed() => {}
            }
        }
    }
}

/// A named engine on one worker, with typed calls.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    scheduler: Scheduler,
    worker: WorkerId,
    engine: String,
}

impl EngineHandle {
    /// Calls `method` with `req`, returning the typed response.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, FleetError> {
        self.scheduler
            .call(&self.worker, &self.engine, method, req, opts)
            .await
    }

    /// The worker.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The engine's name.
    pub fn name(&self) -> &str {
        &self.engine
    }
}
