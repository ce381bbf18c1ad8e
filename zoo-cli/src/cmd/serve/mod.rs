//! `zoo serve`: an HTTP inference server speaking the Open Inference Protocol (KServe v2 / Triton's REST
//! API), with dynamic batching.
//!
//! - `GET /v2/health/live`, `/v2/health/ready` (503 until every model is loaded), `GET /v2`, `GET
//!   /v2/models/{name}` (inputs and outputs), `GET /v2/models/{name}/ready`, `POST /v2/models/{name}/infer`
//!   (FP32 tensors `[N, C, H, W]` in JSON; outputs `logits` and `probabilities`);
//! - `POST /v1/classify/{name}?top=K`: an image (raw body, or the first part of a multipart form), answered
//!   as `zoo run --json` answers;
//! - `GET /metrics`: Prometheus text.
//!
//! Requests for a model go through a bounded queue to its one worker ([`batcher`]), which runs up to
//! `--max-batch` of them per forward pass; a full queue is answered at once with 503 and `Retry-After`.
//! Images are decoded on blocking threads, at most `--decoders` at a time. SIGTERM or SIGINT: stop accepting,
//! finish what is in flight, exit 0 (non-zero if that takes longer than `--drain-secs`). One JSON log line per
//! request on stderr (not with `--quiet`).

pub mod batcher;
pub mod metrics;
pub mod protocol;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use weights::PreprocessConfig;

use self::batcher::{BatchPolicy, Job, Queue, Refused};
use self::metrics::Metrics;
use self::protocol::{InferRequest, OutputTensor, TensorMetadata};
use crate::classifier::{Classifier, ZeroShotArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Models as `zoo run` names them (pretrained names, Hub repos, self-describing .safetensors files), each
    /// served under its name; `NAME=MODEL` chooses the name.
    #[arg(required = true)]
    models: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value = "8000")]
    port: u16,
    /// Most inputs per forward pass.
    #[arg(long, default_value = "8", value_parser = crate::args::batch_size)]
    max_batch: usize,
    /// Longest wait for more inputs after the first of a batch, in milliseconds.
    #[arg(long, default_value = "5", value_parser = |s: &str| crate::args::in_range(s, 0, 10_000))]
    max_wait_ms: usize,
    /// Inputs each model's queue holds; beyond, requests are refused at once (503, Retry-After).
    #[arg(long, default_value = "64", value_parser = |s: &str| crate::args::in_range(s, 1, 1 << 20))]
    queue: usize,
    /// Time a request may take in all, in milliseconds (then 504).
    #[arg(long, default_value = "30000", value_parser = |s: &str| crate::args::in_range(s, 1, 3_600_000))]
    timeout_ms: usize,
    /// Largest request body, in MiB (then 413).
    #[arg(long, default_value = "32", value_parser = |s: &str| crate::args::in_range(s, 1, 4096))]
    max_body_mb: usize,
    /// Images decoded at once (default: the number of cores).
    #[arg(long, value_parser = |s: &str| crate::args::in_range(s, 1, 1024))]
    decoders: Option<usize>,
    /// After SIGTERM, how long in-flight requests may take before the server gives up on them.
    #[arg(long, default_value = "30", value_parser = |s: &str| crate::args::in_range(s, 1, 3600))]
    drain_secs: usize,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// A loaded model and its queue.
struct Served {
    preprocess: PreprocessConfig,
    labels: Vec<String>,
    num_classes: usize,
    queue: Queue,
}

/// What every handler sees.
struct AppState {
    models: OnceLock<BTreeMap<String, Served>>,
    ready: AtomicBool,
    metrics: Arc<Metrics>,
    decoders: Semaphore,
    timeout: Duration,
    max_body: usize,
    quiet: bool,
}

/// An error answer: a status and `{"error": message}`, with `Retry-After` for 503s.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.message}))).into_response();
        r.extensions_mut().insert(ErrorKind(self.kind));
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The kind of an error answer, for the metrics.
#[derive(Clone, Copy)]
struct ErrorKind(&'static str);

pub fn run(args: Args) -> Result<ExitCode> {
    let device = crate::device::parse_device(&args.device)?;
    let specs = args
        .models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((name, spec)) if !name.is_empty() && !name.contains('/') => (name.to_string(), spec.to_string()),
            _ => (default_name(m), m.clone()),
        })
        .collect::<Vec<_>>();
    let mut names: Vec<&String> = specs.iter().map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    if names.len() != specs.len() {
        bail!("two models would be served under the same name: name them with NAME=MODEL");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(args.decoders.unwrap_or_else(num_cores).max(1) + 2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, specs, device))
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `resnet50` -> `resnet50`; `timm/resnet50.a1_in1k` -> `resnet50.a1_in1k`; `dir/model.safetensors` -> `model`.
fn default_name(spec: &str) -> String {
    let p = std::path::Path::new(spec);
    if p.is_file() {
        return p
            .file_stem()
            .map_or(spec.to_string(), |s| s.to_string_lossy().into_owned());
    }
    spec.rsplit('/').next().unwrap_or(spec).to_string()
}

async fn serve(args: Args, specs: Vec<(String, String)>, device: Device) -> Result<ExitCode> {
    let state = Arc::new(AppState {
        models: OnceLock::new(),
        ready: AtomicBool::new(false),
        metrics: Arc::new(Metrics::default()),
        decoders: Semaphore::new(args.decoders.unwrap_or_else(num_cores)),
        timeout: Duration::from_millis(args.timeout_ms as u64),
        max_body: args.max_body_mb << 20,
        quiet: crate::progress::quiet(),
    });
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("--host/--port: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("zoo serve: listening on http://{local}");
    // Models load while the server already answers liveness (and 503 to readiness).
    let policy = BatchPolicy {
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms as u64),
        capacity: args.queue,
    };
    let loader = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut models = BTreeMap::new();
            for (name, spec) in specs {
                let model = crate::classifier::load(&spec, None, &ZeroShotArgs::default(), &device, DType::F32)
                    .with_context(|| format!("loading {spec}"))?;
                let Classifier::Classes(p) = &model else {
                    bail!("{spec}: zero-shot CLIP models are not served yet");
                };
                let num_classes = p.model.config().num_classes;
                let labels = (0..num_classes).map(|i| p.label(i)).collect();
                let preprocess = p.preprocess.clone();
                let queue = batcher::start(name.clone(), model, policy, state.metrics.clone())
                    .with_context(|| format!("starting the worker of {name}"))?;
                models.insert(
                    name,
                    Served {
                        preprocess,
                        labels,
                        num_classes,
                        queue,
                    },
                );
            }
            let names: Vec<&String> = models.keys().collect();
            eprintln!("zoo serve: ready: {names:?}");
            let _ = state.models.set(models);
            state.ready.store(true, Ordering::SeqCst);
            Ok(())
        })
    };
    let app = Router::new()
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v1/classify/{name}", post(classify))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(args.max_body_mb << 20))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state.clone());
    let drain = Duration::from_secs(args.drain_secs as u64);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        eprintln!("zoo serve: shutting down: finishing requests in flight (at most {drain:?})");
        // If draining outlives its deadline, give up loudly.
        std::thread::spawn(move || {
            std::thread::sleep(drain);
            eprintln!("zoo serve: requests still in flight after {drain:?}; exiting");
            std::process::exit(1);
        });
    });
    tokio::spawn(async move {
        let failed = match loader.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => format!("the model loader failed: {e}"),
        };
        eprintln!("error: {failed}");
        std::process::exit(1);
    });
    server.await.context("serving")?;
    eprintln!("zoo serve: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Records each request in the metrics and logs it as one JSON line.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: axum::middleware::Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let route = route_of(&path);
    let response = next.run(req).await;
    let seconds = start.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state.metrics.observe_request(route, status, seconds);
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        state.metrics.error(kind);
    } else if status == 413 {
        // Refused by the body limit inside an extractor.
        state.metrics.error("body_too_large");
    }
    if !state.quiet {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        eprintln!(
            "{}",
            json!({"ts": ts, "method": method, "path": path, "status": status, "ms": seconds * 1e3})
        );
    }
    response
}

/// The route a path belongs to, for the metrics' labels (model names stay out of them).
fn route_of(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/v2/models/") && p.ends_with("/infer") => "infer",
        p if p.starts_with("/v2/models/") && p.ends_with("/ready") => "model_ready",
        p if p.starts_with("/v2/models/") => "model_metadata",
        p if p.starts_with("/v1/classify/") => "classify",
        "/v2/health/live" => "live",
        "/v2/health/ready" => "ready",
        "/metrics" => "metrics",
        "/v2" => "server_metadata",
        _ => "other",
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::SeqCst);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready}))).into_response()
}

async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "zoo", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

/// The model `name`, or 503 while loading, 404 when unknown.
fn model<'a>(state: &'a AppState, name: &str) -> Result<&'a Served, ApiError> {
    let Some(models) = state.models.get() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the models are still loading",
        ));
    };
    models.get(name).ok_or_else(|| {
        let known: Vec<&String> = models.keys().collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no model `{name}`; served: {known:?}"),
        )
    })
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    model(&state, &name)?;
    Ok(Json(json!({"name": name, "ready": true})))
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let m = model(&state, &name)?;
    let [c, h, w] = m.preprocess.input_size;
    let inputs = [TensorMetadata {
        name: "input",
        datatype: "FP32",
        shape: vec![-1, c as i64, h as i64, w as i64],
    }];
    let outputs = [
        TensorMetadata {
            name: "logits",
            datatype: "FP32",
            shape: vec![-1, m.num_classes as i64],
        },
        TensorMetadata {
            name: "probabilities",
            datatype: "FP32",
            shape: vec![-1, m.num_classes as i64],
        },
    ];
    Ok(Json(
        json!({"name": name, "versions": ["1"], "platform": "zoo_candle", "inputs": inputs,
                   "outputs": outputs, "parameters": {"preprocess": m.preprocess, "labels": m.labels}}),
    ))
}

/// Queues each item and waits for its logits, within the request's time.
async fn logits_of(
    state: &AppState,
    m: &Served,
    items: Vec<Tensor>,
    deadline: Instant,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut waiting = Vec::with_capacity(items.len());
    for tensor in items {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            tensor,
            reply: tx,
            deadline,
        };
        match m.queue.submit(job) {
            Ok(()) => waiting.push(rx),
            Err(Refused::Full) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    "the model's queue is full: retry later",
                ))
            }
            Err(Refused::Closed) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model_gone",
                    "the model worker stopped",
                ))
            }
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let all = async {
        let mut rows = Vec::with_capacity(waiting.len());
        for rx in waiting {
            match rx.await {
                Ok(Ok(row)) => rows.push(row),
                Ok(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model_error", e)),
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "model_gone",
                        "no answer",
                    ))
                }
            }
        }
        Ok(rows)
    };
    match tokio::time::timeout(left, all).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no answer within {:?}", state.timeout),
        )),
    }
}

/// The whole body: refused (413) from its `Content-Length` before any of it is read when that is over the
/// limit, and while reading when a body without one grows past it.
async fn read_body(state: &AppState, req: Request) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > state.max_body as u64) {
        return Err(too_large(state));
    }
    Bytes::from_request(req, &()).await.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(state),
        status => ApiError::new(status, "bad_request", e.body_text()),
    })
}

fn too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than the server's limit of {} bytes", state.max_body),
    )
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let deadline = Instant::now() + state.timeout;
    // The body first, even for an unknown model: a client still sending would otherwise see the connection
    // close under it instead of the answer.
    let body = read_body(&state, req).await?;
    let m = model(&state, &name)?;
    let req: InferRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("not an inference request: {e}")))?;
    let chw = m.preprocess.input_size;
    let input = protocol::check_input(&req, chw).map_err(ApiError::bad)?;
    let per = chw.iter().product::<usize>();
    let items = input
        .values
        .chunks(per)
        .map(|v| Tensor::from_slice(v, (chw[0], chw[1], chw[2]), &Device::Cpu))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let rows = logits_of(&state, m, items, deadline).await?;
    let wanted = |n: &str| req.outputs.as_ref().is_none_or(|o| o.iter().any(|x| x.name == n));
    if let Some(o) = req
        .outputs
        .iter()
        .flatten()
        .find(|o| o.name != "logits" && o.name != "probabilities")
    {
        return Err(ApiError::bad(format!(
            "unknown output `{}` (logits, probabilities)",
            o.name
        )));
    }
    let mut outputs = Vec::new();
    if wanted("logits") {
        outputs.push(OutputTensor {
            name: "logits".into(),
            shape: vec![input.n, m.num_classes],
            datatype: "FP32",
            data: rows.iter().flatten().copied().collect(),
        });
    }
    if wanted("probabilities") {
        outputs.push(OutputTensor {
            name: "probabilities".into(),
            shape: vec![input.n, m.num_classes],
            datatype: "FP32",
            data: rows.iter().flat_map(|r| softmax(r)).collect(),
        });
    }
    let mut answer = json!({"model_name": name, "model_version": "1", "outputs": outputs});
    if let Some(id) = req.id {
        answer["id"] = json!(id);
    }
    Ok(Json(answer))
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[derive(serde::Deserialize)]
struct ClassifyQuery {
    top: Option<usize>,
}

async fn classify(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<ClassifyQuery>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let deadline = Instant::now() + state.timeout;
    let top = q.top.unwrap_or(5);
    if top == 0 {
        return Err(ApiError::bad("top must be at least 1"));
    }
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > state.max_body as u64)
    {
        return Err(too_large(&state));
    }
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (bytes, input) = if multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad(e.body_text()))?;
        let field = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad(e.body_text()))?
            .ok_or_else(|| ApiError::bad("the form has no part"))?;
        let input = field.file_name().or(field.name()).unwrap_or("request").to_string();
        (field.bytes().await.map_err(|e| ApiError::bad(e.body_text()))?, input)
    } else {
        (read_body(&state, req).await?, "request".to_string())
    };
    let m = model(&state, &name)?;
    if bytes.is_empty() {
        return Err(ApiError::bad("empty body: send the image's bytes"));
    }
    let permit = state
        .decoders
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "shutting down"))?;
    let preprocess = m.preprocess.clone();
    let tensor = tokio::task::spawn_blocking(move || -> Result<Tensor, String> {
        let limits = resnet::data::decode::ImageLimits::default();
        let img = resnet::data::decode::decode_image_with(&bytes, std::path::Path::new("request"), &limits)
            .map_err(|e| e.to_string())?;
        resnet::data::eval_transform(&img, &preprocess, &Device::Cpu).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "decode_failed", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_image", e))?;
    drop(permit);
    let rows = logits_of(&state, m, vec![tensor], deadline).await?;
    let probs = softmax(&rows[0]);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let top: Vec<Value> = order
        .iter()
        .take(top)
        .map(|&c| json!({"class": c, "label": m.labels[c], "prob": probs[c]}))
        .collect();
    Ok(Json(json!({"input": input, "index": 0, "top": top})))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let queues: Vec<(String, i64)> = state
        .models
        .get()
        .map(|m| m.iter().map(|(n, s)| (n.clone(), s.queue.depth())).collect())
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&queues),
    )
        .into_response()
}
