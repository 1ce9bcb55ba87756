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
//! * user bytes (call arguments, engine constructor arguments, configuration, HTTP bodies,
//!   and on the node side call results and HTTP response bodies) are checked against the limit
//!   before sending and refused with [`FleetError::PayloadTooLarge`].

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
    let map = |r: Result<CallResult<T>, MessagingErr<M>>| match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(FleetError::timeout(
            format!("{what} on worker {worker} (node {node})"),
            timeout,
        )),
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

fn too_large(what: String, size: usize, limit: usize) -> FleetError {
    FleetError::PayloadTooLarge {
        what,
        size: size as u64,
        limit: limit as u64,
    }
}

/// Refuses a control request whose user bytes exceed `limit`.
pub(crate) fn check_control(
    control: &Control,
    worker: &WorkerId,
    limit: usize,
) -> Result<(), FleetError> {
    let size = match control {
        Control::CreateEngine { args, .. } => args.len(),
        Control::Configure(c) => c.config.len(),
        Control::SetEnv(env) => env.iter().map(|(k, v)| k.len() + v.len()).sum(),
        _ => 0,
    };
    if size > limit {
        return Err(too_large(
            format!("the control request for {worker}"),
            size,
            limit,
        ));
    }
    Ok(())
}

/// Refuses an HTTP request whose body and headers exceed `limit`.
pub(crate) fn check_http(
    call: &HttpCall,
    worker: &WorkerId,
    limit: usize,
) -> Result<(), FleetError> {
    let size = call.body.len()
        + call
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > limit {
        return Err(too_large(
            format!(
                "the HTTP request {} {} for {worker}",
                call.method, call.path
            ),
            size,
            limit,
        ));
    }
    Ok(())
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
    let what = format!("{}.{}", req.engine, req.method);
    actor
        .send_message(WorkerMsg::Call(req, tx.into()))
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let Ok(reply) = rx.await else { return };
        let reply = match reply {
            CallReply(Ok(p)) if p.len() > limit => CallReply(Err(too_large(
                format!("the result of {what} on {worker}"),
                p.len(),
                limit,
            ))),
            other => other,
        };
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
    let what = format!("{} {}", call.method, call.path);
    actor
        .send_message(WorkerMsg::Http(call, tx.into()))
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let Ok(reply) = rx.await else { return };
        let reply = match reply {
            HttpReply(Ok(r)) if r.body.len() > limit => HttpReply(Err(too_large(
                format!("the response to {what} from {worker}"),
                r.body.len(),
                limit,
            ))),
            other => other,
        };
        let _ = port.send(reply);
    });
    Ok(())
}
