//! `/metrics` in Prometheus' text format: requests by route and status, errors by kind, queue depth per
//! model, batch sizes and request latencies as histograms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the batch-size histogram.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A cumulative histogram.
#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(bounds) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    errors: BTreeMap<String, u64>,
    batches: Histogram,
    latency: BTreeMap<String, Histogram>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// A request to `route` answered with `status` after `seconds`.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.inner.lock() {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
            m.latency
                .entry(route.to_string())
                .or_default()
                .observe(LATENCY_BUCKETS, seconds);
        }
    }

    /// A refused or failed request, by kind (`bad_request`, `queue_full`, `timeout`, ...).
    pub fn error(&self, kind: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.errors.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// A forward pass over `n` inputs.
    pub fn observe_batch(&self, n: usize) {
        if let Ok(mut m) = self.inner.lock() {
            m.batches.observe(BATCH_BUCKETS, n as f64);
        }
    }

    /// The text exposition, with the queue depths given.
    pub fn render(&self, queues: &[(String, i64)]) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else {
            return out;
        };
        out.push_str(
            "# HELP zoo_requests_total HTTP requests by route and status.\n# TYPE zoo_requests_total counter\n",
        );
        for ((route, status), n) in &m.requests {
            let _ = writeln!(out, "zoo_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP zoo_errors_total Refused or failed requests by kind.\n# TYPE zoo_errors_total counter\n");
        for (kind, n) in &m.errors {
            let _ = writeln!(out, "zoo_errors_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str("# HELP zoo_queue_depth Inputs waiting for a model.\n# TYPE zoo_queue_depth gauge\n");
        for (model, d) in queues {
            let _ = writeln!(out, "zoo_queue_depth{{model=\"{model}\"}} {d}");
        }
        out.push_str("# HELP zoo_batch_size Inputs per forward pass.\n# TYPE zoo_batch_size histogram\n");
        m.batches.render(&mut out, "zoo_batch_size", "", BATCH_BUCKETS);
        out.push_str(
            "# HELP zoo_request_duration_seconds Request latency by route.\n# TYPE zoo_request_duration_seconds histogram\n",
        );
        for (route, h) in &m.latency {
            h.render(
                &mut out,
                "zoo_request_duration_seconds",
                &format!("route=\"{route}\""),
                LATENCY_BUCKETS,
            );
        }
        out
    }
}
