//! The store's HTTP server (hyper 1, HTTP/1.1, keep-alive), one per node, on a port from the
//! node's allocator.
//!
//! * `GET /v1/objects/{id}`: the object's bytes, streamed in chunks of the configured size
//!   (4 MiB by default) read by a blocking thread from the object's file, with
//!   `content-length` and `x-fleet-checksum: xxh3-128:<hex>` (known at put time, so it goes in
//!   the head, not a trailer); the fetcher checks it as it writes. At most two chunks are in
//!   memory per response.
//! * `GET /v1/stats`: [`super::StoreStats`] as JSON.
//! * `GET /v1/logs/...`: a worker's log files ([`super::logs_route`]).
//! * `GET /metrics`: the process's metrics as Prometheus text ([`crate::metrics`]), the one
//!   route served without a token.
//!
//! Every other request must carry `Authorization: Bearer <token>` (see [`super::config`]); anything
//! else gets 401 before the path is looked at. Errors are JSON `{"error", "message"}` with the
//! status of [`StoreError::http_status`].

use super::errors::StoreError;
use super::fetch::CHECKSUM_HEADER;
use super::object::ObjectId;
use super::Inner;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// Bound on reading a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn spawn(listener: TcpListener, inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let inner = inner.clone();
                        let mut stop = inner.stop.subscribe();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let inner = inner.clone();
                                async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                            });
                            let conn = http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_READ_TIMEOUT)
                                .keep_alive(true)
                                .serve_connection(TokioIo::new(stream), svc);
                            tokio::pin!(conn);
                            let r = tokio::select! {
                                r = conn.as_mut() => r,
                                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
                            };
                            if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "store connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "store accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
            }
        }
        conns.shutdown().await;
    });
}

pub(super) fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(e: &StoreError) -> Response<Body> {
    let kind = match e {
        StoreError::Full { .. } => "full",
        StoreError::NotFound { .. } => "not_found",
        StoreError::Unauthorized { .. } => "unauthorized",
        StoreError::BadRequest { .. } => "bad_request",
        StoreError::NoStore { .. } => "no_store",
        StoreError::Corrupt { .. } => "corrupt",
        StoreError::Unreachable { .. } => "unreachable",
        StoreError::Io { .. } => "io",
        StoreError::Bind { .. } => "bind",
    };
    json(
        e.http_status(),
        &serde_json::json!({"error": kind, "message": e.to_string()}),
    )
}

fn authorized(inner: &Inner, req: &Request<Incoming>) -> bool {
    let Some(v) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = v.strip_prefix("Bearer ") else {
        return false;
    };
    token.as_bytes().ct_eq(inner.token.as_bytes()).into()
}

async fn handle(inner: &Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    // The process's metrics, for Prometheus: counters only, so no token is asked for.
    if req.uri().path() == "/metrics" && req.method() == hyper::Method::GET {
        let (parts, body) = crate::metrics::response("/metrics").into_parts();
        return Response::from_parts(parts, body.map_err(|never| match never {}).boxed());
    }
    if !authorized(inner, &req) {
        return error(&StoreError::Unauthorized {
            url: inner.url.clone(),
            detail: "no valid `Authorization: Bearer <token>`: the token is derived from the cluster cookie".into(),
        });
    }
    if req.method() != hyper::Method::GET {
        return json(
            405,
            &serde_json::json!({"error": "method", "message": "only GET is served"}),
        );
    }
    let path = req.uri().path();
    if path == "/v1/stats" {
        return json(
            200,
            &serde_json::to_value(inner.catalog().stats()).unwrap_or_default(),
        );
    }
    if let Some(rest) = path.strip_prefix("/v1/logs/") {
        return super::logs_route::serve(&inner.node, rest, req.uri().query());
    }
    let Some(id) = path.strip_prefix("/v1/objects/") else {
        return json(
            404,
            &serde_json::json!({"error": "route", "message": format!("no route {path}; GET /v1/objects/{{id}}, /v1/stats or /v1/logs/{{role}}/{{index}}")}),
        );
    };
    let Some(id) = ObjectId::parse(id) else {
        return error(&StoreError::BadRequest {
            what: format!("GET {path}"),
            detail: "an object id is 32 hex digits".into(),
        });
    };
    serve_object(inner, id)
}

fn serve_object(inner: &Arc<Inner>, id: ObjectId) -> Response<Body> {
    let Some(entry) = inner.catalog().get(&id).cloned() else {
        return error(&StoreError::NotFound {
            id,
            node: inner.node.clone(),
        });
    };
    // Opened now: a delete after this point does not cut the response short.
    let file = match std::fs::File::open(&entry.path) {
        Ok(f) => f,
        Err(e) => {
            return error(&StoreError::io(
                format!("opening object {id}"),
                &inner.dir,
                e,
            ))
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let chunk = inner.chunk;
    let size = entry.obj.size;
    let counter = inner.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = file;
        let mut sent = 0u64;
        while sent < size {
            let want = chunk.min((size - sent) as usize);
            let mut buf = Vec::with_capacity(want);
            // `read_to_end` on a `take` fills the spare capacity without zeroing it first.
            let filled = match (&mut f).take(want as u64).read_to_end(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if filled < want {
                let _ = tx.blocking_send(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the object's file is shorter than the object",
                )));
                return;
            }
            sent += filled as u64;
            if sent == size {
                // Counted before the last chunk goes out, so a client that has the whole
                // object always sees it counted.
                let mut c = counter.catalog();
                c.stats.served += 1;
                c.stats.bytes_served += sent;
            }
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return; // the client went away
            }
        }
        if size == 0 {
            counter.catalog().stats.served += 1;
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(hyper::header::CONTENT_LENGTH, size.into());
    if let Ok(v) = hyper::header::HeaderValue::from_str(&entry.obj.checksum.to_string()) {
        h.insert(CHECKSUM_HEADER, v);
    }
    r
}
