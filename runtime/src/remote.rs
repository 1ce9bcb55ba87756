//! Calls that cross to another node: raced against the node's loss, mapped to typed errors, and
//! size-checked before they reach ractor_cluster.
//!
//! ractor_cluster has no liveness timeout and drops a whole peer session on a frame over its
//! limit (16 MiB by default), which would take every worker of that node with it. So:
//!
//! * every remote call has a deadline and also ends the moment its node is marked lost
//!   ([`FleetError::NodeLost`]), so a hung node (SIGSTOP: connection open, nothing answers)
//!   fails in-flight calls within the heartbeat timeout, not at their own deadline;
//! * a reply port dropped by ractor_cluster means the session closed: that is a lost node,
//!   not a failed worker;
//! * every message is checked by its *encoded* size, all fields counted, with the one guard
//!   [`fleet_actors::wire::check_size`], before it is sent: requests on the caller's side
//!   (engine calls, control requests, HTTP requests) and replies on the node's side (results,
//!   HTTP responses; errors have their text bounded with `FleetError::bounded`). Too large is
//!   [`FleetError::PayloadTooLarge`], and the session stays up.

use crate::membership::scheduler_hooks::Liveness;
use fleet_actors::rpc_server::{CallReply, CallRequest, Control, WorkerMsg};
use fleet_actors::{FleetError, HttpCall, HttpReply, NodeId, WorkerId};
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr, RpcReplyPort};
use std::future::Future;
use std::time::Duration;

/// Runs a request-reply to a node agent on `node`, failing with [`FleetError::NodeLost`] as
/// soon as the node is marked lost, and mapping ractor's outcomes to fleet's errors.
pub(crate) async fn call_on_node<T, M, F>(
    liveness: &Liveness,
    node: &NodeId,
    worker: &WorkerId,
    what: &str,
    timeout: Duration,
    fut: F,
) -> Result<T, FleetError>
where
    F: Future<Output = Result<CallResult<T>, MessagingErr<M>>>,
{
    let closed = || FleetError::NodeLost {
        node: node.to_string(),
        reason: format!("the connection to it closed while {what} on {worker} was in flight"),
    };
    let started = std::time::Instant::now();
    let timed_out =
        || FleetError::timeout(format!("{what} on worker {worker} (node {node})"), timeout);
    let map = |r: Result<CallResult<T>, MessagingErr<M>>| match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(timed_out()),
        // ractor_cluster's reply converter has a timer of its own, started a moment after
        // ours: when it fires first it drops the reply port. At or past the deadline that is
        // this call's timeout, not a closed connection.
        Ok(CallResult::SenderError) if started.elapsed() >= timeout => Err(timed_out()),
        Ok(CallResult::SenderError) | Err(_) => Err(closed()),
    };
    let Some(mut lost) = liveness.watch(node) else {
        return map(fut.await);
    };
    if let Some(e) = lost.borrow().clone() {
        return Err(e);
    }
    let verdict = lost.clone();
    tokio::select! {
        r = fut => {
            // A session that closed also drops reply ports: prefer the node's own verdict.
            let r = map(r);
            let known = verdict.borrow().clone();
            match (&r, known) {
                (Err(_), Some(e)) => Err(e),
                _ => r,
            }
        }
        _ = lost.wait_for(Option::is_some) => {
            let known = verdict.borrow().clone();
            Err(known.unwrap_or_else(closed))
        }
    }
}

/// Refuses a control request whose encoded message exceeds `limit` (every field counts).
pub(crate) fn check_control(
    control: &Control,
    worker: &WorkerId,
    limit: usize,
) -> Result<(), FleetError> {
    fleet_actors::wire::check_size(control, limit, || {
        format!("the control request for {worker}")
    })
}

/// Refuses an HTTP request whose encoded message exceeds `limit` (method, path, headers and
/// body all count).
pub(crate) fn check_http(
    call: &HttpCall,
    worker: &WorkerId,
    limit: usize,
) -> Result<(), FleetError> {
    fleet_actors::wire::check_size(call, limit, || {
        let mut path = call.path.clone();
        path.truncate(200);
        format!("the HTTP request {} {path} for {worker}", call.method)
    })
}

/// Node side: hands an engine call to a local worker and answers the (remote) caller, replacing
/// a result over `limit` by [`FleetError::PayloadTooLarge`] so it never becomes a frame that
/// would drop the session. Runs the wait in a task: the agent does not wait on workers.
pub(crate) fn forward_call_checked(
    actor: &ActorRef<WorkerMsg>,
    worker: WorkerId,
    req: CallRequest,
    port: RpcReplyPort<CallReply>,
    limit: usize,
) -> Result<(), String> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let what = format!("{:.200}.{:.200}", req.engine, req.method);
    actor
        .send_message(WorkerMsg::Call(req, tx.into()))
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let Ok(reply) = rx.await else { return };
        let reply = reply.fit(limit, || format!("the result of {what} on {worker}"));
        let _ = port.send(reply);
    });
    Ok(())
}

/// Node side: like [`forward_call_checked`] for plain HTTP requests.
pub(crate) fn forward_http_checked(
    actor: &ActorRef<WorkerMsg>,
    worker: WorkerId,
    call: HttpCall,
    port: RpcReplyPort<HttpReply>,
    limit: usize,
) -> Result<(), String> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let what = format!("{:.200} {:.200}", call.method, call.path);
    actor
        .send_message(WorkerMsg::Http(call, tx.into()))
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let Ok(reply) = rx.await else { return };
        let reply = HttpReply(fleet_actors::wire::fit_reply(reply.0, limit, || {
            format!("the response to {what} from {worker}")
        }));
        let _ = port.send(reply);
    });
    Ok(())
}
