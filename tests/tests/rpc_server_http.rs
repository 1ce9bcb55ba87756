//! `fleet rpc-server`, the RpcServer's HTTP face, tested as a separate process over real
//! sockets: the AReaL-shaped JSON routes and their one error shape, fleet's bincode path,
//! request-id deduplication, health during a long call, malformed and oversize requests,
//! `/destroy` and SIGTERM; plus library mode (`serve()` in-process with a program's own engine)
//! and the shared engine suite against an isolated and an in-process worker.

use fleet_actors::engine::builtin;
use fleet_actors::rpc_server::{
    CallReply, CallRequest, Control, ControlOk, ControlReply, WorkerMsg, WorkerStatus,
};
use fleet_actors::{Codec, Engine, EngineCall, EngineError, FleetError, Payload, RequestId};
use fleet_http::{send_with_retry_raw, Client, HttpRequest, HttpResponse, RetryPolicy};
use fleet_runtime::rpc_http::wire::{
    decode_reply, encode_body, parse_listening_line, BINCODE_CONTENT_TYPE, JSON_CONTENT_TYPE,
};
use fleet_runtime::rpc_http::{serve, RpcHttpConfig};
use fleet_tests::{fleet_bin, run_engine_suite, wait_until, PipedChild, WorkerCaller};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- harness --------------------------------------------------------------------------------

/// A `fleet rpc-server` child, killed (whole group) on drop.
struct RpcServerProcess {
    child: PipedChild,
    http: Http,
}

impl RpcServerProcess {
    async fn start(extra: &[&str]) -> RpcServerProcess {
        let token = format!("test-token-{:x}", rand_u64());
        let mut cmd = Command::new(fleet_bin());
        cmd.args(["rpc-server", "--port", "0", "--worker", "test/3"])
            .args(extra)
            .env("FLEET_RPC_TOKEN", &token);
        let child = PipedChild::spawn("rpc-server", &mut cmd).expect("start fleet rpc-server");
        let addr = child
            .wait_for_stdout(Duration::from_secs(20), parse_listening_line)
            .await
            .expect("the listening line on stdout");
        let first = child.stdout_lines().into_iter().next();
        assert!(
            first.as_deref().and_then(parse_listening_line).is_some(),
            "the listening line is the first stdout line: {first:?}"
        );
        RpcServerProcess {
            child,
            http: Http::new(addr).token(&token),
        }
    }
}

/// One-attempt HTTP to a server under test.
#[derive(Clone)]
struct Http {
    client: Client,
    addr: SocketAddr,
    base: String,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
}

/// A random number for tokens (each test's server has its own).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            client: Client::new(),
            addr,
            base: format!("http://{addr}"),
            token: None,
        }
    }

    fn token(mut self, token: &str) -> Http {
        self.token = Some(token.to_string());
        self
    }

    /// The same server without the token.
    fn anonymous(&self) -> Http {
        Http {
            token: None,
            ..self.clone()
        }
    }

    async fn send(&self, req: HttpRequest) -> HttpResponse {
        let req = match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        };
        let policy = RetryPolicy::non_idempotent()
            .max_attempts(1)
            .deadline(Duration::from_secs(30))
            .per_attempt_timeout(Duration::from_secs(30));
        send_with_retry_raw(
            &self.client,
            &self.base,
            &req,
            &policy,
            std::future::pending(),
        )
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path_and_query))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        json_of(self.send(HttpRequest::get(path)).await)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_with(path, body, &[]).await
    }

    async fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req =
            HttpRequest::post(path, body.to_string()).header("content-type", JSON_CONTENT_TYPE);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        json_of(self.send(req).await)
    }

    async fn bincode<R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        request_id: Option<&str>,
    ) -> (u16, R) {
        let mut req = HttpRequest::post(path, body).header("content-type", BINCODE_CONTENT_TYPE);
        if let Some(id) = request_id {
            req = req.request_id(id);
        }
        let resp = self.send(req).await;
        let reply = decode_reply(resp.status, resp.header("content-type"), &resp.body)
            .unwrap_or_else(|e| panic!("POST {path}: not a bincode reply: {e}"));
        (resp.status, reply)
    }

    async fn status(&self) -> WorkerStatus {
        let resp = self.send(HttpRequest::get("/status")).await;
        assert_eq!(resp.status, 200, "GET /status");
        serde_json::from_slice(&resp.body).expect("GET /status is a WorkerStatus")
    }
}

fn json_of(resp: HttpResponse) -> (u16, Value) {
    assert_eq!(
        resp.header("content-type"),
        Some(JSON_CONTENT_TYPE),
        "status {}: {:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    let v = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&resp.body)));
    (resp.status, v)
}

/// Asserts the one error shape `{"error": {"kind": str, "message": str}}` and returns the kind
/// and message.
fn error_shape(body: &Value) -> (String, String) {
    let obj = body.as_object().expect("an error body is an object");
    assert_eq!(obj.len(), 1, "only `error`: {body}");
    let err = obj["error"].as_object().expect("`error` is an object");
    assert_eq!(err.len(), 2, "only `kind` and `message`: {body}");
    let kind = err["kind"].as_str().expect("`kind` is a string");
    let message = err["message"].as_str().expect("`message` is a string");
    assert!(!message.is_empty(), "{body}");
    (kind.to_string(), message.to_string())
}

fn assert_error(got: (u16, Value), status: u16, kind: &str) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    let (k, message) = error_shape(&got.1);
    assert_eq!(k, kind, "{}", got.1);
    message
}

/// Writes `bytes` on a fresh connection (optionally closing the write half), then reads until
/// the server closes the connection.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], close_write: bool) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    if close_write {
        s.shutdown().await.expect("shutdown write");
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

// ---- WorkerCaller implementations for the shared engine suite ------------------------------

/// fleet's binary path over HTTP: what the launcher will speak to an isolated RpcServer.
struct BincodeHttpWorker(Http);

impl WorkerCaller for BincodeHttpWorker {
    async fn create_engine(
        &self,
        name: &str,
        type_name: &str,
        args: Payload,
    ) -> Result<(), FleetError> {
        let c = Control::CreateEngine {
            name: name.into(),
            type_name: type_name.into(),
            args,
        };
        let (_, ControlReply(r)) = self.0.bincode("/control", encode_body(&c), None).await;
        r.map(|_| ())
    }

    async fn call(
        &self,
        engine: &str,
        method: &str,
        args: Payload,
        request_id: Option<String>,
    ) -> Result<Payload, FleetError> {
        let req = CallRequest {
            deadline_ms: 0,
            idempotent: false,
            engine: engine.into(),
            method: method.into(),
            args,
            rpc_meta: BTreeMap::new(),
            request_id: request_id.map(RequestId),
            retry: None,
        };
        let (status, CallReply(r)) = self.0.bincode("/call", encode_body(&req), None).await;
        assert_eq!(status, 200, "a reply from the worker is 200: {r:?}");
        r
    }

    async fn ping(&self) -> Result<(), FleetError> {
        let (_, ControlReply(r)) = self
            .0
            .bincode("/control", encode_body(&Control::Health), None)
            .await;
        r.map(|_| ())
    }
}

/// The same RpcServer actor called in-process, no HTTP.
struct InProcessWorker(ActorRef<WorkerMsg>);

impl InProcessWorker {
    async fn control(&self, c: Control) -> Result<ControlOk, FleetError> {
        match self
            .0
            .call(|p| WorkerMsg::Control(c, p), Some(Duration::from_secs(30)))
            .await
        {
            Ok(CallResult::Success(ControlReply(r))) => r,
            other => Err(FleetError::internal(format!("{other:?}"))),
        }
    }
}

impl WorkerCaller for InProcessWorker {
    async fn create_engine(
        &self,
        name: &str,
        type_name: &str,
        args: Payload,
    ) -> Result<(), FleetError> {
        self.control(Control::CreateEngine {
            name: name.into(),
            type_name: type_name.into(),
            args,
        })
        .await
        .map(|_| ())
    }

    async fn call(
        &self,
        engine: &str,
        method: &str,
        args: Payload,
        request_id: Option<String>,
    ) -> Result<Payload, FleetError> {
        let req = CallRequest {
            deadline_ms: 0,
            idempotent: false,
            engine: engine.into(),
            method: method.into(),
            args,
            rpc_meta: BTreeMap::new(),
            request_id: request_id.map(RequestId),
            retry: None,
        };
        match self
            .0
            .call(|p| WorkerMsg::Call(req, p), Some(Duration::from_secs(30)))
            .await
        {
            Ok(CallResult::Success(CallReply(r))) => r,
            other => Err(FleetError::internal(format!("{:?}", other.map(|_| ())))),
        }
    }

    async fn ping(&self) -> Result<(), FleetError> {
        self.control(Control::Health).await.map(|_| ())
    }
}

// ---- the shared engine suite ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_suite_passes_against_an_isolated_rpc_server_over_bincode() {
    let server = RpcServerProcess::start(&[]).await;
    run_engine_suite(&BincodeHttpWorker(server.http.clone()), Codec::Bincode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_suite_passes_against_an_in_process_rpc_server() {
    let server = serve(RpcHttpConfig::new(builtin::registry()))
        .await
        .expect("serve");
    run_engine_suite(&InProcessWorker(server.actor().clone()), Codec::Bincode).await;
    server.shutdown().await.expect("shutdown");
}

// ---- JSON routes ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_create_and_call_engines_and_answer_every_error_in_one_shape() {
    let server = RpcServerProcess::start(&["--env", "FROM_CLI=yes"]).await;
    let h = &server.http;

    let (status, body) = h.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "ok", "worker": "test/3", "engines": []})
    );

    for (name, ty) in [("c", "counter"), ("e", "echo"), ("s", "sleep")] {
        let got = h
            .post(
                "/create_engine",
                json!({"engine": ty, "engine_name": name, "init_args": null}),
            )
            .await;
        assert_eq!(got, (200, json!({"ok": true})), "create {name}");
    }
    let m = assert_error(
        h.post(
            "/create_engine",
            json!({"engine": "counter", "engine_name": "c"}),
        )
        .await,
        409,
        "engine_exists",
    );
    assert!(m.contains("\"c\""), "{m}");
    let m = assert_error(
        h.post(
            "/create_engine",
            json!({"engine": "nope", "engine_name": "x"}),
        )
        .await,
        400,
        "engine_type_unknown",
    );
    assert!(m.contains("counter, echo, sleep"), "{m}");

    let call = |engine: &str, method: &str, args: Value| json!({"engine_name": engine, "method": method, "args": args, "rpc_meta": {}});
    assert_eq!(
        h.post("/call", call("c", "incr", json!(2))).await,
        (200, json!({"result": 2}))
    );
    assert_eq!(
        h.post("/call", call("c", "incr", json!(3))).await,
        (200, json!({"result": 5}))
    );
    let doc = json!({"a": [1, 2, {"b": null}], "s": "text"});
    assert_eq!(
        h.post("/call", call("e", "echo", doc.clone())).await,
        (200, json!({ "result": doc }))
    );
    let got = h
        .post(
            "/call",
            json!({"engine_name": "e", "method": "meta", "rpc_meta": {"step": "7"}}),
        )
        .await;
    assert_eq!(got, (200, json!({"result": {"step": "7"}})), "rpc_meta");
    assert_eq!(
        h.post("/call", call("s", "sleep", json!(5))).await,
        (200, json!({"result": 5}))
    );

    let m = assert_error(
        h.post("/call", call("missing", "get", Value::Null)).await,
        404,
        "engine_not_found",
    );
    assert!(m.contains("\"missing\""), "{m}");
    let m = assert_error(
        h.post("/call", call("c", "frobnicate", Value::Null)).await,
        400,
        "method_not_found",
    );
    assert!(m.contains("frobnicate"), "{m}");
    assert_error(
        h.post("/call", call("c", "incr", json!("not a number")))
            .await,
        400,
        "bad_request",
    );
    let m = assert_error(
        h.post("/call", call("s", "fail", json!("disk full"))).await,
        500,
        "engine_failed",
    );
    assert!(m.contains("disk full"), "{m}");
    let m = assert_error(
        h.post("/call", call("s", "panic", json!("boom"))).await,
        500,
        "engine_failed",
    );
    assert!(m.contains("boom"), "{m}");
    // A typo in a field name is refused, not ignored.
    assert_error(
        h.post("/call", json!({"engine": "c", "method": "get"}))
            .await,
        400,
        "bad_request",
    );

    // set_env reaches engines (on top of --env), configure is accepted.
    assert_eq!(
        h.post("/set_env", json!({"env": {"SEED": "42"}})).await,
        (200, json!({"ok": true}))
    );
    let (status, body) = h.post("/call", call("e", "env", Value::Null)).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["SEED"], "42");
    assert_eq!(body["result"]["FROM_CLI"], "yes");
    assert_eq!(
        h.post(
            "/configure",
            json!({"role": "test", "rank": 3, "config": {"seed": 1}})
        )
        .await,
        (200, json!({"ok": true}))
    );

    let (status, body) = h.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["engines"], json!(["c", "e", "s"]));
    let st = h.status().await;
    assert_eq!(st.worker.to_string(), "test/3");
    assert_eq!(st.engines.len(), 3);
    assert!(st.in_flight.is_none());
    // The caller's deadline: past it the answer is a typed 504 (the engine call itself
    // finishes in the background).
    assert_error(
        h.post_with(
            "/call",
            call("s", "sleep", json!(1000)),
            &[("X-Fleet-Timeout-Ms", "50")],
        )
        .await,
        504,
        "timeout",
    );
    assert_error(
        h.post_with(
            "/call",
            call("c", "get", Value::Null),
            &[("X-Fleet-Timeout-Ms", "soon")],
        )
        .await,
        400,
        "bad_request",
    );
    // The counter was left at 5 by everything above.
    assert_eq!(
        h.post("/call", call("c", "get", Value::Null)).await,
        (200, json!({"result": 5}))
    );
}

// ---- request ids ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_x_request_id_runs_the_call_once_over_json() {
    let server = RpcServerProcess::start(&[]).await;
    let h = &server.http;
    h.post(
        "/create_engine",
        json!({"engine": "counter", "engine_name": "c"}),
    )
    .await;
    let incr = json!({"engine_name": "c", "method": "incr", "args": 5});
    let runs = json!({"engine_name": "c", "method": "runs"});

    let first = h
        .post_with("/call", incr.clone(), &[("X-Request-Id", "step-1")])
        .await;
    let repeat = h
        .post_with("/call", incr.clone(), &[("X-Request-Id", "step-1")])
        .await;
    assert_eq!(first, (200, json!({"result": 5})));
    assert_eq!(repeat, first, "the repeat gets the recorded answer");
    assert_eq!(h.post("/call", runs.clone()).await.1, json!({"result": 1}));

    // The id may also travel in the body; the same id either way is the same call.
    let mut with_body_id = incr.clone();
    with_body_id["request_id"] = json!("step-1");
    assert_eq!(h.post("/call", with_body_id).await, first);
    assert_eq!(h.post("/call", runs.clone()).await.1, json!({"result": 1}));

    // Disagreeing ids are refused before anything runs.
    let mut body = incr.clone();
    body["request_id"] = json!("step-2");
    assert_error(
        h.post_with("/call", body, &[("X-Request-Id", "step-3")])
            .await,
        400,
        "bad_request",
    );
    // Without an id each call runs.
    h.post("/call", incr.clone()).await;
    assert_eq!(h.post("/call", runs).await.1, json!({"result": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_runs_the_call_once_over_bincode() {
    let server = RpcServerProcess::start(&[]).await;
    let h = &server.http;
    let create = Control::CreateEngine {
        name: "c".into(),
        type_name: "counter".into(),
        args: Payload::unit(),
    };
    let (status, reply): (u16, ControlReply) =
        h.bincode("/control", encode_body(&create), None).await;
    assert_eq!((status, reply), (200, ControlReply(Ok(ControlOk::Done))));

    let call = |method: &str, args: Payload, id: Option<&str>| CallRequest {
        deadline_ms: 0,
        idempotent: false,
        engine: "c".into(),
        method: method.into(),
        args,
        rpc_meta: BTreeMap::new(),
        request_id: id.map(RequestId::from),
        retry: None,
    };
    let incr = |id: Option<&str>| encode_body(&call("incr", Payload::bincode(&4u64).unwrap(), id));
    let runs = || async {
        let (_, CallReply(r)) = h
            .bincode(
                "/call",
                encode_body(&call("runs", Payload::unit(), None)),
                None,
            )
            .await;
        r.unwrap().decode::<u64>().unwrap()
    };

    // The id inside the CallRequest.
    for _ in 0..2 {
        let (status, CallReply(r)) = h.bincode("/call", incr(Some("b-1")), None).await;
        assert_eq!(status, 200);
        assert_eq!(r.unwrap().decode::<u64>().unwrap(), 4);
    }
    assert_eq!(runs().await, 1);
    // The id in the X-Request-Id header fills in a CallRequest without one.
    for _ in 0..2 {
        let (_, CallReply(r)) = h.bincode("/call", incr(None), Some("b-2")).await;
        assert_eq!(r.unwrap().decode::<u64>().unwrap(), 8);
    }
    assert_eq!(runs().await, 2);

    // An engine error is a typed FleetError inside a 200 answer.
    let (status, CallReply(r)) = h
        .bincode(
            "/call",
            encode_body(&call("frobnicate", Payload::unit(), None)),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        matches!(&r, Err(FleetError::MethodNotFound { method, .. }) if method == "frobnicate"),
        "{r:?}"
    );
}

// ---- health during a long call --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_answered_while_a_two_second_sleep_call_runs() {
    let server = RpcServerProcess::start(&[]).await;
    let h = server.http.clone();
    h.post(
        "/create_engine",
        json!({"engine": "sleep", "engine_name": "s"}),
    )
    .await;
    let events = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let long = {
        let (h, events) = (h.clone(), events.clone());
        tokio::spawn(async move {
            let r = h
                .post(
                    "/call",
                    json!({"engine_name": "s", "method": "sleep", "args": 2000}),
                )
                .await;
            events.lock().unwrap().push("sleep call done");
            r
        })
    };
    wait_until(
        "the sleep call to be running",
        Duration::from_secs(10),
        || {
            let h = h.clone();
            async move {
                let st = h.status().await;
                st.in_flight.filter(|(m, _)| m == "s.sleep").map(|_| ())
            }
        },
    )
    .await
    .unwrap();
    let (status, body) = h.get("/health").await;
    events.lock().unwrap().push("health answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["engines"], json!(["s"]));

    assert_eq!(long.await.unwrap(), (200, json!({"result": 2000})));
    assert_eq!(
        *events.lock().unwrap(),
        vec!["health answered", "sleep call done"]
    );
}

// ---- malformed input ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_requests_get_typed_errors_and_the_server_keeps_serving() {
    let server = RpcServerProcess::start(&["--max-body-bytes", "1024"]).await;
    let h = &server.http;
    h.post(
        "/create_engine",
        json!({"engine": "counter", "engine_name": "c"}),
    )
    .await;
    let calls_before = h.status().await.calls_done;

    // Junk JSON.
    let resp = h
        .send(
            HttpRequest::post("/call", "{\"engine_name\": \"c\", oops")
                .header("content-type", JSON_CONTENT_TYPE),
        )
        .await;
    assert_error(json_of(resp), 400, "bad_request");
    // Undecodable bincode: a typed Protocol error in a bincode reply.
    let (status, CallReply(r)) = h.bincode("/call", vec![0xff, 0x00, 0x13], None).await;
    assert_eq!(status, 400);
    assert!(matches!(r, Err(FleetError::Protocol { .. })), "{r:?}");
    // Wrong content type, and bincode on a JSON-only route.
    let resp = h
        .send(HttpRequest::post("/call", "{}").header("content-type", "text/plain"))
        .await;
    assert_error(json_of(resp), 415, "unsupported_media_type");
    let resp = h
        .send(
            HttpRequest::post("/create_engine", vec![1u8, 2])
                .header("content-type", BINCODE_CONTENT_TYPE),
        )
        .await;
    let m = assert_error(json_of(resp), 415, "unsupported_media_type");
    assert!(m.contains("/control"), "points to the bincode route: {m}");
    // Unknown route, wrong method.
    assert_error(h.get("/v1/nothing").await, 404, "route_not_found");
    let resp = h.send(HttpRequest::get("/call")).await;
    assert_eq!(resp.header("allow"), Some("POST"));
    assert_error(json_of(resp), 405, "method_not_allowed");
    assert_error(
        h.post("/health", json!({})).await,
        405,
        "method_not_allowed",
    );

    // Oversize bodies: JSON and bincode, each a typed 413.
    let big = json!({"engine_name": "c", "method": "incr", "args": "x".repeat(2048)});
    let m = assert_error(h.post("/call", big).await, 413, "payload_too_large");
    assert!(m.contains("1024"), "{m}");
    let big_req = CallRequest {
        deadline_ms: 0,
        idempotent: false,
        engine: "c".into(),
        method: "incr".into(),
        args: Payload::bincode(&vec![7u8; 4096]).unwrap(),
        rpc_meta: BTreeMap::new(),
        request_id: None,
        retry: None,
    };
    let (status, CallReply(r)) = h.bincode("/call", encode_body(&big_req), None).await;
    assert_eq!(status, 413);
    assert!(
        matches!(r, Err(FleetError::PayloadTooLarge { .. })),
        "{r:?}"
    );
    // A declared 100 MB body is refused from its headers alone: the client never sends it.
    let auth = format!(
        "Authorization: Bearer {}\r\n",
        h.token.as_deref().unwrap_or("")
    );
    let answer = raw_exchange(
        h.addr,
        format!(
            "POST /call HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: 100000000\r\n\r\n"
        )
        .as_bytes(),
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // A request cut short, and a request that is not HTTP at all.
    let answer = raw_exchange(
        h.addr,
        format!(
            "POST /call HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"engine_name\""
        )
        .as_bytes(),
        true,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("bad_request"),
        "a truncated body is a typed 400 and is not run: {answer}"
    );
    let answer = raw_exchange(h.addr, b"GARBAGE\r\n\r\n", false).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Nothing above reached the engine, and the server still serves.
    assert_eq!(h.status().await.calls_done, calls_before);
    assert_eq!(h.get("/health").await.0, 200);
    assert_eq!(
        h.post(
            "/call",
            json!({"engine_name": "c", "method": "incr", "args": 1})
        )
        .await,
        (200, json!({"result": 1}))
    );
}

// ---- stopping -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_answers_then_the_process_exits_0() {
    let mut server = RpcServerProcess::start(&[]).await;
    let h = server.http.clone();
    h.post(
        "/create_engine",
        json!({"engine": "counter", "engine_name": "c"}),
    )
    .await;
    assert_eq!(
        h.post("/destroy", json!({})).await,
        (200, json!({"ok": true}))
    );
    let status = wait_until("fleet rpc-server to exit", Duration::from_secs(20), || {
        let s = server.child.try_wait();
        async move { s }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_destroys_the_engines_and_exits_0() {
    let mut server = RpcServerProcess::start(&[]).await;
    server
        .http
        .post(
            "/create_engine",
            json!({"engine": "echo", "engine_name": "e"}),
        )
        .await;
    // SAFETY: kill(2) on the child we started.
    unsafe {
        libc::kill(server.child.pid() as i32, libc::SIGTERM);
    }
    let status = wait_until("fleet rpc-server to exit", Duration::from_secs(20), || {
        let s = server.child.try_wait();
        async move { s }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        server
            .child
            .stderr_lines()
            .iter()
            .any(|l| l.contains("rpc-server stopped")),
        "the shutdown was the graceful one"
    );
}

#[test]
fn help_teaches_the_routes_and_how_to_embed_the_server() {
    let out = Command::new(fleet_bin())
        .args(["rpc-server", "--help"])
        .output()
        .expect("fleet rpc-server --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "/health",
        "/create_engine",
        "/call",
        "/destroy",
        "X-Request-Id",
        "application/x-fleet-bincode",
        "curl",
        "run_until_stopped",
        "--port",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}

// ---- library mode ---------------------------------------------------------------------------

/// A program's own engine: greets with the greeting it was created with; its destroy hook
/// reports to the test and, when asked to, waits for the test's go-ahead.
struct Greeter {
    greeting: String,
    destroyed: Arc<AtomicBool>,
    hold_destroy: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
}

impl Engine for Greeter {
    fn call(&mut self, call: EngineCall<'_>) -> Result<Payload, EngineError> {
        match call.method() {
            "greet" => call.handle(|name: String| Ok(format!("{}, {name}", self.greeting))),
            _ => Err(call.unknown_method()),
        }
    }

    fn destroy(&mut self) -> Result<(), EngineError> {
        let hold = self.hold_destroy.lock().unwrap().take();
        if let Some(rx) = hold {
            let _ = rx.recv_timeout(Duration::from_secs(20));
        }
        self.destroyed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct GreeterInit {
    greeting: String,
}

fn greeter_registry(
    destroyed: Arc<AtomicBool>,
    hold_destroy: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
) -> fleet_actors::EngineRegistry {
    let mut registry = builtin::registry();
    registry.register("greeter", move |init| {
        let args: GreeterInit = init.args()?;
        Ok(Greeter {
            greeting: args.greeting,
            destroyed: destroyed.clone(),
            hold_destroy: hold_destroy.clone(),
        })
    });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_mode_serves_a_programs_own_engine_and_shutdown_runs_its_destroy_hook() {
    let destroyed = Arc::new(AtomicBool::new(false));
    let registry = greeter_registry(destroyed.clone(), Arc::default());
    let server = serve(
        RpcHttpConfig::new(registry)
            .worker("greeters/1".parse().unwrap())
            .node("test-node"),
    )
    .await
    .expect("serve");
    assert_ne!(server.addr().port(), 0, "the real port is reported");
    let h = Http::new(server.addr()).token(server.token());

    let m = assert_error(
        h.post(
            "/create_engine",
            json!({"engine": "greeter", "engine_name": "g", "init_args": {"wrong": 1}}),
        )
        .await,
        400,
        "bad_request",
    );
    assert!(m.contains("greeting"), "names the missing field: {m}");
    assert_eq!(
        h.post(
            "/create_engine",
            json!({"engine": "greeter", "engine_name": "g", "init_args": {"greeting": "hello"}}),
        )
        .await,
        (200, json!({"ok": true}))
    );
    assert_eq!(
        h.post(
            "/call",
            json!({"engine_name": "g", "method": "greet", "args": "fleet"})
        )
        .await,
        (200, json!({"result": "hello, fleet"}))
    );
    assert_eq!(h.get("/health").await.1["worker"], "greeters/1");

    server.shutdown().await.expect("shutdown");
    assert!(destroyed.load(Ordering::SeqCst), "the destroy hook ran");
    assert!(
        tokio::net::TcpStream::connect(h.addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_destroy_hooks_run_and_destroy_stops_the_server() {
    let destroyed = Arc::new(AtomicBool::new(false));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let registry = greeter_registry(destroyed.clone(), Arc::new(Mutex::new(Some(held))));
    let server = serve(RpcHttpConfig::new(registry)).await.expect("serve");
    let h = Http::new(server.addr()).token(server.token());
    h.post(
        "/create_engine",
        json!({"engine": "greeter", "engine_name": "g", "init_args": {"greeting": "hi"}}),
    )
    .await;

    let destroy = {
        let h = h.clone();
        tokio::spawn(async move { h.post("/destroy", json!({"timeout_ms": 20000})).await })
    };
    let health = wait_until("/health to say 503", Duration::from_secs(10), || {
        let h = h.clone();
        async move {
            let got = h.get("/health").await;
            (got.0 == 503).then_some(got)
        }
    })
    .await
    .unwrap();
    assert_error(health, 503, "unavailable");
    assert_error(
        h.post(
            "/call",
            json!({"engine_name": "g", "method": "greet", "args": "x"}),
        )
        .await,
        503,
        "unavailable",
    );
    assert!(!destroyed.load(Ordering::SeqCst));

    release.send(()).unwrap();
    assert_eq!(destroy.await.unwrap(), (200, json!({"ok": true})));
    assert!(destroyed.load(Ordering::SeqCst), "the destroy hook ran");
    tokio::time::timeout(Duration::from_secs(20), server.stopped())
        .await
        .expect("the server stops after /destroy");
    server
        .shutdown()
        .await
        .expect("shutdown after destroy is fine");
}

// ---- authentication and limits ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_or_browser_style_request_runs_nothing_and_the_server_keeps_serving() {
    let server = RpcServerProcess::start(&[]).await;
    let h = &server.http;
    let anon = h.anonymous();
    h.post(
        "/create_engine",
        json!({"engine": "counter", "engine_name": "c"}),
    )
    .await;

    // What a web page's no-cors request sends: POST /destroy without a body, a content type
    // or a token. Then with a wrong token, then the same with text/plain.
    let resp = anon.send(HttpRequest::post("/destroy", Vec::new())).await;
    let m = assert_error(json_of(resp), 401, "unauthorized");
    assert!(
        m.contains("Authorization: Bearer"),
        "says what to send: {m}"
    );
    let wrong = anon.clone().token("not-the-token");
    let resp = wrong
        .send(HttpRequest::post("/destroy", "{}").header("content-type", "text/plain"))
        .await;
    assert_error(json_of(resp), 401, "unauthorized");
    assert_error(anon.get("/status").await, 401, "unauthorized");
    let (status, CallReply(r)) = anon.bincode("/call", vec![1, 2, 3], None).await;
    assert_eq!(status, 401);
    assert!(matches!(r, Err(FleetError::BadRequest { .. })), "{r:?}");
    // With the token, a body type other than JSON or bincode, or none, is still refused.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = HttpRequest::post("/destroy", Vec::new());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_error(json_of(h.send(req).await), 415, "unsupported_media_type");
    }

    // Health stays open; the worker was never destroyed and still counts.
    assert_eq!(anon.get("/health").await.0, 200);
    assert_eq!(
        h.post(
            "/call",
            json!({"engine_name": "c", "method": "incr", "args": 2})
        )
        .await,
        (200, json!({"result": 2}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_loopback_gets_a_random_one_and_other_addresses_refuse_to_start()
{
    // Loopback: a random token, printed on stderr, and it works.
    let mut cmd = Command::new(fleet_bin());
    cmd.args(["rpc-server", "--port", "0"])
        .env_remove("FLEET_RPC_TOKEN");
    let child = PipedChild::spawn("rpc-server", &mut cmd).expect("start");
    let addr = child
        .wait_for_stdout(Duration::from_secs(20), parse_listening_line)
        .await
        .expect("listening");
    let token = wait_until("the token on stderr", Duration::from_secs(10), || {
        let lines = child.stderr_lines();
        async move {
            lines.iter().find_map(|l| {
                l.split("this run's token is ")
                    .nth(1)
                    .map(|t| t.trim().to_string())
            })
        }
    })
    .await
    .unwrap();
    let h = Http::new(addr);
    assert_error(h.get("/status").await, 401, "unauthorized");
    assert_eq!(h.clone().token(&token).status().await.calls_done, 0);
    drop(child);

    // Any other address: no token, an empty one, a short one are all refused at start, each
    // saying what to do.
    let dir = std::env::temp_dir().join(format!("fleet-rpc-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let cases: Vec<(Vec<String>, Option<&str>, &str)> = vec![
        (
            vec!["--host".into(), "0.0.0.0".into()],
            None,
            "--token-file",
        ),
        (
            vec!["--host".into(), "0.0.0.0".into()],
            Some(""),
            "FLEET_RPC_TOKEN is set but empty",
        ),
        (
            vec![
                "--host".into(),
                "0.0.0.0".into(),
                "--token-file".into(),
                empty.display().to_string(),
            ],
            None,
            "is empty",
        ),
        (vec![], Some(" "), "FLEET_RPC_TOKEN is set but empty"),
        (
            vec!["--host".into(), "0.0.0.0".into()],
            Some("short"),
            "too short",
        ),
    ];
    for (args, env, needle) in cases {
        let mut cmd = Command::new(fleet_bin());
        cmd.args(["rpc-server", "--port", "0"]).args(&args);
        match env {
            Some(v) => cmd.env("FLEET_RPC_TOKEN", v),
            None => cmd.env_remove("FLEET_RPC_TOKEN"),
        };
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::from(cmd).output(),
        )
        .await
        .expect("exits at once")
        .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
        assert!(out.stdout.is_empty(), "never listened: {args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_in_requests_are_a_400_and_the_server_keeps_serving() {
    let server = RpcServerProcess::start(&[]).await;
    let h = &server.http;
    h.post(
        "/create_engine",
        json!({"engine": "counter", "engine_name": "c"}),
    )
    .await;
    let call = json!({"engine_name": "c", "method": "incr", "args": 1});
    for ms in [
        "18446744073709551615",
        "99999999999999999999999",
        "1e300",
        "-1",
        "0",
    ] {
        let m = assert_error(
            h.post_with("/call", call.clone(), &[("x-fleet-timeout-ms", ms)])
                .await,
            400,
            "bad_request",
        );
        assert!(m.contains("X-Fleet-Timeout-Ms"), "{m}");
    }
    let m = assert_error(
        h.post("/destroy", json!({"timeout_ms": u64::MAX})).await,
        400,
        "bad_request",
    );
    assert!(m.contains("timeout_ms"), "{m}");
    assert_error(
        h.post("/destroy", json!({"timeout_ms": 1e300})).await,
        400,
        "bad_request",
    );
    let (status, ControlReply(r)) = h
        .bincode(
            "/control",
            encode_body(&Control::Destroy {
                timeout_ms: u64::MAX,
            }),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(matches!(r, Err(FleetError::BadRequest { .. })), "{r:?}");
    assert_eq!(h.get("/health").await.0, 200, "not destroyed");
    assert_eq!(h.post("/call", call).await, (200, json!({"result": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_408_naming_the_limit() {
    let server = RpcServerProcess::start(&["--body-read-timeout", "1s"]).await;
    let h = &server.http;
    let auth = format!(
        "Authorization: Bearer {}\r\n",
        h.token.as_deref().unwrap_or("")
    );
    // Half a body, and the connection kept open.
    let answer = raw_exchange(
        h.addr,
        format!(
            "POST /call HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"engine_name\""
        )
        .as_bytes(),
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("body_timeout") && answer.contains("--body-read-timeout"),
        "{answer}"
    );
    assert_eq!(h.get("/health").await.0, 200);
}
