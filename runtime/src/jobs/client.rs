//! A client of a head's job service, as `fleet submit`, `fleet job ...` and `fleet run --head`
//! use it: one authenticated session to the head (the cluster's cookie and TLS), the job
//! service found in its process group, one call per request, each with a deadline.

use super::protocol::{
    jobs_group, JobRow, JobsMsg, LogChunk, LogsRequest, StopRequest, SubmitRequest,
};
use crate::membership::protocol::FLEET_SCOPE;
use crate::membership::transport::remote_members;
use crate::membership::{Transport, TransportConfig};
use fleet_actors::wire::{Wire, WireReply};
use fleet_actors::FleetError;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use std::time::Duration;

/// A session to a head's job service.
pub struct JobClient {
    transport: Transport,
    service: ActorRef<JobsMsg>,
    addr: String,
    timeout: Duration,
}

impl std::fmt::Debug for JobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobClient")
            .field("head", &self.addr)
            .finish()
    }
}

impl JobClient {
    /// Connects to the head at `addr` (HOST:PORT, its cluster port) with `cfg`'s cookie and
    /// TLS; every call waits at most `timeout`.
    pub async fn connect(
        addr: &str,
        cfg: &TransportConfig,
        timeout: Duration,
    ) -> Result<JobClient, FleetError> {
        let transport =
            Transport::start(&format!("jobs-{:08x}", rand::random::<u32>()), cfg).await?;
        let found = async {
            let (session, peer) = transport.connect(addr, timeout).await?;
            remote_members(FLEET_SCOPE, &jobs_group(&peer), session)
                .into_iter()
                .next()
                .ok_or_else(|| FleetError::Unavailable {
                    what: format!("the fleet process at {addr}"),
                    detail: "it runs no job service: jobs go to a `fleet head` (a `fleet node` or `fleet run --listen` takes none)".into(),
                })
        }
        .await;
        match found {
            Ok(cell) => Ok(JobClient {
                transport,
                service: cell.into(),
                addr: addr.to_string(),
                timeout,
            }),
            Err(e) => {
                transport.stop();
                Err(e)
            }
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        msg: impl FnOnce(RpcReplyPort<WireReply<T>>) -> JobsMsg,
    ) -> Result<T, FleetError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        match self.service.call(msg, Some(self.timeout)).await {
            Ok(CallResult::Success(r)) => r.flatten(),
            Ok(CallResult::Timeout) => Err(FleetError::timeout(
                format!("{what} from the head at {}", self.addr),
                self.timeout,
            )),
            _ => Err(FleetError::Unavailable {
                what: format!("the head at {}", self.addr),
                detail: format!("the connection closed during {what} (did the head stop?)"),
            }),
        }
    }

    /// Submits a job; answered once it runs.
    pub async fn submit(&self, req: SubmitRequest) -> Result<JobRow, FleetError> {
        self.call("submitting a job", |r| JobsMsg::Submit(Wire::new(req), r))
            .await
    }

    /// Every job the head knows, newest first.
    pub async fn list(&self) -> Result<Vec<JobRow>, FleetError> {
        self.call("the job list", JobsMsg::List).await
    }

    /// One job (`id` or a unique prefix).
    pub async fn status(&self, id: &str) -> Result<JobRow, FleetError> {
        let id = id.to_string();
        self.call("a job's status", |r| JobsMsg::Status(Wire::new(id), r))
            .await
    }

    /// A piece of a job's log from `offset`.
    pub async fn logs(&self, id: &str, offset: u64) -> Result<LogChunk, FleetError> {
        let req = LogsRequest {
            id: id.to_string(),
            offset,
            max_bytes: super::service::MAX_LOG_CHUNK,
        };
        self.call("a job's log", |r| JobsMsg::Logs(Wire::new(req), r))
            .await
    }

    /// Asks a job to stop (`now`: cancel its episodes in flight at once).
    pub async fn stop(&self, id: &str, now: bool) -> Result<JobRow, FleetError> {
        let req = StopRequest {
            id: id.to_string(),
            now,
        };
        self.call("stopping a job", |r| JobsMsg::Stop(Wire::new(req), r))
            .await
    }

    /// Writes the job's log from `offset` to `out` until the job ends (with `follow`) or the
    /// log's current end; polls every `every` while following. Returns the offset reached.
    pub async fn copy_logs(
        &self,
        id: &str,
        mut offset: u64,
        follow: bool,
        every: Duration,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, FleetError> {
        loop {
            let chunk = self.logs(id, offset).await?;
            let _ = out.write_all(chunk.text.as_bytes());
            let _ = out.flush();
            let moved = chunk.next_offset > offset;
            offset = chunk.next_offset;
            if chunk.done || (!follow && !moved) {
                return Ok(offset);
            }
            if !moved {
                tokio::time::sleep(every).await;
            }
        }
    }

    /// Closes the session.
    pub fn close(self) {
        self.transport.stop();
    }
}
