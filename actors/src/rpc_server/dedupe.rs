//! The request-id record that makes non-idempotent calls run at most once.
//!
//! Retention is by count: the last `capacity` completed ids (oldest evicted first). A repeat
//! that arrives after its id was evicted runs again; callers that retry do so within seconds, far
//! inside the window at any realistic call rate.

use super::messages::CallReply;
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
}

/// Completed and in-flight request ids of one worker.
#[derive(Debug)]
pub struct Dedupe {
    capacity: usize,
    done: HashMap<RequestId, CallReply>,
    order: VecDeque<RequestId>,
    running: HashMap<RequestId, Vec<RpcReplyPort<CallReply>>>,
}

impl Dedupe {
    /// A record keeping `capacity` completed ids.
    pub fn new(capacity: usize) -> Self {
        Dedupe {
            capacity: capacity.max(1),
            done: HashMap::new(),
            order: VecDeque::new(),
            running: HashMap::new(),
        }
    }

    /// Decides what to do with a call carrying `id`.
    pub fn admit(&mut self, id: &RequestId, port: RpcReplyPort<CallReply>) -> Admit {
        if let Some(reply) = self.done.get(id) {
            return Admit::Done(reply.clone(), port);
        }
        if let Some(waiters) = self.running.get_mut(id) {
            waiters.push(port);
            return Admit::Joined;
        }
        self.running.insert(id.clone(), Vec::new());
        Admit::Run(port)
    }

    /// Records the reply of `id` and returns the ports that joined while it ran.
    pub fn complete(&mut self, id: &RequestId, reply: &CallReply) -> Vec<RpcReplyPort<CallReply>> {
        let waiters = self.running.remove(id).unwrap_or_default();
        if self.done.insert(id.clone(), reply.clone()).is_none() {
            self.order.push_back(id.clone());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.done.remove(&old);
            }
        }
        waiters
    }

    /// Completed ids held now.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether no ids are held.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}
