//! The engine-behaviour checks, written once and run against every way of reaching an
//! RpcServer worker: in-process through the actor, isolated behind `fleet rpc-server` over
//! HTTP (bincode or JSON), or through the launcher. Passing the same suite is what "the worker
//! behaves the same wherever it runs" means.
//!
//! A test implements [`WorkerCaller`] for its way of calling a worker (three methods) and runs
//! [`run_engine_suite`] on a fresh worker that hosts the built-in engines (`counter`, `echo`,
//! `sleep`). The suite creates engines named `suite-counter`, `suite-echo` and `suite-sleep`,
//! and panics with a message naming the failed check.
//!
//! It checks: engine creation and its typed errors (duplicate name, unknown type), calls and
//! their results, the typed errors of calls (unknown engine, unknown method, bad arguments,
//! a failing and a panicking method, after which the worker still serves), request-id
//! deduplication (a repeat, and concurrent repeats, run the method once), and that pings sent
//! together with a two-second engine call are all answered before it. (That the call was
//! already running when a ping was answered needs the worker's status, which this small trait
//! leaves out; tests that can read `/status` or `Control::Status` check that too.)

use fleet_actors::{Codec, FleetError, Payload};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Mutex;

/// One way of calling a worker.
pub trait WorkerCaller: Sync {
    /// Creates engine `name` of registered type `type_name` with constructor `args`.
    fn create_engine(
        &self,
        name: &str,
        type_name: &str,
        args: Payload,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Calls `engine.method` with `args`; a `request_id` makes a repeat run at most once.
    fn call(
        &self,
        engine: &str,
        method: &str,
        args: Payload,
        request_id: Option<String>,
    ) -> impl Future<Output = Result<Payload, FleetError>> + Send;

    /// Liveness: must be answered even while an engine call is running.
    fn ping(&self) -> impl Future<Output = Result<(), FleetError>> + Send;
}

const COUNTER: &str = "suite-counter";
const ECHO: &str = "suite-echo";
const SLEEP: &str = "suite-sleep";

fn encode<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Payload {
    Payload::encode(codec, value).unwrap_or_else(|e| panic!("encoding suite arguments: {e}"))
}

async fn call_ok<W: WorkerCaller, T: DeserializeOwned>(
    w: &W,
    codec: Codec,
    engine: &str,
    method: &str,
    args: &(impl Serialize + ?Sized),
    request_id: Option<&str>,
) -> T {
    let reply = w
        .call(
            engine,
            method,
            encode(codec, args),
            request_id.map(str::to_string),
        )
        .await
        .unwrap_or_else(|e| panic!("{engine}.{method} failed: {e}"));
    reply
        .decode()
        .unwrap_or_else(|e| panic!("{engine}.{method} answered something undecodable: {e}"))
}

async fn call_err<W: WorkerCaller>(
    w: &W,
    codec: Codec,
    engine: &str,
    method: &str,
    args: &(impl Serialize + ?Sized),
) -> FleetError {
    match w.call(engine, method, encode(codec, args), None).await {
        Ok(p) => panic!("{engine}.{method} should have failed but answered {p:?}"),
        Err(e) => e,
    }
}

fn expect<T: Debug>(what: &str, ok: bool, value: &T) {
    assert!(ok, "{what}: got {value:?}");
}

/// Runs every check against `worker`, encoding arguments with `codec` (use the codec the path
/// carries natively: bincode for actor and bincode-HTTP callers, JSON for JSON-HTTP callers).
///
/// Panics at the first failed check, naming it.
pub async fn run_engine_suite<W: WorkerCaller>(worker: &W, codec: Codec) {
    let w = worker;
    let unit = || encode(codec, &());

    // Liveness and engine creation.
    w.ping()
        .await
        .unwrap_or_else(|e| panic!("ping failed: {e}"));
    for (name, ty) in [(COUNTER, "counter"), (ECHO, "echo"), (SLEEP, "sleep")] {
        w.create_engine(name, ty, unit())
            .await
            .unwrap_or_else(|e| panic!("create_engine {name} ({ty}) failed: {e}"));
    }
    let e = w.create_engine(COUNTER, "counter", unit()).await;
    expect(
        "a duplicate engine name is EngineExists",
        matches!(&e, Err(FleetError::EngineExists { engine, .. }) if engine == COUNTER),
        &e,
    );
    let e = w.create_engine("suite-x", "no-such-type", unit()).await;
    expect(
        "an unregistered engine type is EngineTypeUnknown listing the registered ones",
        matches!(&e, Err(FleetError::EngineTypeUnknown { known, .. }) if known.contains("counter")),
        &e,
    );

    // Calls and results.
    let n: u64 = call_ok(w, codec, COUNTER, "incr", &2u64, None).await;
    assert_eq!(n, 2, "counter.incr(2) on a new counter");
    let n: u64 = call_ok(w, codec, COUNTER, "incr", &3u64, None).await;
    assert_eq!(n, 5, "counter.incr(3) after incr(2)");
    let n: u64 = call_ok(w, codec, COUNTER, "get", &(), None).await;
    assert_eq!(n, 5, "counter.get");
    let value = ("hello".to_string(), vec![1u32, 2, 3], true);
    let back: (String, Vec<u32>, bool) = call_ok(w, codec, ECHO, "echo", &value, None).await;
    assert_eq!(back, value, "echo.echo returns its argument");

    // Typed errors of calls.
    let e = call_err(w, codec, "suite-missing", "get", &()).await;
    expect(
        "an unknown engine is EngineNotFound naming it",
        matches!(&e, FleetError::EngineNotFound { engine, .. } if engine == "suite-missing"),
        &e,
    );
    let e = call_err(w, codec, COUNTER, "frobnicate", &()).await;
    expect(
        "an unknown method is MethodNotFound naming it",
        matches!(&e, FleetError::MethodNotFound { method, .. } if method == "frobnicate"),
        &e,
    );
    let e = call_err(w, codec, COUNTER, "incr", &"not a number").await;
    expect(
        "arguments that do not decode are BadRequest",
        matches!(&e, FleetError::BadRequest { .. }),
        &e,
    );
    let e = call_err(w, codec, SLEEP, "fail", &"disk full").await;
    expect(
        "a method that fails is EngineFailed with its message",
        matches!(&e, FleetError::EngineFailed { message, .. } if message == "disk full"),
        &e,
    );
    let e = call_err(w, codec, SLEEP, "panic", &"boom").await;
    expect(
        "a method that panics is EngineFailed with the panic message",
        matches!(&e, FleetError::EngineFailed { message, .. } if message.contains("boom")),
        &e,
    );
    let n: u64 = call_ok(w, codec, COUNTER, "get", &(), None).await;
    assert_eq!(
        n, 5,
        "the worker keeps serving, state intact, after failures"
    );

    // Request-id deduplication.
    let runs_before: u64 = call_ok(w, codec, COUNTER, "runs", &(), None).await;
    let first: u64 = call_ok(w, codec, COUNTER, "incr", &10u64, Some("suite-step-1")).await;
    let repeat: u64 = call_ok(w, codec, COUNTER, "incr", &10u64, Some("suite-step-1")).await;
    assert_eq!(
        (first, repeat),
        (15, 15),
        "a repeated request id gets the recorded result"
    );
    let runs: u64 = call_ok(w, codec, COUNTER, "runs", &(), None).await;
    assert_eq!(
        runs,
        runs_before + 1,
        "a repeated request id runs the method once"
    );
    let repeats = futures::future::join_all((0..4).map(|_| {
        w.call(
            COUNTER,
            "incr",
            encode(codec, &1u64),
            Some("suite-step-2".into()),
        )
    }))
    .await;
    for r in &repeats {
        let n: u64 = r
            .as_ref()
            .unwrap_or_else(|e| panic!("a concurrent repeat failed: {e}"))
            .decode()
            .unwrap_or_else(|e| panic!("a concurrent repeat answered something undecodable: {e}"));
        assert_eq!(n, 16, "concurrent repeats all get the one result");
    }
    let runs: u64 = call_ok(w, codec, COUNTER, "runs", &(), None).await;
    assert_eq!(
        runs,
        runs_before + 2,
        "concurrent repeats of one id run the method once"
    );

    // Liveness during a long engine call.
    let events = Mutex::new(Vec::<&'static str>::new());
    let push = |e| events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    let long = async {
        let r: Result<Payload, FleetError> =
            w.call(SLEEP, "sleep", encode(codec, &2000u64), None).await;
        push("sleep call done");
        r
    };
    let pings = async {
        for _ in 0..3 {
            w.ping()
                .await
                .unwrap_or_else(|e| panic!("ping during a long call failed: {e}"));
            push("ping answered");
        }
    };
    let (long, ()) = futures::future::join(long, pings).await;
    let slept: u64 = long
        .unwrap_or_else(|e| panic!("sleep.sleep(2000) failed: {e}"))
        .decode()
        .unwrap_or_else(|e| panic!("sleep.sleep answered something undecodable: {e}"));
    assert_eq!(slept, 2000, "sleep.sleep returns its argument");
    assert_eq!(
        *events.lock().unwrap_or_else(|p| p.into_inner()),
        vec![
            "ping answered",
            "ping answered",
            "ping answered",
            "sleep call done"
        ],
        "pings are answered while an engine call runs"
    );
}
