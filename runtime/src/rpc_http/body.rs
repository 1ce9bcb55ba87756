//! Reading a request body under the size limit and the body deadline, and refusing an oversize
//! one early.
//!
//! A declared `Content-Length` over the limit is answered 413 before a byte of the body is
//! read (the client may not even have sent it: with `Expect: 100-continue` it never does). A
//! chunked body is counted as it arrives and cut off at the limit. Either way the handler
//! answers with a typed error and the server keeps serving; hyper closes that one connection,
//! since its unread rest cannot be skipped safely.

use super::errors::ApiError;
use bytes::Bytes;
use fleet_actors::FleetError;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::HeaderMap;
use std::time::Duration;

/// Reads the whole body of `what` (e.g. `POST /call`) if it fits in `limit` bytes and arrives
/// within `deadline`.
pub(super) async fn read_limited(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    deadline: Duration,
    what: &str,
) -> Result<Bytes, ApiError> {
    let too_large = |size: u64| FleetError::PayloadTooLarge {
        what: format!("the body of {what}"),
        size,
        limit: limit as u64,
    };
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        // hyper has already refused a malformed Content-Length; this parse cannot fail on one
        // it accepted, but a failure is still an answer, not a panic.
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| FleetError::bad_request(what, "invalid Content-Length"))?;
        if len > limit as u64 {
            return Err(too_large(len).into());
        }
    }
    let collected = tokio::time::timeout(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::body_timeout(what, deadline))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            // A chunked body: its real size is unknown, only that it passed the limit.
            Err(too_large(limit as u64 + 1).into())
        }
        Err(e) => Err(FleetError::bad_request(
            format!("reading the body of {what}"),
            format!("{e} (was the request cut short?)"),
        )
        .into()),
    }
}
