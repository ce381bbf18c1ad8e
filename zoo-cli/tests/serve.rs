//! `zoo serve` on 127.0.0.1: answers equal `zoo run`'s (image endpoint and the Open Inference Protocol),
//! concurrent clients are batched, bad requests get a 4xx and disturb no one, a full queue is refused at once,
//! SIGTERM drains what is in flight.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cifar20, data, run, stderr, stdout, zoo};
use serde_json::{json, Value};

/// A running `zoo serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-describing ResNet-20 (so that `zoo serve FILE` needs no --weights).
fn model(dir: &Path) -> PathBuf {
    let path = dir.join("r20.safetensors");
    let tensors = candle_core::safetensors::load(cifar20(), &candle_core::Device::Cpu).unwrap();
    let cfg = resnet::variants::resnet20();
    let pre = resnet::load::default_preprocess(&cfg);
    let meta = resnet::load::write_metadata("resnet20", &cfg, &pre, None);
    weights::checkpoint::save(&path, &tensors, &meta).unwrap();
    path
}

/// Starts `zoo serve` on a free port and waits (at most 60 s) until it is ready.
fn start(model: &Path, extra: &[&str]) -> Server {
    let mut child = zoo()
        .arg("serve")
        .arg(format!("r20={}", model.display()))
        .args(["--port", "0", "--device", "cpu"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("zoo serve: listening on ") {
                let _ = tx.send(addr.to_string());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("zoo serve did not start listening");
    let server = Server { child, base, log };
    let start = Instant::now();
    loop {
        if let Ok(r) = ureq::get(&format!("{}/v2/health/ready", server.base)).call() {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not ready: {:?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Status, `Retry-After` and body of a request, whatever the status.
fn send(req: ureq::Request, body: &[u8]) -> (u16, Option<String>, String) {
    match req.send_bytes(body) {
        Ok(r) => (
            r.status(),
            r.header("Retry-After").map(String::from),
            r.into_string().unwrap(),
        ),
        Err(ureq::Error::Status(code, r)) => (
            code,
            r.header("Retry-After").map(String::from),
            r.into_string().unwrap_or_default(),
        ),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// The top classes `zoo run` gives an image: (class, prob).
fn run_reference(model: &Path, img: &Path) -> Vec<(u64, f64)> {
    let out = run(zoo()
        .arg("run")
        .arg(model)
        .arg(img)
        .args(["--json", "--top", "5", "--device", "cpu"]));
    assert!(out.status.success(), "{}", stderr(&out));
    top_of(&serde_json::from_str(stdout(&out).trim()).unwrap())
}

/// The logits `zoo run` gives a preprocessed tensor.
fn run_logits(model: &Path, npy: &Path) -> Vec<f64> {
    let out = run(zoo()
        .arg("run")
        .arg(model)
        .arg(npy)
        .args(["--json", "--logits", "--device", "cpu"]));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str::<Value>(stdout(&out).trim()).unwrap()["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn top_of(v: &Value) -> Vec<(u64, f64)> {
    v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["class"].as_u64().unwrap(), t["prob"].as_f64().unwrap()))
        .collect()
}

fn assert_same_top(a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(a.len(), b.len());
    for ((ca, pa), (cb, pb)) in a.iter().zip(b) {
        assert!((pa - pb).abs() <= 1e-5, "{a:?} vs {b:?}");
        assert!(ca == cb || (pa - pb).abs() <= 1e-5);
    }
    assert_eq!(a[0].0, b[0].0);
}

/// An OIP request carrying `tensor` (a `zoo preprocess` output) as one FP32 input.
fn infer_body(npy: &Path) -> Vec<u8> {
    let t = weights::npy::read_npy(npy, &candle_core::Device::Cpu).unwrap();
    let shape: Vec<usize> = std::iter::once(1).chain(t.dims().iter().copied()).collect();
    let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    serde_json::to_vec(
        &json!({"id": "q1", "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]}),
    )
    .unwrap()
}

#[test]
fn answers_equal_zoo_run_on_both_protocols() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = start(&model, &[]);
    let base = &server.base;
    let reference = run_reference(&model, &cat);

    let (status, _, body) = send(
        ureq::post(&format!("{base}/v1/classify/r20")),
        &std::fs::read(&cat).unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_same_top(&top_of(&v), &reference);
    assert_eq!(v["top"][0]["label"], "cat");

    // A multipart form, as `curl -F image=@cat.png` sends it.
    let boundary = "zooboundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend(std::fs::read(&cat).unwrap());
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let (status, _, body) = send(
        ureq::post(&format!("{base}/v1/classify/r20?top=2"))
            .set("Content-Type", &format!("multipart/form-data; boundary={boundary}")),
        &form,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["input"], "cat.png");
    assert_same_top(&top_of(&v), &reference[..2]);

    // The Open Inference Protocol with the tensor `zoo preprocess` writes: logits equal `zoo run`'s on it.
    let npy = dir.path().join("cat.npy");
    let out = run(zoo().arg("preprocess").arg(&model).arg(&cat).arg("--out").arg(&npy));
    assert!(out.status.success(), "{}", stderr(&out));
    let want = run_logits(&model, &npy);
    let (status, _, body) = send(
        ureq::post(&format!("{base}/v2/models/r20/infer")).set("Content-Type", "application/json"),
        &infer_body(&npy),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "q1");
    assert_eq!(v["model_name"], "r20");
    let logits = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "logits")
        .unwrap();
    assert_eq!(logits["shape"], json!([1, 10]));
    assert_eq!(logits["datatype"], "FP32");
    for (a, b) in logits["data"].as_array().unwrap().iter().zip(&want) {
        assert!((a.as_f64().unwrap() - b).abs() <= 1e-4, "{a} vs {b}");
    }

    let meta: Value = ureq::get(&format!("{base}/v2/models/r20"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 3, 32, 32]));
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(
        ureq::get(&format!("{base}/v2/health/live")).call().unwrap().status(),
        200
    );
    assert_eq!(
        ureq::get(&format!("{base}/v2/models/r20/ready"))
            .call()
            .unwrap()
            .status(),
        200
    );
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("zoo_requests_total{route=\"classify\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("zoo_batch_size_count 3"), "{metrics}");
    // Structured logs: one JSON line per request. The server writes each after its response, and a thread
    // here reads them from its stderr: wait (at most 5 s) for the last requests' lines to come through.
    let logged = || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("{\""))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while logged() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(logged() >= 6, "{:?}", server.log.lock().unwrap());
}

/// The status of a request announcing a 2 MiB image, read before any of the body is sent.
fn huge_body_status(base: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/classify/r20 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[test]
fn concurrent_clients_are_batched_and_bad_requests_disturb_no_one() {
    let (Some(cat), Some(coffee)) = (data("chelsea.png"), data("coffee.png")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = start(
        &model,
        &["--max-batch", "8", "--max-wait-ms", "20", "--max-body-mb", "1"],
    );
    let refs = [run_reference(&model, &cat), run_reference(&model, &coffee)];
    let images = [std::fs::read(&cat).unwrap(), std::fs::read(&coffee).unwrap()];
    let base = server.base.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (base, images, refs) = (base.clone(), images.clone(), refs.clone());
            std::thread::spawn(move || {
                for i in 0..6 {
                    let k = (t + i) % 2;
                    let (status, _, body) = send(ureq::post(&format!("{base}/v1/classify/r20")), &images[k]);
                    assert_eq!(status, 200, "{body}");
                    assert_same_top(&top_of(&serde_json::from_str(&body).unwrap()), &refs[k]);
                    // A bad request between two good ones.
                    let bad: (ureq::Request, Vec<u8>, u16) = match (t + i) % 6 {
                        0 => (ureq::post(&format!("{base}/v1/classify/r20")), b"not an image".to_vec(), 400),
                        1 => (ureq::post(&format!("{base}/v1/classify/nope")), images[0].clone(), 404),
                        2 => (
                            ureq::post(&format!("{base}/v2/models/r20/infer")),
                            br#"{"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0]}]}"#.to_vec(),
                            400,
                        ),
                        3 => (
                            ureq::post(&format!("{base}/v2/models/r20/infer")),
                            br#"{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "INT64", "data": [0]}]}"#.to_vec(),
                            400,
                        ),
                        4 => (ureq::post(&format!("{base}/v2/models/r20/infer")), br#"{"inputs": [{"name": "in"#.to_vec(), 400),
                        _ => {
                            // A 2 MiB body against a 1 MiB limit: refused from its Content-Length, before it is
                            // sent (a client still writing would see the connection close).
                            assert_eq!(huge_body_status(&base), 413);
                            continue;
                        }
                    };
                    let (status, _, body) = send(bad.0, &bad.1);
                    assert_eq!(status, bad.2, "{body}");
                    if status != 413 {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        assert!(!v["error"].as_str().unwrap().is_empty());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value = |key: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} not in {metrics}"))
    };
    let passes = value("zoo_batch_size_count");
    let inputs = value("zoo_batch_size_sum");
    assert_eq!(inputs, 48.0, "every good request computed once");
    assert!(
        passes < inputs,
        "8 concurrent clients were never batched: {passes} passes for {inputs} inputs"
    );
    assert!(value("zoo_errors_total{kind=\"bad_image\"}") >= 1.0);
    assert!(value("zoo_errors_total{kind=\"unknown_model\"}") >= 1.0);
    assert!(value("zoo_requests_total{route=\"classify\",status=\"413\"}") >= 1.0);
}

#[test]
fn a_full_queue_is_refused_at_once() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = start(&model, &["--max-batch", "1", "--max-wait-ms", "0", "--queue", "1"]);
    let npy = dir.path().join("cat.npy");
    assert!(
        run(zoo().arg("preprocess").arg(&model).arg(&cat).arg("--out").arg(&npy))
            .status
            .success()
    );
    // 64 items in one request: the queue of 1 overflows long before the worker catches up.
    let one: Value = serde_json::from_slice(&infer_body(&npy)).unwrap();
    let data: Vec<Value> = (0..64)
        .flat_map(|_| one["inputs"][0]["data"].as_array().unwrap().clone())
        .collect();
    let body = json!({"inputs": [{"name": "input", "shape": [64, 3, 32, 32], "datatype": "FP32", "data": data}]});
    let start = Instant::now();
    let (status, retry, text) = send(
        ureq::post(&format!("{}/v2/models/r20/infer", server.base)),
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(status, 503, "{text}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(text.contains("queue is full"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // And the server still answers, once the refused request's queued items are dropped (unrun: their
    // client is gone), as a client honouring Retry-After finds.
    let start = Instant::now();
    loop {
        let (status, retry, _) = send(
            ureq::post(&format!("{}/v1/classify/r20", server.base)),
            &std::fs::read(&cat).unwrap(),
        );
        if status == 200 {
            break;
        }
        assert_eq!((status, retry.as_deref()), (503, Some("1")));
        assert!(start.elapsed() < Duration::from_secs(10), "still refused after 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_requests_in_flight_then_exits_0() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    // Each batch waits 500 ms for company: a request is in flight when SIGTERM comes.
    let mut server = start(&model, &["--max-batch", "64", "--max-wait-ms", "500", "--quiet"]);
    let url = format!("{}/v1/classify/r20", server.base);
    let image = std::fs::read(&cat).unwrap();
    let in_flight = std::thread::spawn(move || send(ureq::post(&url), &image));
    std::thread::sleep(Duration::from_millis(150));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let (status, _, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the request in flight was dropped: {body}");
    let start = Instant::now();
    let code = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code:?}: {:?}", server.log.lock().unwrap());
    // Nothing listens any more.
    let addr = server.base.trim_start_matches("http://").to_string();
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

/// Triton's Python HTTP client (`tritonclient[http]`, installed by `scripts/fetch_test_data.sh` into
/// `.data/oip-venv`) talks to the server unmodified and gets `zoo run`'s logits.
#[test]
fn tritons_own_client_talks_to_it() {
    let Some(cat) = data("chelsea.png") else { return };
    let Some(python) = data("oip-venv/bin/python") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = start(&model, &[]);
    let npy = dir.path().join("cat.npy");
    assert!(
        run(zoo().arg("preprocess").arg(&model).arg(&cat).arg("--out").arg(&npy))
            .status
            .success()
    );
    let want = run_logits(&model, &npy);
    let out = run(std::process::Command::new(python)
        .arg(common::root().join("scripts/oip_client.py"))
        .arg(server.base.trim_start_matches("http://"))
        .arg("r20")
        .arg(&npy));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["id"], "triton-client");
    assert_eq!(v["shape"], json!([1, 10]));
    for (a, b) in v["logits"].as_array().unwrap().iter().zip(&want) {
        assert!((a.as_f64().unwrap() - b).abs() <= 1e-4, "{a} vs {b}");
    }
}
