//! A load test for `zoo serve` (127.0.0.1 only, bounded in time): C concurrent clients post images to
//! `/v1/classify/{model}` for a fixed time; throughput, latency percentiles, refusals, and every answer
//! compared with `zoo run --json`'s for the same image. `scripts/load_test.sh` runs it at several
//! concurrencies, with batching on and off, next to `zoo run`'s throughput.
//!
//! ```sh
//! cargo run --release -p zoo-cli --example load_test -- --url http://127.0.0.1:8080 --model r50 \
//!     --reference ref.jsonl --concurrency 1,4,16 --seconds 20 IMAGE...
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Opts {
    url: String,
    model: String,
    reference: Option<String>,
    concurrency: Vec<usize>,
    seconds: f64,
    images: Vec<String>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        url: String::new(),
        model: String::new(),
        reference: None,
        concurrency: vec![1, 4, 16],
        seconds: 10.0,
        images: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => o.url = value()?,
            "--model" => o.model = value()?,
            "--reference" => o.reference = Some(value()?),
            "--concurrency" => {
                o.concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse().map_err(|_| format!("bad concurrency {c}")))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => o.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            _ => o.images.push(a),
        }
    }
    let local = o.url.starts_with("http://127.0.0.1:") || o.url.starts_with("http://localhost:");
    if !local || o.model.is_empty() || o.images.is_empty() || !(0.1..=600.0).contains(&o.seconds) {
        return Err(
            "usage: load_test --url http://127.0.0.1:PORT --model NAME [--reference zoo-run.jsonl] \
                    [--concurrency 1,4,16] [--seconds S (at most 600)] IMAGE..."
                .into(),
        );
    }
    Ok(o)
}

/// The top-1 class and probability of an answer.
fn top1(v: &Value) -> Option<(u64, f64)> {
    let t = v["top"].get(0)?;
    Some((t["class"].as_u64()?, t["prob"].as_f64()?))
}

/// One client's results: latencies (ms) of answered requests, refusals, other errors, answers unlike `zoo run`.
type ClientResult = (Vec<f64>, usize, usize, usize);

fn main() {
    let o = parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let bodies: Vec<Vec<u8>> = o
        .images
        .iter()
        .map(|p| std::fs::read(p).expect("reading an image"))
        .collect();
    let reference: HashMap<String, (u64, f64)> = o
        .reference
        .as_ref()
        .map(|r| {
            std::fs::read_to_string(r)
                .expect("reading the reference")
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| Some((v["input"].as_str()?.to_string(), top1(&v)?)))
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<Option<(u64, f64)>> = o.images.iter().map(|p| reference.get(p).copied()).collect();
    let url = format!("{}/v1/classify/{}", o.url, o.model);
    println!("| clients | requests | answers/s | p50 ms | p95 ms | p99 ms | refused (503) | other errors | answers unlike zoo run |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &c in &o.concurrency {
        let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
        let started = Instant::now();
        let results: Vec<ClientResult> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..c)
                .map(|t| {
                    let (bodies, expected, url) = (&bodies, &expected, &url);
                    s.spawn(move || {
                        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                        let (mut lat, mut refused, mut errors, mut unlike) = (Vec::new(), 0, 0, 0);
                        let mut i = t;
                        while Instant::now() < deadline {
                            let k = i % bodies.len();
                            i += 1;
                            let start = Instant::now();
                            match agent.post(url).send_bytes(&bodies[k]) {
                                Ok(r) => {
                                    lat.push(start.elapsed().as_secs_f64() * 1e3);
                                    let v: Value = r.into_json().unwrap_or(Value::Null);
                                    if let (Some(want), got) = (expected[k], top1(&v)) {
                                        if got.is_none_or(|g| g.0 != want.0 || (g.1 - want.1).abs() > 1e-5) {
                                            unlike += 1;
                                        }
                                    }
                                }
                                Err(ureq::Error::Status(503, _)) => refused += 1,
                                Err(_) => errors += 1,
                            }
                        }
                        (lat, refused, errors, unlike)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let mut lat: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        let sum = |f: fn(&ClientResult) -> usize| results.iter().map(f).sum::<usize>();
        println!(
            "| {c} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            lat.len() + sum(|r| r.1) + sum(|r| r.2),
            lat.len() as f64 / elapsed,
            pct(0.50),
            pct(0.95),
            pct(0.99),
            sum(|r| r.1),
            sum(|r| r.2),
            sum(|r| r.3)
        );
    }
}
