//! The fetching side: stream an object from its home store into this node's store.
//!
//! The response body is consumed frame by frame as hyper delivers it and handed to a writer
//! thread that hashes each frame and writes it to a temporary file, so the object is never
//! held whole in memory (at most a few frames are in flight) and the network and the disk
//! overlap. The writer commits (checks size and checksum, renames into place) only after the
//! body ended at exactly the expected length; on any error (refused, cut off, too long, wrong
//! checksum, no progress for [`IDLE_TIMEOUT`]) the temporary file is removed and the reserved
//! bytes are given back, so a partial fetch never leaves a visible object.

use super::errors::StoreError;
use super::files::{ObjectWriter, Target};
use super::object::{Checksum, ObjectRef};
use super::Inner;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The client every store uses to fetch from others.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Bound on connecting to a store.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on waiting for the response head, and for each next piece of the body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The header that carries an object's checksum.
pub const CHECKSUM_HEADER: &str = "x-fleet-checksum";

pub(crate) fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        // Bigger reads, bigger frames: fewer hand-offs to the writer thread per GiB.
        .http1_max_buf_size(4 << 20)
        .build(conn)
}

/// What the writer thread is sent.
pub(crate) enum Piece {
    Chunk(Bytes),
    /// Everything arrived: commit.
    Done,
}

pub(crate) type Sink = tokio::task::JoinHandle<Result<(ObjectRef, PathBuf), StoreError>>;

/// Runs `w` on a blocking thread fed by `rx`; it commits on [`Piece::Done`] and discards the
/// object if the channel closes first.
pub(crate) fn spawn_sink(mut w: ObjectWriter, mut rx: mpsc::Receiver<Piece>) -> Sink {
    tokio::task::spawn_blocking(move || loop {
        match rx.blocking_recv() {
            Some(Piece::Chunk(b)) => w.write_chunk(&b)?,
            Some(Piece::Done) => return w.commit(),
            None => {
                return Err(StoreError::BadRequest {
                    what: "writing an object".into(),
                    detail: "the producer stopped before the end".into(),
                })
            }
        }
    })
}

pub(crate) async fn join_sink(
    sink: Sink,
    inner: &Inner,
) -> Result<(ObjectRef, PathBuf), StoreError> {
    sink.await.map_err(|e| StoreError::Io {
        what: "writing an object".into(),
        dir: inner.dir.display().to_string(),
        detail: format!("the writer thread panicked: {e}"),
    })?
}

fn unreachable(obj: &ObjectRef, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable {
        url: obj.object_url(),
        detail: detail.to_string(),
    }
}

/// Fetches `obj` from its home store into this one and returns the local path.
pub(crate) async fn fetch_into(
    inner: &Arc<Inner>,
    obj: &ObjectRef,
    ttl: Option<Duration>,
) -> Result<PathBuf, StoreError> {
    let url = obj.object_url();
    let req = hyper::Request::get(&url)
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", inner.token),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| StoreError::BadRequest {
            what: format!("fetching object {}", obj.id),
            detail: format!("its URL {url:?} is not usable: {e}"),
        })?;
    // Reserve room before asking, so a full store says so without moving a byte.
    let w = ObjectWriter::create(
        inner.clone(),
        Target::Copy(obj.clone()),
        Some(obj.size),
        ttl,
    )?;
    let resp = match tokio::time::timeout(IDLE_TIMEOUT, inner.client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unreachable(obj, e)),
        Err(_) => {
            return Err(unreachable(
                obj,
                format!("no answer within {} s", IDLE_TIMEOUT.as_secs()),
            ))
        }
    };
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.into_body();
        let text = match tokio::time::timeout(
            IDLE_TIMEOUT,
            http_body_util::Limited::new(body, 64 << 10).collect(),
        )
        .await
        {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            _ => String::new(),
        };
        return Err(match status {
            401 | 403 => StoreError::Unauthorized { url, detail: text },
            404 => StoreError::NotFound {
                id: obj.id,
                node: obj.node.clone(),
            },
            _ => unreachable(obj, format!("it answered {status}: {text}")),
        });
    }
    let announced = resp
        .headers()
        .get(CHECKSUM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Checksum::parse);
    if announced != Some(obj.checksum) {
        return Err(StoreError::Corrupt {
            id: obj.id,
            from: url,
            detail: format!(
                "the store holds different bytes under this id (its checksum header says {})",
                announced
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ),
            expected_size: obj.size,
            expected: obj.checksum,
        });
    }
    let (tx, rx) = mpsc::channel::<Piece>(16);
    let sink = spawn_sink(w, rx);
    let mut body = resp.into_body();
    let mut got = 0u64;
    let outcome: Result<(), StoreError> = loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => {
                break Err(unreachable(
                    obj,
                    format!(
                        "the transfer stalled after {got} of {} bytes (nothing for {} s)",
                        obj.size,
                        IDLE_TIMEOUT.as_secs()
                    ),
                ))
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => {
                break Err(unreachable(
                    obj,
                    format!(
                        "the transfer broke off after {got} of {} bytes: {e}",
                        obj.size
                    ),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        got += data.len() as u64;
        if got > obj.size {
            break Err(StoreError::Corrupt {
                id: obj.id,
                from: url.clone(),
                detail: format!("more than {} bytes arrived", obj.size),
                expected_size: obj.size,
                expected: obj.checksum,
            });
        }
        if tx.send(Piece::Chunk(data)).await.is_err() {
            // The writer failed (the budget, the disk): its error is the one to report.
            drop(tx);
            return match join_sink(sink, inner).await {
                Err(e) => Err(e),
                Ok(_) => Err(unreachable(obj, "the writer stopped early")),
            };
        }
    };
    match outcome {
        Ok(()) if got == obj.size => {
            let _ = tx.send(Piece::Done).await;
        }
        Ok(()) => {
            drop(tx);
            let _ = join_sink(sink, inner).await;
            return Err(StoreError::Corrupt {
                id: obj.id,
                from: url,
                detail: format!("the transfer ended after {got} bytes"),
                expected_size: obj.size,
                expected: obj.checksum,
            });
        }
        Err(e) => {
            drop(tx);
            let _ = join_sink(sink, inner).await;
            return Err(e);
        }
    }
    drop(tx);
    let (_, path) = join_sink(sink, inner).await?;
    tracing::debug!(object = %obj.id, from = %obj.node, bytes = got, path = %path.display(), "object fetched");
    Ok(path)
}
