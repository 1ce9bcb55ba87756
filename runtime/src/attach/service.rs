//! The head's scheduler service: an actor in the `fleet`/`scheduler/<server>` group that runs
//! the requests of connected programs ([`crate::Cluster::connect`]) on the head's own
//! [`Scheduler`], and deletes a program's roles when its session closes.
//!
//! The actor never waits for a request: each one runs in a task of its own, bounded by the
//! caller's deadline, and the answer is sent from that task. So a slow `create_workers` (an
//! inference server loading for minutes) never holds up a `ping` of another program, and a
//! thousand calls in flight cost a thousand small tasks, not a queue. At most
//! [`MAX_IN_FLIGHT`] requests run at once; one more is refused with a typed error.
//!
//! Ownership: a role a client created is recorded under the client's ractor_cluster name
//! (random per connect). When the head's transport reports that client's session closed
//! (a clean `shutdown`, a crash, a SIGKILL: the TCP connection ends either way) and no other
//! session of that name is open, the roles it still owns are deleted, so its workers and their
//! child processes go, and nothing else does: the nodes, other clients' roles and submitted
//! jobs stay. A create that finishes after its client is gone is deleted at once.

use super::protocol::{scheduler_group, Answer, Op, Request, SchedulerMsg};
use crate::membership::protocol::FLEET_SCOPE;
use crate::membership::transport::SessionEventKind;
use crate::membership::Transport;
use crate::scheduler::Scheduler;
use fleet_actors::wire::Wire;
use fleet_actors::FleetError;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most requests the service runs at once.
pub const MAX_IN_FLIGHT: usize = 4096;

/// How many closed clients are remembered (for creates that finish after their client left).
const GONE_KEPT: usize = 4096;

/// The service waits this much past a request's own deadline, so that the scheduler's own
/// typed timeout (naming the worker) is what the caller gets.
const GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Owners {
    /// Client name -> roles it created and has not deleted.
    roles: HashMap<String, BTreeSet<String>>,
    /// Clients whose session closed, oldest first (bounded).
    gone: VecDeque<String>,
    gone_set: HashSet<String>,
}

struct Shared {
    scheduler: Scheduler,
    owners: Mutex<Owners>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running scheduler service (see the module docs). Dropping it leaves it running; call
/// [`SchedulerService::stop`].
#[derive(Clone)]
pub struct SchedulerService {
    shared: Arc<Shared>,
    actor: ActorRef<SchedulerMsg>,
    watcher: tokio::task::AbortHandle,
}

impl std::fmt::Debug for SchedulerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerService").finish()
    }
}

struct ServiceActor;

impl Actor for ServiceActor {
    type Msg = SchedulerMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        let SchedulerMsg::Request(req, reply) = msg;
        let req = match req.into_result() {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Wire::new(Err(e)));
                return Ok(());
            }
        };
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            let _ = reply.send(Wire::new(Err(FleetError::Unavailable {
                what: "the head's scheduler service".into(),
                detail: format!(
                    "{MAX_IN_FLIGHT} requests are running already; retry later or send fewer at once"
                ),
            })));
            return Ok(());
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let limit = shared.scheduler.max_payload();
            let what = format!("the answer to {} for {}", req.op.name(), req.client);
            let r = serve(&shared, req).await;
            let r = fleet_actors::wire::fit_reply(r, limit, || what);
            let _ = reply.send(Wire::new(r));
            drop(permit);
        });
        Ok(())
    }
}

/// Runs one request in a task of its own, waiting at most its deadline (plus [`GRACE`]) for
/// it. The task is not cancelled when the wait ends: a create or delete completes (or rolls
/// back) on the head whatever the caller does, and a call ends with its own deadline.
async fn serve(shared: &Arc<Shared>, req: Request) -> Result<Answer, FleetError> {
    let timeout = Duration::from_millis(req.timeout_ms);
    let name = req.op.name();
    let task = tokio::spawn(run(shared.clone(), req));
    match tokio::time::timeout(timeout.saturating_add(GRACE), task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(FleetError::internal(format!(
            "{name} on the head ended without an answer: {e}"
        ))),
        Err(_) => Err(FleetError::timeout(format!("{name} on the head"), timeout)),
    }
}

async fn run(shared: Arc<Shared>, req: Request) -> Result<Answer, FleetError> {
    let s = &shared.scheduler;
    let timeout = Duration::from_millis(req.timeout_ms);
    match req.op {
        Op::CreateWorkers(job) => {
            let role = job.role.clone();
            let infos = s.create_workers(job).await?;
            let gone = {
                let mut o = shared.owners();
                let gone = o.gone_set.contains(&req.client);
                if !gone {
                    o.roles
                        .entry(req.client.clone())
                        .or_default()
                        .insert(role.clone());
                }
                gone
            };
            if gone {
                tracing::warn!(client = %req.client, role, "the client left while its role was being created; deleting it");
                let _ = s.delete_workers(Some(&role), false).await;
                return Err(FleetError::Unavailable {
                    what: format!("role {role}"),
                    detail: "its client disconnected while it was being created; it was deleted"
                        .into(),
                });
            }
            Ok(Answer::Workers(infos))
        }
        Op::DeleteWorkers {
            role: Some(role),
            reverse,
        } => {
            for roles in shared.owners().roles.values_mut() {
                roles.remove(&role);
            }
            s.delete_workers(Some(&role), reverse).await?;
            Ok(Answer::Done)
        }
        Op::DeleteWorkers {
            role: None,
            reverse,
        } => {
            let mine = shared
                .owners()
                .roles
                .remove(&req.client)
                .unwrap_or_default();
            delete_roles(s, &mine, reverse).await?;
            Ok(Answer::Done)
        }
        Op::Workers(role) => s.workers(&role).await.map(Answer::Workers),
        Op::Job(role) => s.job(&role).await.map(|j| Answer::Job(Box::new(j))),
        Op::Roles => Ok(Answer::Roles(s.roles().await)),
        Op::GetWorkers(role) => s.get_workers(&role, timeout).await.map(Answer::Workers),
        Op::Call {
            worker,
            engine,
            method,
            args,
            opts,
        } => s
            .call_raw(&worker, &engine, &method, args, &opts)
            .await
            .map(Answer::Payload),
        Op::Control { worker, control } => s
            .control(&worker, control, timeout)
            .await
            .map(Answer::Control),
        Op::Http { worker, call } => s.http(&worker, call).await.map(Answer::Http),
        Op::SetWorkerEnv { role, env } => {
            s.set_worker_env(&role, &env).await?;
            Ok(Answer::Done)
        }
    }
}

/// Deletes `roles` (newest-first order is the scheduler's business: dependents go first
/// anyway), collecting the errors.
async fn delete_roles(
    s: &Scheduler,
    roles: &BTreeSet<String>,
    reverse: bool,
) -> Result<(), FleetError> {
    let mut errors = Vec::new();
    for role in roles {
        if let Err(e) = s.delete_workers(Some(role), reverse).await {
            errors.push(format!("{role}: {e}"));
        }
    }
    crate::scheduler::delete::unclean(errors)
}

/// A peer's ractor_cluster name without its `@host` (what the client calls itself).
fn bare_name(peer: &str) -> &str {
    peer.split_once('@').map(|(n, _)| n).unwrap_or(peer)
}

/// A client's session closed: unless another session of the same name is still open, forget
/// the client and delete the roles it owns.
async fn client_closed(shared: &Arc<Shared>, transport: &Transport, client: String) {
    if transport
        .peer_names()
        .await
        .iter()
        .any(|n| bare_name(n) == client)
    {
        return;
    }
    let roles = {
        let mut o = shared.owners();
        if o.gone_set.insert(client.clone()) {
            o.gone.push_back(client.clone());
            while o.gone.len() > GONE_KEPT {
                if let Some(old) = o.gone.pop_front() {
                    o.gone_set.remove(&old);
                }
            }
        }
        o.roles.remove(&client).unwrap_or_default()
    };
    if roles.is_empty() {
        return;
    }
    tracing::warn!(client = %client, roles = ?roles, "a connected program left; deleting the roles it created");
    if let Err(e) = delete_roles(&shared.scheduler, &roles, false).await {
        tracing::warn!(client = %client, error = %e, "deleting a departed program's roles");
    }
}

impl SchedulerService {
    /// Starts the scheduler service of the head whose transport is `transport` (its node
    /// server's name names the group) and whose scheduler is `scheduler`.
    pub async fn start(
        transport: &Transport,
        scheduler: Scheduler,
    ) -> Result<SchedulerService, FleetError> {
        let shared = Arc::new(Shared {
            scheduler,
            owners: Mutex::new(Owners::default()),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        });
        // Subscribed before the service is visible: no close can be missed.
        let mut events = transport.subscribe();
        let (actor, _) = Actor::spawn(None, ServiceActor, shared.clone())
            .await
            .map_err(|e| {
                FleetError::internal(format!("the scheduler service did not start: {e}"))
            })?;
        ractor::pg::join_scoped(
            FLEET_SCOPE.to_string(),
            scheduler_group(&transport.name),
            vec![actor.get_cell()],
        );
        let (t, sh) = (transport.clone(), shared.clone());
        let watcher = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.kind == SessionEventKind::Closed => {
                        if let Some(client) = ev.peer_name.as_deref().map(bare_name) {
                            let client = client.to_string();
                            let (t, sh) = (t.clone(), sh.clone());
                            tokio::spawn(async move { client_closed(&sh, &t, client).await });
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::error!(missed = n, "the scheduler service missed session events; a departed program's roles may stay until deleted");
                    }
                    Err(_) => return,
                }
            }
        })
        .abort_handle();
        Ok(SchedulerService {
            shared,
            actor,
            watcher,
        })
    }

    /// The roles each connected program owns now (client name -> roles).
    pub fn owners(&self) -> HashMap<String, BTreeSet<String>> {
        self.shared.owners().roles.clone()
    }

    /// Stops taking requests.
    pub fn stop(&self) {
        self.watcher.abort();
        self.actor.stop(None);
    }
}
