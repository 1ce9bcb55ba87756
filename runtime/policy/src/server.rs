//! `fleet infer`: an OpenAI-compatible inference server over the tiny policy.
//!
//! It stands exactly where vLLM or SGLang would (an `HttpService` worker forked through the
//! HTTP launcher, behind the router and the proxies), so it speaks their shapes:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/chat/completions`, `POST /v1/completions` | sampling with `temperature`, `max_tokens`, `n`, `stop`, `seed`, `stream` (+ `stream_options.include_usage`), `logprobs`, vLLM's `return_token_ids` |
//! | `POST /update_weights_from_disk {"model_path", "weight_version"?, "abort_all_requests"?}` | SGLang: loads a safetensors file (or a model directory's `model.safetensors`); the version is `weight_version`, else the `-v<N>` of the file name; answers `{"success", "message", "num_paused_requests"}`, 400 with `success: false` naming the path on failure |
//! | `GET /get_weight_version` | `{"weight_version": "7"}` |
//! | `POST /pause_generation {"mode": "abort" \| "in_place" \| "retract"}` | holds new requests until continue; `abort` ends in-flight ones with `finish_reason: "abort"`, the others let them finish with the weights they started with; answers once nothing is generating |
//! | `POST /continue_generation` | releases held requests |
//! | `GET /health`, `GET /v1/models`, `GET /stats` | liveness (200 while paused too), the model, counters (`paused`, `weight_version`, `in_flight`, batching) |
//!
//! Every answer and every stream chunk carries `system_fingerprint: fleet-infer-v<N>-<hash12>`
//! naming the weights that generated it. A request's weights are fixed when it is admitted:
//! a load during its generation does not change it (real SGLang can resume a paused request
//! in place under new weights; this server never mixes versions in one answer).
//!
//! Requests are batched continuously by one model thread ([`batcher`]); the chat template and
//! the answer fields are in [`openai`]. Sampling is reproducible: a request's seed (or the
//! server's `--seed` mixed with the request's arrival number) seeds each choice's sampler.

pub mod batcher;
pub mod http;
pub mod openai;
pub mod weights;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use self::batcher::{Batcher, Event, Job};
use self::http::{error, json_response, read_body, sse_response, Body, Listener};
use self::openai::{Choice, Chunks, Defaults, Kind, Parsed};
use self::weights::Loaded;
use crate::error::{PolicyError, Result};
use crate::model::ModelConfig;

/// How `fleet infer` runs.
#[derive(Debug, Clone)]
pub struct InferConfig {
    /// Address to bind.
    pub bind: SocketAddr,
    /// The model directory (`config.json`, `model.safetensors`).
    pub model_dir: PathBuf,
    /// With no model directory there: create one with random weights from this seed.
    pub init_seed: Option<u64>,
    /// With `init_seed`: a supervised warm-up applied to the new weights.
    pub warmup: Option<crate::train::Warmup>,
    /// Weights to start from instead of `model_dir/model.safetensors`.
    pub weights: Option<PathBuf>,
    /// The version of the starting weights (default: from the `-v<N>` of `weights`, else 0).
    pub weight_version: Option<u64>,
    /// Sampler seed.
    pub seed: u64,
    /// Temperature when a request sets none.
    pub temperature: f64,
    /// Most sequences in one decoding step.
    pub max_batch: usize,
    /// Tokens when a request sets no `max_tokens`.
    pub max_tokens: usize,
    /// Most choices (`n`) per request.
    pub max_n: u32,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a request is held while generation is paused before it gets a 503.
    pub hold_timeout: Duration,
    /// The model name reported.
    pub model_name: String,
    /// Slept after every decoding step (default 0; for tests and demos that act while a
    /// request is generating).
    pub step_delay: Duration,
}

impl InferConfig {
    /// Defaults for a model directory: 127.0.0.1:0, temperature 1, batches of 64, 16 tokens.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        InferConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            model_dir: model_dir.into(),
            init_seed: None,
            warmup: None,
            weights: None,
            weight_version: None,
            seed: 0,
            temperature: 1.0,
            max_batch: 64,
            max_tokens: 16,
            max_n: 16,
            max_body_bytes: 1 << 20,
            hold_timeout: Duration::from_secs(600),
            model_name: "fleet-policy".into(),
            step_delay: Duration::ZERO,
        }
    }
}

struct Server {
    cfg: InferConfig,
    model: ModelConfig,
    current: RwLock<Arc<Loaded>>,
    paused: watch::Sender<bool>,
    /// Held across "is it paused? then submit" and "pause, then count what is in flight", so
    /// `pause_generation` never answers while a request is being admitted.
    admission: Mutex<()>,
    batcher: Batcher,
    loads: tokio::sync::Mutex<()>,
    next_request: AtomicU64,
    completed: AtomicU64,
    loaded: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A running server; dropping it stops accepting.
pub struct InferHandle {
    addr: SocketAddr,
    listener: Listener,
    server: Arc<Server>,
}

impl std::fmt::Debug for InferHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl InferHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The fingerprint of the weights it serves now.
    pub fn fingerprint(&self) -> String {
        self.server.current().fingerprint()
    }
    /// Stops it.
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}

/// Opens (or, with `init_seed`, creates) the model directory, loads the weights, binds and
/// serves in background tasks.
pub async fn serve(cfg: InferConfig) -> Result<InferHandle> {
    if !cfg.temperature.is_finite() || cfg.temperature < 0.0 || cfg.max_batch == 0 {
        return Err(PolicyError::Invalid(format!(
            "fleet infer: --temperature {} must be ≥ 0 and --max-batch {} ≥ 1",
            cfg.temperature, cfg.max_batch
        )));
    }
    let dir = cfg.model_dir.clone();
    if !dir.join(crate::model::CONFIG_FILE).is_file() {
        match cfg.init_seed {
            Some(seed) => {
                let (d2, w) = (dir.clone(), cfg.warmup);
                let made = tokio::task::spawn_blocking(move || {
                    crate::train::create_model_dir(&d2, &ModelConfig::default(), seed, w)
                })
                .await
                .map_err(|e| PolicyError::Invalid(format!("creating the model panicked: {e}")))??;
                if made {
                    tracing::info!(dir = %dir.display(), seed, warmup = ?cfg.warmup, "created a model with random weights");
                }
            }
            None => {
                return Err(PolicyError::Io {
                    what: "opening the model directory",
                    path: dir,
                    message: "no config.json there; pass --init-seed S to create a model with \
                              random weights"
                        .into(),
                })
            }
        }
    }
    let model = ModelConfig::read(&dir)?;
    let start = cfg.weights.clone().unwrap_or_else(|| dir.clone());
    let version = cfg
        .weight_version
        .or_else(|| cfg.weights.as_deref().and_then(weights::version_from_name))
        .unwrap_or(0);
    let (m2, s2) = (model.clone(), start.clone());
    let loaded = tokio::task::spawn_blocking(move || weights::load(&m2, &s2, version))
        .await
        .map_err(|e| PolicyError::Invalid(format!("loading the weights panicked: {e}")))??;
    let listener = TcpListener::bind(cfg.bind).await.map_err(PolicyError::io(
        "binding",
        PathBuf::from(cfg.bind.to_string()),
    ))?;
    let addr = listener.local_addr().map_err(PolicyError::io(
        "binding",
        PathBuf::from(cfg.bind.to_string()),
    ))?;
    let batcher = Batcher::start(cfg.max_batch, cfg.step_delay)
        .map_err(PolicyError::io("starting the model thread", dir.clone()))?;
    tracing::info!(%addr, fingerprint = %loaded.fingerprint(), "fleet infer listening");
    let server = Arc::new(Server {
        cfg,
        model,
        current: RwLock::new(loaded),
        paused: watch::channel(false).0,
        admission: Mutex::new(()),
        batcher,
        loads: tokio::sync::Mutex::new(()),
        next_request: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        loaded: AtomicU64::new(1),
    });
    let s = Arc::clone(&server);
    let listener = Listener::spawn(listener, move |req| {
        let s = Arc::clone(&s);
        async move { Ok(route(s, req).await) }
    });
    Ok(InferHandle {
        addr,
        listener,
        server,
    })
}

async fn route(s: Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{
                "id": s.cfg.model_name, "object": "model", "created": 0, "owned_by": "fleet"
            }]}),
        ),
        (&Method::GET, "/stats") => json_response(StatusCode::OK, &stats(&s)),
        (&Method::GET, "/get_weight_version") => json_response(
            StatusCode::OK,
            &json!({"weight_version": s.current().version.to_string()}),
        ),
        (&Method::POST, "/v1/chat/completions") => completion(s, req, Kind::Chat).await,
        (&Method::POST, "/v1/completions") => completion(s, req, Kind::Completion).await,
        (&Method::POST, "/update_weights_from_disk") => update_weights(s, req).await,
        (&Method::POST, "/pause_generation") => pause(s, req).await,
        (&Method::POST, "/continue_generation") => {
            s.paused.send_replace(false);
            json_response(
                StatusCode::OK,
                &json!({"success": true, "message": "generation continues"}),
            )
        }
        (m, p) => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no route {m} {p}"),
        ),
    }
}

fn stats(s: &Server) -> Value {
    let b = s.batcher.stats();
    let steps = b.steps.load(Ordering::Relaxed);
    let stepped = b.stepped.load(Ordering::Relaxed);
    let cur = s.current();
    json!({
        "requests": s.next_request.load(Ordering::Relaxed),
        "completed": s.completed.load(Ordering::Relaxed),
        "in_flight": s.batcher.in_flight(),
        "paused": *s.paused.borrow(),
        "weight_version": cur.version,
        "system_fingerprint": cur.fingerprint(),
        "weights_path": cur.path.display().to_string(),
        "loads": s.loaded.load(Ordering::Relaxed),
        "tokens": b.tokens.load(Ordering::Relaxed),
        "steps": steps,
        "mean_batch": if steps == 0 { 0.0 } else { stepped as f64 / steps as f64 },
        "max_batch": b.max_batch.load(Ordering::Relaxed),
        "cancelled": b.cancelled.load(Ordering::Relaxed),
        "aborted": b.aborted.load(Ordering::Relaxed),
    })
}

fn bad(msg: impl std::fmt::Display) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
}

async fn body_json(
    s: &Server,
    req: Request<Incoming>,
) -> std::result::Result<Value, Response<Body>> {
    let body = read_body(req, s.cfg.max_body_bytes, Duration::from_secs(30)).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| bad(format!("request body is not valid JSON: {e}")))
}

async fn update_weights(s: Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    let refuse = |status: StatusCode, msg: String| {
        json_response(
            status,
            &json!({"success": false, "message": msg, "num_paused_requests": 0}),
        )
    };
    let v = match body_json(&s, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(path) = v
        .get("model_path")
        .and_then(Value::as_str)
        .map(PathBuf::from)
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "`model_path` (a string) is required".into(),
        );
    };
    let version = match v.get("weight_version").filter(|x| !x.is_null()) {
        Some(Value::String(t)) => t.parse::<u64>().ok(),
        Some(x) => x.as_u64(),
        None => weights::version_from_name(&weights::resolve(&path)),
    };
    let Some(version) = version else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "no weight version for {}: give `weight_version` or name the file ...-v<N>",
                path.display()
            ),
        );
    };
    let _one_at_a_time = s.loads.lock().await;
    let (model, p2) = (s.model.clone(), path.clone());
    let loaded = tokio::task::spawn_blocking(move || weights::load(&model, &p2, version)).await;
    let loaded = match loaded {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("cannot load {}: {e}", path.display()),
            )
        }
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("loading panicked: {e}"),
            )
        }
    };
    if v.get("abort_all_requests").and_then(Value::as_bool) == Some(true) {
        s.batcher.abort_all();
    }
    let fp = loaded.fingerprint();
    *s.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
    s.loaded.fetch_add(1, Ordering::Relaxed);
    tracing::info!(path = %path.display(), version, fingerprint = %fp, "loaded weights");
    json_response(
        StatusCode::OK,
        &json!({"success": true, "message": format!("loaded {} as version {version} ({fp})", path.display()), "num_paused_requests": 0}),
    )
}

async fn pause(s: Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    let v = match body_json(&s, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mode = v
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("abort")
        .to_string();
    if !matches!(mode.as_str(), "abort" | "in_place" | "retract") {
        return bad(format!(
            "unknown pause mode {mode:?}: use abort, in_place or retract"
        ));
    }
    {
        let _g = lock(&s.admission);
        s.paused.send_replace(true);
    }
    if mode == "abort" {
        s.batcher.abort_all();
    }
    if tokio::time::timeout(s.cfg.hold_timeout, s.batcher.idle())
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!(
                "paused, but requests were still generating after {:?}",
                s.cfg.hold_timeout
            ),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"success": true, "message": format!("paused ({mode})")}),
    )
}

/// Submits one job per choice once generation is not paused; the receivers, in choice order.
async fn admit(
    s: &Server,
    p: &Parsed,
    n: u64,
) -> std::result::Result<(Arc<Loaded>, Vec<mpsc::UnboundedReceiver<Event>>), Response<Body>> {
    let mut paused = s.paused.subscribe();
    let deadline = tokio::time::Instant::now() + s.cfg.hold_timeout;
    loop {
        if tokio::time::timeout_at(deadline, paused.wait_for(|p| !*p))
            .await
            .is_err()
        {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                format!("generation stayed paused for {:?}", s.cfg.hold_timeout),
            ));
        }
        let _g = lock(&s.admission);
        if *s.paused.borrow() {
            continue;
        }
        let weights = s.current();
        let mut rxs = Vec::with_capacity(p.n as usize);
        for c in 0..u64::from(p.n) {
            let seed = p
                .seed
                .unwrap_or(s.cfg.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d))
                ^ c.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (tx, rx) = mpsc::unbounded_channel();
            let ok = s.batcher.submit(Job {
                prompt: p.prompt_ids.clone(),
                max_tokens: p.max_tokens,
                temperature: p.temperature,
                stop: p.stop.clone(),
                seed,
                weights: Arc::clone(&weights),
                tx,
            });
            if !ok {
                return Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the model thread has stopped; restart fleet infer",
                ));
            }
            rxs.push(rx);
        }
        return Ok((weights, rxs));
    }
}

async fn completion(s: Arc<Server>, req: Request<Incoming>, kind: Kind) -> Response<Body> {
    let n = s.next_request.fetch_add(1, Ordering::Relaxed);
    let body = match read_body(req, s.cfg.max_body_bytes, Duration::from_secs(30)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let defaults = Defaults {
        model: s.cfg.model_name.clone(),
        temperature: s.cfg.temperature,
        max_tokens: s.cfg.max_tokens,
        max_n: s.cfg.max_n,
    };
    let p = match openai::parse(kind, &body, &defaults) {
        Ok(p) => p,
        Err(m) => return bad(m),
    };
    if p.stream && p.n > 1 {
        return bad("streams carry one choice: send n = 1 with stream = true");
    }
    if p.prompt_ids.len() >= s.model.context {
        return bad(format!(
            "the prompt is {} tokens; the model's context is {} (prompt and completion together)",
            p.prompt_ids.len(),
            s.model.context
        ));
    }
    let (weights, rxs) = match admit(&s, &p, n).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id = format!(
        "{}-infer-{n}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }
    );
    let fp = weights.fingerprint();
    if p.stream {
        let (tx, rx) = mpsc::channel(16);
        let mut ev = rxs;
        let rx_ev = ev.pop();
        tokio::spawn(async move {
            if let Some(rx_ev) = rx_ev {
                stream(&s, &p, &id, &fp, rx_ev, &tx).await;
            }
        });
        return sse_response(rx);
    }
    let mut choices = Vec::with_capacity(rxs.len());
    for mut rx in rxs {
        let mut c = Choice::default();
        loop {
            match rx.recv().await {
                Some(Event::Token { id, logprob }) => {
                    c.ids.push(id);
                    c.logprobs.push(logprob);
                }
                Some(Event::Done(why)) => {
                    c.finish = why.as_str();
                    break;
                }
                None => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the model thread ended a request without finishing it",
                    )
                }
            }
        }
        choices.push(c);
    }
    s.completed.fetch_add(1, Ordering::Relaxed);
    json_response(StatusCode::OK, &openai::whole(&p, &id, &fp, &choices))
}

async fn stream(
    s: &Server,
    p: &Parsed,
    id: &str,
    fp: &str,
    mut ev: mpsc::UnboundedReceiver<Event>,
    tx: &mpsc::Sender<Bytes>,
) {
    let chunks = Chunks {
        p,
        id,
        created: openai::now_secs(),
        fingerprint: fp,
    };
    let send = |v: Value| {
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    };
    if let Some(o) = chunks.opening() {
        if tx.send(send(o)).await.is_err() {
            return;
        }
    }
    let (mut i, mut offset) = (0, 0);
    loop {
        let e = tokio::select! {
            e = ev.recv() => e,
            _ = tx.closed() => return,
        };
        match e {
            Some(Event::Token { id, logprob }) => {
                if tx
                    .send(send(chunks.token(i, id, logprob, offset)))
                    .await
                    .is_err()
                {
                    return;
                }
                offset += crate::tokenizer::token_text(id).len();
                i += 1;
            }
            Some(Event::Done(why)) => {
                let _ = tx.send(send(chunks.finish(why.as_str()))).await;
                if let Some(u) = chunks.usage(i) {
                    let _ = tx.send(send(u)).await;
                }
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                s.completed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => return,
        }
    }
}
