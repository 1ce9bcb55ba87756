//! Prometheus metrics: one recorder per process (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`), served as `GET /metrics` by every node's HTTP server (the
//! object store's port, no token: counters only, nothing secret).
//!
//! Instrumented code calls the `metrics` macros with the names below; a process that never
//! installs the recorder (a library user who does not want it) pays a no-op. `fleet node`,
//! `fleet head` and every [`crate::Cluster`] install it at start.
//!
//! Names (all prefixed `fleet_`), what they count, and their labels:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `fleet_build_info` | gauge | `version` (always 1) |
//! | `fleet_calls_total` | counter | `kind` (engine, control, http), `outcome` (ok or the error kind) |
//! | `fleet_call_seconds` | histogram | `kind`, `worker_kind` |
//! | `fleet_http_retries_total` | counter | (launcher forwards re-sent) |
//! | `fleet_worker_restarts_total` | counter | (HTTP services restarted by their policy) |
//! | `fleet_dedupe_hits_total` | counter | (calls answered from the request-id record) |
//! | `fleet_engine_queue_depth` | gauge | (engine calls waiting in the engine queues of this process) |
//! | `fleet_forwards_in_flight` | gauge | (launcher forwards holding a slot, all workers) |
//! | `fleet_nodes` | gauge | `state` (alive, suspect, down, left): nodes joined to a head, its own not counted |
//! | `fleet_episodes_total` | counter | `outcome` (accepted, rejected, lost) |
//! | `fleet_episodes_in_flight` | gauge | |
//! | `fleet_policy_version` | gauge | |
//! | `fleet_staleness` | histogram | (of accepted episodes' turns) |
//! | `fleet_output_tokens_total` | counter | (of accepted episodes) |
//! | `fleet_jobs_running` | gauge | (jobs submitted to this head and not ended) |
//! | `fleet_jobs_total` | counter | `state` (succeeded, failed, stopped): jobs ended |
//! | `fleet_proxy_route_seconds` | histogram | `route`, `status` (2xx, 4xx, 5xx), in a `fleet proxy` process |

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). `None` when
/// another recorder was installed first by the embedding program.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &buckets,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full("fleet_staleness".into()),
                        &[0.0, 1.0, 2.0, 3.0, 4.0, 8.0],
                    )
                });
            let builder = match builder {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; metrics are off");
                    return None;
                }
            };
            match builder.install_recorder() {
                Ok(h) => {
                    describe();
                    // Always one sample, so a fresh node's page is not empty.
                    metrics::gauge!("fleet_build_info", "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    Some(h)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a metrics recorder is installed already; fleet's metrics are not served");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics as Prometheus text (empty when no recorder is installed).
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("fleet_build_info", "1, labelled with the fleet version");
    describe_counter!("fleet_calls_total", "calls to workers, by kind and outcome");
    describe_histogram!(
        "fleet_call_seconds",
        Unit::Seconds,
        "latency of calls to workers, by kind and worker kind"
    );
    describe_counter!("fleet_http_retries_total", "launcher forwards re-sent");
    describe_counter!(
        "fleet_worker_restarts_total",
        "HTTP-service workers restarted by their restart policy"
    );
    describe_counter!(
        "fleet_dedupe_hits_total",
        "engine calls answered from the request-id record instead of running"
    );
    describe_gauge!(
        "fleet_engine_queue_depth",
        "engine calls waiting in the engine queues of this process"
    );
    describe_gauge!(
        "fleet_forwards_in_flight",
        "launcher forwards holding a slot in this process"
    );
    describe_gauge!(
        "fleet_nodes",
        "nodes joined to this head, by state (its own node not counted)"
    );
    describe_counter!(
        "fleet_episodes_total",
        "rollout episodes finished, by outcome"
    );
    describe_gauge!("fleet_episodes_in_flight", "rollout episodes running");
    describe_gauge!(
        "fleet_policy_version",
        "the rollout's current policy version"
    );
    describe_histogram!(
        "fleet_staleness",
        "versions between a turn's policy and the version at acceptance"
    );
    describe_counter!(
        "fleet_output_tokens_total",
        "output tokens of accepted episodes"
    );
    describe_gauge!(
        "fleet_jobs_running",
        "jobs submitted to this head and not ended"
    );
    describe_counter!(
        "fleet_jobs_total",
        "jobs submitted to this head that ended, by state"
    );
    describe_histogram!(
        "fleet_proxy_route_seconds",
        Unit::Seconds,
        "the recording proxy's time to a response head, by route and status class"
    );
}

/// The answer to `GET /metrics` (and 404 for anything else), for any of fleet's HTTP servers.
pub fn response(path: &str) -> hyper::Response<fleet_http::Body> {
    let mut r = if path == "/metrics" {
        hyper::Response::new(fleet_http::full(render()))
    } else {
        let mut r =
            hyper::Response::new(fleet_http::full(format!("no route {path}; GET /metrics\n")));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        r
    };
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Serves `GET /metrics` on `addr` (`--metrics HOST:PORT`: a fixed port for Prometheus to
/// scrape, beside the node's own HTTP port that serves it too). Installs the recorder.
/// Returns the accept loop (dropping it stops serving) and the address bound.
pub async fn serve(
    addr: std::net::SocketAddr,
) -> std::io::Result<(fleet_http::listener::Listener, std::net::SocketAddr)> {
    install();
    let listener = fleet_http::listen::bind_with_backlog(addr, 128)?;
    let bound = listener.local_addr()?;
    let l = fleet_http::listener::Listener::spawn("metrics", listener, |req, _peer| async move {
        Ok::<_, std::convert::Infallible>(response(req.uri().path()))
    });
    tracing::info!(addr = %bound, "metrics served at http://{bound}/metrics");
    Ok((l, bound))
}
