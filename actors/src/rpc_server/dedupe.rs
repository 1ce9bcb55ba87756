//! The request-id record that makes a call carrying an explicit request id run at most once.
//!
//! * **Key.** A record belongs to (engine, method, request id). The same id sent to another
//!   engine or method is a caller bug (an id names one logical call) and is refused with
//!   `BadRequest`, instead of silently answering with the first method's result.
//! * **What is recorded.** Only calls that carry a request id, and the scheduler sends one only
//!   when the caller gave it: a generated id could never be repeated by anyone, so recording
//!   its result would protect nothing and cost memory.
//! * **Bounds.** The last [`DEFAULT_DEDUPE_CAPACITY`](super::DEFAULT_DEDUPE_CAPACITY) completed
//!   ids *and* at most [`DEFAULT_DEDUPE_BYTES`](super::DEFAULT_DEDUPE_BYTES) of recorded
//!   replies (their encoded size), oldest evicted first. A single reply larger than the byte
//!   bound is not recorded at all. A repeat that arrives after its id was evicted runs again;
//!   callers that retry do so within seconds, far inside the window at any realistic rate.

use super::messages::CallReply;
use crate::error::FleetError;
use crate::ids::RequestId;
use ractor::RpcReplyPort;
use std::collections::{HashMap, VecDeque};

/// What to do with an incoming call that has a request id.
#[derive(Debug)]
pub enum Admit {
    /// New id: run it (the id is now in flight).
    Run(RpcReplyPort<CallReply>),
    /// Already completed: here is the recorded reply and the port to answer.
    Done(CallReply, RpcReplyPort<CallReply>),
    /// Running now: the port was queued and will get the same reply.
    Joined,
    /// The id belongs to another engine or method: answer the port with this error.
    Conflict(FleetError, RpcReplyPort<CallReply>),
}

/// Which call an id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    engine: String,
    method: String,
}

#[derive(Debug)]
struct Done {
    target: Target,
    reply: CallReply,
    bytes: usize,
}

#[derive(Debug)]
struct Running {
    target: Target,
    waiters: Vec<RpcReplyPort<CallReply>>,
}

/// Completed and in-flight request ids of one worker.
#[derive(Debug)]
pub struct Dedupe {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    done: HashMap<RequestId, Done>,
    order: VecDeque<RequestId>,
    running: HashMap<RequestId, Running>,
}

/// The bytes a reply holds in the record (its encoded size, plus a little per entry).
fn reply_bytes(reply: &CallReply) -> usize {
    reply.encoded_len().saturating_add(64)
}

impl Dedupe {
    /// A record keeping at most `capacity` completed ids and `max_bytes` of replies.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Dedupe {
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            done: HashMap::new(),
            order: VecDeque::new(),
            running: HashMap::new(),
        }
    }

    fn conflict(id: &RequestId, had: &Target, engine: &str, method: &str) -> FleetError {
        FleetError::bad_request(
            format!("the request id {id} of {engine}.{method}"),
            format!(
                "it was already used for {}.{}; a request id names one logical call, so use a fresh id for each call",
                had.engine, had.method
            ),
        )
    }

    /// Decides what to do with a call of `engine.method` carrying `id`.
    pub fn admit(
        &mut self,
        id: &RequestId,
        engine: &str,
        method: &str,
        port: RpcReplyPort<CallReply>,
    ) -> Admit {
        let target = Target {
            engine: engine.to_string(),
            method: method.to_string(),
        };
        if let Some(d) = self.done.get(id) {
            if d.target != target {
                return Admit::Conflict(Self::conflict(id, &d.target, engine, method), port);
            }
            return Admit::Done(d.reply.clone(), port);
        }
        if let Some(r) = self.running.get_mut(id) {
            if r.target != target {
                return Admit::Conflict(Self::conflict(id, &r.target, engine, method), port);
            }
            r.waiters.push(port);
            return Admit::Joined;
        }
        self.running.insert(
            id.clone(),
            Running {
                target,
                waiters: Vec::new(),
            },
        );
        Admit::Run(port)
    }

    /// Records the reply of `id` and returns the ports that joined while it ran.
    pub fn complete(&mut self, id: &RequestId, reply: &CallReply) -> Vec<RpcReplyPort<CallReply>> {
        let Some(running) = self.running.remove(id) else {
            return Vec::new();
        };
        let bytes = reply_bytes(reply);
        if bytes > self.max_bytes {
            tracing::debug!(request_id = %id, bytes, limit = self.max_bytes, "reply larger than the dedupe record's byte bound; not recorded");
            return running.waiters;
        }
        let entry = Done {
            target: running.target,
            reply: reply.clone(),
            bytes,
        };
        if let Some(old) = self.done.insert(id.clone(), entry) {
            self.bytes -= old.bytes;
        } else {
            self.order.push_back(id.clone());
        }
        self.bytes += bytes;
        while self.order.len() > self.capacity || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.done.remove(&old) {
                self.bytes -= d.bytes;
            }
        }
        running.waiters
    }

    /// Forgets a running id without recording a reply (its call was dropped unrun) and returns
    /// the ports that joined it.
    pub fn abandon(&mut self, id: &RequestId) -> Vec<RpcReplyPort<CallReply>> {
        self.running
            .remove(id)
            .map(|r| r.waiters)
            .unwrap_or_default()
    }

    /// Forgets a running id whose caller went away, if every port that joined it is closed
    /// too; returns whether it did (then the call need not run).
    pub fn abandon_if_unwatched(&mut self, id: &RequestId) -> bool {
        let unwatched = self
            .running
            .get(id)
            .is_none_or(|r| r.waiters.iter().all(RpcReplyPort::is_closed));
        if unwatched {
            self.running.remove(id);
        }
        unwatched
    }

    /// Completed ids held now.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether no ids are held.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Bytes of replies held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    fn port() -> RpcReplyPort<CallReply> {
        let (tx, _rx) = ractor::concurrency::oneshot();
        tx.into()
    }

    fn run(d: &mut Dedupe, id: &str, method: &str, reply: CallReply) {
        let id = RequestId(id.into());
        assert!(matches!(d.admit(&id, "e", method, port()), Admit::Run(_)));
        d.complete(&id, &reply);
    }

    #[test]
    fn the_record_is_bounded_by_bytes_as_well_as_by_count() {
        let mut d = Dedupe::new(4096, 8 << 20);
        let mib = CallReply(Ok(Payload::json_bytes(vec![b'1'; 1 << 20])));
        for i in 0..100 {
            run(&mut d, &format!("r{i}"), "m", mib.clone());
        }
        assert!(d.bytes() <= 8 << 20, "{} bytes held", d.bytes());
        assert_eq!(d.len(), 7);
        // The newest are kept, the oldest evicted.
        let newest = RequestId("r99".into());
        assert!(matches!(
            d.admit(&newest, "e", "m", port()),
            Admit::Done(..)
        ));
        let oldest = RequestId("r0".into());
        assert!(matches!(d.admit(&oldest, "e", "m", port()), Admit::Run(_)));

        let mut d = Dedupe::new(3, usize::MAX);
        for i in 0..10 {
            run(
                &mut d,
                &format!("r{i}"),
                "m",
                CallReply(Ok(Payload::json_bytes(vec![]))),
            );
        }
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn a_reply_over_the_byte_bound_is_not_recorded() {
        let mut d = Dedupe::new(10, 1000);
        run(
            &mut d,
            "big",
            "m",
            CallReply(Ok(Payload::json_bytes(vec![0; 5000]))),
        );
        assert_eq!((d.len(), d.bytes()), (0, 0));
    }

    #[test]
    fn an_id_reused_for_another_method_is_a_bad_request() {
        let mut d = Dedupe::new(10, usize::MAX);
        run(
            &mut d,
            "step-7",
            "train",
            CallReply(Ok(Payload::json_bytes(vec![]))),
        );
        let id = RequestId("step-7".into());
        match d.admit(&id, "e", "save", port()) {
            Admit::Conflict(FleetError::BadRequest { detail, .. }, _) => {
                assert!(detail.contains("e.train"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // While running, too.
        let id = RequestId("step-8".into());
        assert!(matches!(d.admit(&id, "e", "train", port()), Admit::Run(_)));
        assert!(matches!(
            d.admit(&id, "other", "train", port()),
            Admit::Conflict(..)
        ));
    }
}
