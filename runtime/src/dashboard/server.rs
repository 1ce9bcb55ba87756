//! The dashboard's HTTP server: a handful of read-only routes on `fleet_http`'s accept loop.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | the page (`page.html`) |
//! | `GET /page.js`, `GET /page.css` | its script and style |
//! | `GET /api/state` | [`Snapshot`] as JSON |
//! | `GET /metrics` | the process's Prometheus text |
//! | anything else | 404 (JSON); a method other than GET or HEAD: 405 |
//!
//! Every answer says `Cache-Control: no-store`; the page's Content-Security-Policy lets it load
//! only from this origin, so nothing on it can reach the internet or run injected script.

use super::events::{unix_ms, EventLog};
use super::snapshot::Snapshot;
use crate::cluster::StatusSource;
use crate::jobs::JobService;
use crate::MemberEvent;
use fleet_http::Body;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How long `/api/state` waits for the head's status before answering without it.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(2);

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the dashboard's data comes from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The cluster id (shown even when the head does not answer).
    pub cluster_id: String,
    /// The head's status.
    pub status: StatusSource,
    /// The head's jobs.
    pub jobs: JobService,
    /// Recent events ([`serve`] feeds it with membership events and job changes).
    pub events: EventLog,
}

/// A running dashboard: dropping it stops serving and stops its tasks.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    _listener: fleet_http::listener::Listener,
    tasks: Vec<JoinHandle<()>>,
}

impl Dashboard {
    /// The address bound (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves the dashboard on `addr` (port 0: a free one). Installs the metrics recorder and
/// starts the tasks that record `members` (subscribe before nodes can join, from
/// [`crate::Cluster::member_events`]) and job state changes as events.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    members: broadcast::Receiver<MemberEvent>,
) -> std::io::Result<Dashboard> {
    crate::metrics::install();
    let listener = fleet_http::listen::bind_with_backlog(addr, 128)?;
    let bound = listener.local_addr()?;
    let tasks = vec![
        sources.events.feed_members(members),
        sources.events.watch_jobs(sources.jobs.clone()),
    ];
    let sources = Arc::new(sources);
    let l = fleet_http::listener::Listener::spawn("dashboard", listener, move |req, _peer| {
        let sources = sources.clone();
        async move {
            // hyper sends no body in answer to HEAD (keeping the GET's length).
            let mut r = if req.method() == Method::GET || req.method() == Method::HEAD {
                route(req.uri().path(), &sources).await
            } else {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!(
                        "{} is not served here; the dashboard is read-only",
                        req.method()
                    ),
                );
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            };
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut().insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    tracing::info!(addr = %bound, "dashboard served at http://{bound}/");
    Ok(Dashboard {
        addr: bound,
        _listener: l,
        tasks,
    })
}

async fn route(path: &str, sources: &Sources) -> Response<Body> {
    match path {
        "/" | "/index.html" => {
            let mut r = text(PAGE, "text/html; charset=utf-8");
            r.headers_mut()
                .insert("content-security-policy", HeaderValue::from_static(CSP));
            r
        }
        "/page.js" => text(SCRIPT, "text/javascript; charset=utf-8"),
        "/page.css" => text(STYLE, "text/css; charset=utf-8"),
        "/api/state" => {
            let s = snapshot(sources).await;
            match serde_json::to_vec(&s) {
                Ok(bytes) => fleet_http::json_bytes_response(StatusCode::OK, bytes.into()),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("encoding the state: {e}"),
                ),
            }
        }
        "/metrics" => crate::metrics::response(path),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route {path}; GET / (the page), /api/state or /metrics"),
        ),
    }
}

/// The page's data now; the head's status waits at most [`STATUS_DEADLINE`].
pub async fn snapshot(sources: &Sources) -> Snapshot {
    let status = sources
        .status
        .status(STATUS_DEADLINE)
        .await
        .map_err(|e| e.to_string());
    let jobs = sources.jobs.list();
    Snapshot::build(
        &sources.cluster_id,
        status,
        &jobs,
        sources.events.recent(),
        unix_ms(),
    )
}

fn text(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(fleet_http::full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    fleet_http::json_response(status, &serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::HeadMsg;
    use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A head that takes status requests and never answers them.
    struct MuteHead;

    impl Actor for MuteHead {
        type Msg = HeadMsg;
        type State = Vec<RpcReplyPort<fleet_actors::wire::WireReply<crate::StatusReport>>>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<HeadMsg>,
            _: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(vec![])
        }

        async fn handle(
            &self,
            _: ActorRef<HeadMsg>,
            msg: HeadMsg,
            held: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let HeadMsg::Status(reply) = msg {
                held.push(reply);
            }
            Ok(())
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let io = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        tokio::time::timeout(Duration::from_secs(20), io)
            .await
            .expect("an answer within 20 s")
            .expect("an HTTP exchange")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_head_that_does_not_answer_shows_as_a_status_error_not_a_hang() {
        let cluster = crate::Cluster::local().no_store().start().await.unwrap();
        let runs = std::env::temp_dir().join(format!("fleet-dash-unit-{}", std::process::id()));
        let jobs = JobService::start(
            &format!("dash-unit-{}", std::process::id()),
            cluster.scheduler().clone(),
            crate::jobs::JobServiceConfig {
                runs_root: runs.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (mute, _) = Actor::spawn(None, MuteHead, ()).await.unwrap();
        let sources = Sources {
            cluster_id: "c-unit".into(),
            status: StatusSource::new(mute.clone()),
            jobs,
            events: EventLog::new(),
        };
        let (_tx, members) = broadcast::channel(4);
        let d = serve("127.0.0.1:0".parse().unwrap(), sources, members)
            .await
            .unwrap();
        let answer = get(d.addr(), "/api/state").await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let e = v["status_error"].as_str().unwrap_or_default();
        assert!(e.contains("did not answer within"), "{v:#}");
        assert_eq!(v["cluster_id"], "c-unit");
        assert_eq!(v["nodes"], serde_json::json!([]));
        mute.stop(None);
        drop(d);
        cluster.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(runs);
    }

    #[test]
    fn the_page_loads_its_script_and_style_from_this_origin_only() {
        let page = super::PAGE;
        assert!(page.contains(r#"<script src="/page.js""#), "{page}");
        assert!(page.contains(r#"href="/page.css""#), "{page}");
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(
            !super::SCRIPT.contains("innerHTML"),
            "data goes in with textContent"
        );
    }
}
