//! The client side of a connected [`Scheduler`](crate::Scheduler): one authenticated session
//! to the head, the head's scheduler service found in its process group, and one call per
//! scheduler request, each with the caller's deadline.

use super::protocol::{Answer, Op, Request, SchedulerMsg};
use crate::membership::Transport;
use fleet_actors::wire::Wire;
use fleet_actors::FleetError;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::time::Duration;

/// How much longer than a request's own deadline the link waits for the head's answer: the
/// head answers a request that ran out of time with a typed error of its own, which is better
/// than a bare timeout here.
const ANSWER_GRACE: Duration = Duration::from_secs(3);

/// A session to a head's scheduler service (see [`crate::attach`]).
pub struct RemoteLink {
    pub(super) transport: Transport,
    pub(super) service: ActorRef<SchedulerMsg>,
    /// Our ractor_cluster name: what the head records our roles under.
    pub(super) client: String,
    pub(super) addr: String,
    /// The deadline of requests that take none of their own (create, delete, workers, ...).
    pub(super) timeout: Duration,
}

impl std::fmt::Debug for RemoteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLink")
            .field("head", &self.addr)
            .field("client", &self.client)
            .finish()
    }
}

fn unexpected(op: &str, a: &Answer) -> FleetError {
    FleetError::Protocol {
        detail: format!("the head answered {op} with {a:?}"),
    }
}

impl RemoteLink {
    /// The head's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The deadline of requests that take none of their own.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `op` with deadline `timeout` and waits for the answer (a little longer than
    /// `timeout`, see [`ANSWER_GRACE`]).
    pub(crate) async fn ask(&self, op: Op, timeout: Duration) -> Result<Answer, FleetError> {
        let name = op.name();
        let req = Request {
            client: self.client.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            op,
        };
        let wait = timeout.saturating_add(ANSWER_GRACE);
        match self
            .service
            .call(|p| SchedulerMsg::Request(Wire::new(req), p), Some(wait))
            .await
        {
            Ok(CallResult::Success(r)) => r.flatten(),
            Ok(CallResult::Timeout) => Err(FleetError::timeout(
                format!("{name} through the head at {}", self.addr),
                wait,
            )),
            _ => Err(FleetError::Unavailable {
                what: format!("the head at {}", self.addr),
                detail: format!(
                    "the connection closed during {name} (did the head stop, or was this cluster shut down?)"
                ),
            }),
        }
    }

    pub(crate) async fn workers(
        &self,
        op: Op,
        timeout: Duration,
    ) -> Result<Vec<crate::scheduler::WorkerInfo>, FleetError> {
        let name = op.name();
        match self.ask(op, timeout).await? {
            Answer::Workers(w) => Ok(w),
            a => Err(unexpected(name, &a)),
        }
    }

    pub(crate) async fn done(&self, op: Op, timeout: Duration) -> Result<(), FleetError> {
        let name = op.name();
        match self.ask(op, timeout).await? {
            Answer::Done => Ok(()),
            a => Err(unexpected(name, &a)),
        }
    }

    pub(crate) async fn job(
        &self,
        role: &str,
        timeout: Duration,
    ) -> Result<fleet_actors::Job, FleetError> {
        match self.ask(Op::Job(role.to_string()), timeout).await? {
            Answer::Job(j) => Ok(*j),
            a => Err(unexpected("job", &a)),
        }
    }

    pub(crate) async fn roles(&self, timeout: Duration) -> Result<Vec<String>, FleetError> {
        match self.ask(Op::Roles, timeout).await? {
            Answer::Roles(r) => Ok(r),
            a => Err(unexpected("roles", &a)),
        }
    }

    pub(crate) async fn payload(
        &self,
        op: Op,
        timeout: Duration,
    ) -> Result<fleet_actors::Payload, FleetError> {
        match self.ask(op, timeout).await? {
            Answer::Payload(p) => Ok(p),
            a => Err(unexpected("call", &a)),
        }
    }

    pub(crate) async fn control(
        &self,
        op: Op,
        timeout: Duration,
    ) -> Result<fleet_actors::rpc_server::ControlOk, FleetError> {
        match self.ask(op, timeout).await? {
            Answer::Control(c) => Ok(c),
            a => Err(unexpected("control", &a)),
        }
    }

    pub(crate) async fn http(
        &self,
        op: Op,
        timeout: Duration,
    ) -> Result<fleet_actors::HttpResponseData, FleetError> {
        match self.ask(op, timeout).await? {
            Answer::Http(h) => Ok(h),
            a => Err(unexpected("http", &a)),
        }
    }

    /// Closes the session (the head then deletes the roles this link still owns).
    pub(crate) fn close(&self) {
        self.transport.stop();
    }
}
