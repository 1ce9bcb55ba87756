//! `GET /v1/logs/{role}/{index}[/{file}]` on the node's HTTP port: a worker's log files, for
//! `fleet logs WORKER` on any machine with the cookie (the route is token-checked like the
//! store's).
//!
//! * `/v1/logs/{role}/{index}`: `{"worker", "files": [{"name", "size"}]}`;
//! * `/v1/logs/{role}/{index}/{file}?offset=N&max=M`: up to `M` bytes (at most 256 KiB) from
//!   `N`, with `x-fleet-log-size: <file size>`.

use super::server::json;
use crate::node::worker_logs;
use bytes::Bytes;
use fleet_actors::WorkerId;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::Response;

/// The header with the log file's size.
pub const LOG_SIZE_HEADER: &str = "x-fleet-log-size";

fn query_u64(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Answers a request for `rest` (the path after `/v1/logs/`) on the store of `node`.
pub fn serve(
    node: &str,
    rest: &str,
    query: Option<&str>,
) -> Response<BoxBody<Bytes, std::io::Error>> {
    let mut parts = rest.splitn(3, '/');
    let (role, index, file) = (parts.next(), parts.next(), parts.next());
    let worker: Option<WorkerId> = match (role, index) {
        (Some(r), Some(i)) => format!("{r}/{i}").parse().ok(),
        _ => None,
    };
    let Some(worker) = worker else {
        return json(
            400,
            &serde_json::json!({"error": "bad_request", "message": format!("/v1/logs/{rest}: expected /v1/logs/{{role}}/{{index}}[/{{file}}]")}),
        );
    };
    match file {
        None => match worker_logs::files(node, &worker) {
            Some(files) => json(
                200,
                &serde_json::json!({"worker": worker.to_string(), "files": files}),
            ),
            None => json(
                404,
                &serde_json::json!({"error": "not_found", "message": format!("node {node} has not run {worker}")}),
            ),
        },
        Some(file) => {
            let offset = query_u64(query, "offset").unwrap_or(0);
            let max = query_u64(query, "max").unwrap_or(worker_logs::MAX_READ);
            match worker_logs::read(node, &worker, file, offset, max) {
                Ok((bytes, size)) => {
                    let mut r = Response::new(
                        Full::new(Bytes::from(bytes))
                            .map_err(|never| match never {})
                            .boxed(),
                    );
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&size.to_string()) {
                        r.headers_mut().insert(LOG_SIZE_HEADER, v);
                    }
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    r
                }
                Err(e) => json(
                    404,
                    &serde_json::json!({"error": "not_found", "message": e}),
                ),
            }
        }
    }
}
