//! The engine thread of one worker: runs engine jobs one at a time, in arrival order.
//!
//! It is a plain OS thread, not a tokio task, because engine code blocks (GPU kernels, a
//! `thread::sleep`, a synchronous client) and must not stall the runtime's few worker threads.
//! It replies straight to the caller's reply port, so the actor is never on the return path.
//! While idle it blocks in `recv` (parked in the kernel): no polling, no CPU.

use super::dedupe::Dedupe;
use super::messages::{CallReply, CallRequest};
use crate::engine::{Configure, Engine, EngineCall, EngineError, EngineFactory, EngineInit};
use crate::error::FleetError;
use crate::ids::WorkerId;
use crate::payload::Payload;
use ractor::RpcReplyPort;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::oneshot;

/// An engine's state as the actor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// Being constructed; calls queue behind the construction.
    Pending(String),
    /// Ready.
    Ready(String),
}

impl Slot {
    pub(super) fn type_name(&self) -> &str {
        match self {
            Slot::Pending(t) | Slot::Ready(t) => t,
        }
    }
}

/// State shared by the actor and its engine thread.
pub(super) struct Shared {
    pub(super) engines: Mutex<BTreeMap<String, Slot>>,
    pub(super) dedupe: Mutex<Dedupe>,
    pub(super) in_flight: Mutex<Option<(String, Instant)>>,
    pub(super) queued: AtomicU64,
    pub(super) calls_done: AtomicU64,
    /// The reply ports of calls queued or running, by sequence number. The engine thread takes
    /// a call's port out when it answers; a destroy takes them all and answers every caller
    /// with an error, so a destroyed worker's late result finds no port and is dropped.
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_seq: AtomicU64,
}

/// A caller waiting for a queued or running call.
pub(super) struct Waiting {
    request_id: Option<crate::ids::RequestId>,
    port: RpcReplyPort<CallReply>,
    /// Set when the engine thread takes the call up: a cancel no longer drops it.
    started: bool,
}

/// Locks, recovering from a poisoned lock (a panic in an engine is caught before it can poison
/// these, but a recovered guard is still the right thing for bookkeeping maps).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(super) fn new(dedupe_capacity: usize, dedupe_bytes: usize) -> Self {
        Shared {
            engines: Mutex::new(BTreeMap::new()),
            dedupe: Mutex::new(Dedupe::new(dedupe_capacity, dedupe_bytes)),
            in_flight: Mutex::new(None),
            queued: AtomicU64::new(0),
            calls_done: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
        }
    }

    /// Records a caller's port; the engine thread finds it by the returned number.
    pub(super) fn register(
        &self,
        request_id: Option<crate::ids::RequestId>,
        port: RpcReplyPort<CallReply>,
    ) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiting).insert(
            seq,
            Waiting {
                request_id,
                port,
                started: false,
            },
        );
        seq
    }

    /// Drops the queued calls with request id `id` whose caller gave up, unless someone else
    /// joined them by the same id (then they still run, for that caller). A call the engine
    /// thread has taken up is left alone. Returns how many were dropped.
    pub(super) fn cancel(&self, id: &crate::ids::RequestId, what: &str) -> usize {
        let queued = lock(&self.waiting)
            .values()
            .any(|w| !w.started && w.request_id.as_ref() == Some(id));
        if !queued || !lock(&self.dedupe).abandon_if_unwatched(id) {
            return 0;
        }
        let dropped: Vec<Waiting> = {
            let mut waiting = lock(&self.waiting);
            let seqs: Vec<u64> = waiting
                .iter()
                .filter(|(_, w)| !w.started && w.request_id.as_ref() == Some(id))
                .map(|(seq, _)| *seq)
                .collect();
            seqs.iter().filter_map(|s| waiting.remove(s)).collect()
        };
        let n = dropped.len();
        for w in dropped {
            let _ = w.port.send(CallReply(Err(FleetError::Unavailable {
                what: what.to_string(),
                detail: format!(
                    "the call with request id {id} was cancelled by its caller before it ran"
                ),
            })));
        }
        n
    }

    fn take(&self, seq: u64) -> Option<RpcReplyPort<CallReply>> {
        lock(&self.waiting).remove(&seq).map(|w| w.port)
    }

    /// Takes a queued call up: `Some(closed)` while its caller is recorded (from now on a
    /// cancel leaves it alone), `None` once it was answered (destroyed or cancelled).
    fn start(&self, seq: u64) -> Option<bool> {
        lock(&self.waiting).get_mut(&seq).map(|w| {
            w.started = true;
            w.port.is_closed()
        })
    }

    /// Answers every queued and running call (and everyone who joined one by request id) with
    /// `err` now; their results, if the engine thread still produces them, are dropped.
    pub(super) fn fail_all(&self, err: &FleetError) -> usize {
        let waiting: Vec<Waiting> = lock(&self.waiting).drain().map(|(_, w)| w).collect();
        let reply = CallReply(Err(err.clone()));
        let n = waiting.len();
        for w in waiting {
            if let Some(id) = &w.request_id {
                for joined in lock(&self.dedupe).abandon(id) {
                    let _ = joined.send(reply.clone());
                }
            }
            let _ = w.port.send(reply.clone());
        }
        n
    }
}

/// Work for the engine thread.
pub(super) enum Job {
    Create {
        name: String,
        type_name: String,
        factory: EngineFactory,
        args: Payload,
        reply: oneshot::Sender<Result<(), FleetError>>,
    },
    Call {
        req: CallRequest,
        /// Its caller's port, in [`Shared`]'s waiting table.
        seq: u64,
        /// When the caller stops waiting, and the budget that deadline came from.
        deadline: Option<(Instant, std::time::Duration)>,
    },
    Configure {
        cfg: Configure,
        reply: oneshot::Sender<Result<(), FleetError>>,
    },
    SetEnv(BTreeMap<String, String>),
    Destroy {
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// Starts the engine thread for `worker`.
pub(super) fn start(
    worker: WorkerId,
    env: BTreeMap<String, String>,
    shared: Arc<Shared>,
    max_result: usize,
    exit: Option<oneshot::Sender<()>>,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("engine {worker}"))
        .spawn(move || {
            // Dropped when this thread ends, engines and all: the "engine thread joined" signal
            // its node waits for before it gives the worker's GPUs, ports and memory back.
            let _exit = exit;
            Executor {
                worker,
                env,
                shared,
                engines: BTreeMap::new(),
                config: None,
                max_result,
            }
            .run(rx)
        })?;
    Ok(tx)
}

struct Executor {
    worker: WorkerId,
    env: BTreeMap<String, String>,
    shared: Arc<Shared>,
    engines: BTreeMap<String, Box<dyn Engine>>,
    config: Option<Configure>,
    max_result: usize,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

impl Executor {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        // A blocking receive: the thread parks in the kernel while there is no work, so an idle
        // worker costs no CPU, and a busy one costs only the work it does. Waking a parked
        // thread takes a few tens of microseconds, noise next to engine calls of milliseconds.
        while let Ok(job) = rx.recv() {
            match job {
                Job::Create {
                    name,
                    type_name,
                    factory,
                    args,
                    reply,
                } => {
                    let r = self.create(&name, &type_name, &factory, args);
                    let _ = reply.send(r.map_err(FleetError::bounded));
                }
                Job::Call { req, seq, deadline } => self.call(req, seq, deadline),
                Job::Configure { cfg, reply } => {
                    let r = self.configure(cfg);
                    let _ = reply.send(r.map_err(FleetError::bounded));
                }
                Job::SetEnv(vars) => self.env.extend(vars),
                Job::Destroy { reply } => {
                    let errors = self.destroy();
                    let _ = reply.send(errors);
                    return;
                }
            }
        }
        // The actor is gone without a destroy (killed, or its node stopped): still give the
        // engines their destroy hook so they release what they hold.
        let _ = self.destroy();
    }

    fn create(
        &mut self,
        name: &str,
        type_name: &str,
        factory: &EngineFactory,
        args: Payload,
    ) -> Result<(), FleetError> {
        let init = EngineInit {
            worker: self.worker.clone(),
            name: name.to_string(),
            args,
            env: self.env.clone(),
        };
        let fail = |message: String| FleetError::EngineFailed {
            worker: self.worker.to_string(),
            engine: name.to_string(),
            method: format!("<create {type_name}>"),
            message,
        };
        let built = catch_unwind(AssertUnwindSafe(|| factory(&init)));
        let result = match built {
            Ok(Ok(mut engine)) => {
                let configured = match &self.config {
                    Some(cfg) => catch_unwind(AssertUnwindSafe(|| engine.configure(cfg)))
                        .map_err(panic_message)
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    None => Ok(()),
                };
                match configured {
                    Ok(()) => {
                        self.engines.insert(name.to_string(), engine);
                        Ok(())
                    }
                    Err(m) => Err(fail(format!("configure: {m}"))),
                }
            }
            Ok(Err(EngineError::BadArgs(m))) => Err(FleetError::bad_request(
                format!("creating engine {name:?} ({type_name}) on {}", self.worker),
                m,
            )),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(p) => Err(fail(panic_message(p))),
        };
        let mut slots = lock(&self.shared.engines);
        match &result {
            Ok(()) => {
                slots.insert(name.to_string(), Slot::Ready(type_name.to_string()));
            }
            Err(_) => {
                slots.remove(name);
            }
        }
        result
    }

    fn call(
        &mut self,
        req: CallRequest,
        seq: u64,
        deadline: Option<(Instant, std::time::Duration)>,
    ) {
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("fleet_engine_queue_depth").decrement(1.0);
        // Its caller was answered already (the worker was destroyed, or the caller cancelled
        // it): do not run it.
        let Some(closed) = self.shared.start(seq) else {
            tracing::debug!(worker = %self.worker, engine = %req.engine, method = %req.method, "call of a destroyed worker, or cancelled by its caller, dropped before it ran");
            return;
        };
        // Work nobody waits for any more is dropped before it runs: its deadline passed (the
        // caller, and anyone who joined it by request id, get a `Timeout`), or its caller went
        // away and no one joined it.
        if let Some((_, budget)) = deadline.filter(|(at, _)| Instant::now() >= *at) {
            let timeout = CallReply(Err(FleetError::timeout(
                format!(
                    "{}.{} on {} (dropped from the engine queue unrun: its deadline passed while it waited behind other calls)",
                    req.engine, req.method, self.worker
                ),
                budget,
            )));
            let waiters = match &req.request_id {
                Some(id) => lock(&self.shared.dedupe).abandon(id),
                None => Vec::new(),
            };
            tracing::debug!(worker = %self.worker, engine = %req.engine, method = %req.method, "expired call dropped before it ran");
            for w in waiters {
                let _ = w.send(timeout.clone());
            }
            if let Some(reply) = self.shared.take(seq) {
                let _ = reply.send(timeout);
            }
            return;
        }
        if closed {
            let abandoned = match &req.request_id {
                Some(id) => lock(&self.shared.dedupe).abandon_if_unwatched(id),
                None => true,
            };
            if abandoned {
                tracing::debug!(worker = %self.worker, engine = %req.engine, method = %req.method, "call whose caller went away dropped before it ran");
                self.shared.take(seq);
                return;
            }
        }
        // A result too large to send back in one message is refused here, and an error's text
        // is bounded, so the reply can never become a frame that would drop a cluster session.
        let result = CallReply(self.run_call(&req))
            .fit(self.max_result, || {
                format!(
                    "the result of {}.{} on {}",
                    req.engine, req.method, self.worker
                )
            })
            .0;
        self.shared.calls_done.fetch_add(1, Ordering::Relaxed);
        let reply_value = CallReply(result);
        // Taken after the call ran: a destroy meanwhile answered the caller with an error, and
        // this late result is dropped, never delivered as a success of a deleted worker.
        let Some(reply) = self.shared.take(seq) else {
            tracing::warn!(worker = %self.worker, engine = %req.engine, method = %req.method, "result of a call that outlived its worker's destroy dropped");
            return;
        };
        if let Some(id) = &req.request_id {
            let waiters = lock(&self.shared.dedupe).complete(id, &reply_value);
            for w in waiters {
                let _ = w.send(reply_value.clone());
            }
        }
        let _ = reply.send(reply_value);
    }

    fn run_call(&mut self, req: &CallRequest) -> Result<Payload, FleetError> {
        let worker = self.worker.to_string();
        let Some(engine) = self.engines.get_mut(&req.engine) else {
            let known = self.engines.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(FleetError::EngineNotFound {
                worker,
                engine: req.engine.clone(),
                known,
            });
        };
        *lock(&self.shared.in_flight) =
            Some((format!("{}.{}", req.engine, req.method), Instant::now()));
        let call = EngineCall::new(
            &req.method,
            &req.args,
            &req.rpc_meta,
            &self.env,
            &self.worker,
        );
        let outcome = catch_unwind(AssertUnwindSafe(|| engine.call(call)));
        *lock(&self.shared.in_flight) = None;
        match outcome {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(EngineError::MethodNotFound)) => Err(FleetError::MethodNotFound {
                worker,
                engine: req.engine.clone(),
                method: req.method.clone(),
            }),
            Ok(Err(EngineError::BadArgs(detail))) => Err(FleetError::BadRequest {
                what: format!("arguments of {}.{} on {worker}", req.engine, req.method),
                detail,
            }),
            Ok(Err(EngineError::Failed(message))) => Err(FleetError::EngineFailed {
                worker,
                engine: req.engine.clone(),
                method: req.method.clone(),
                message,
            }),
            Err(p) => {
                let message = panic_message(p);
                tracing::error!(worker = %self.worker, engine = %req.engine, method = %req.method, %message, "engine panicked; the worker keeps serving");
                Err(FleetError::EngineFailed {
                    worker,
                    engine: req.engine.clone(),
                    method: req.method.clone(),
                    message,
                })
            }
        }
    }

    fn configure(&mut self, cfg: Configure) -> Result<(), FleetError> {
        let mut failures = Vec::new();
        for (name, engine) in self.engines.iter_mut() {
            let r = catch_unwind(AssertUnwindSafe(|| engine.configure(&cfg)))
                .map_err(panic_message)
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(m) = r {
                failures.push(format!("{name}: {m}"));
            }
        }
        self.config = Some(cfg);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(FleetError::EngineFailed {
                worker: self.worker.to_string(),
                engine: "*".into(),
                method: "<configure>".into(),
                message: failures.join("; "),
            })
        }
    }

    fn destroy(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, mut engine) in std::mem::take(&mut self.engines) {
            let r = catch_unwind(AssertUnwindSafe(|| engine.destroy()))
                .map_err(panic_message)
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(m) = r {
                errors.push(format!("{name}: {m}"));
            }
        }
        lock(&self.shared.engines).clear();
        errors
    }
}
