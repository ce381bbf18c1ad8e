//! Dynamic batching: requests for a model wait in a bounded queue; one worker thread per model takes up to
//! `max_batch` of them (waiting at most `max_wait` after the first) and runs them as one forward pass. The
//! model's own threads (Candle's and rayon's pool) do the arithmetic; HTTP and decoding run elsewhere.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::classifier::Classifier;

/// One input waiting for the model: a preprocessed (C, H, W) tensor and where its logits go.
pub struct Job {
    /// The input.
    pub tensor: Tensor,
    /// The logits, or why there are none.
    pub reply: oneshot::Sender<Result<Vec<f32>, String>>,
    /// When the request's time is up (a job past it is dropped unrun).
    pub deadline: Instant,
}

/// The sending side of a model's queue.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<Job>,
    depth: Arc<AtomicI64>,
}

/// Why a job was not queued.
pub enum Refused {
    /// The queue is full: try again later.
    Full,
    /// The worker is gone.
    Closed,
}

impl Queue {
    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Closed),
        }
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }
}

/// How a worker groups requests.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most inputs per forward pass.
    pub max_batch: usize,
    /// Longest wait for more inputs after the first.
    pub max_wait: Duration,
    /// Jobs the queue holds before refusing.
    pub capacity: usize,
}

/// Starts the worker of `model` and returns its queue.
pub fn start(name: String, model: Classifier, policy: BatchPolicy, metrics: Arc<Metrics>) -> std::io::Result<Queue> {
    let (tx, rx) = sync_channel(policy.capacity);
    let depth = Arc::new(AtomicI64::new(0));
    let queue = Queue {
        tx,
        depth: depth.clone(),
    };
    std::thread::Builder::new()
        .name(format!("zoo-model-{name}"))
        .spawn(move || work(&model, &rx, policy, &depth, &metrics))?;
    Ok(queue)
}

fn work(model: &Classifier, rx: &Receiver<Job>, policy: BatchPolicy, depth: &AtomicI64, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let until = Instant::now() + policy.max_wait;
        while jobs.len() < policy.max_batch {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        depth.fetch_sub(jobs.len() as i64, Ordering::Relaxed);
        // Requests whose client left or whose time is up are not computed.
        let now = Instant::now();
        let (live, dead): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !j.reply.is_closed() && j.deadline > now);
        for j in dead {
            let _ = j.reply.send(Err("timed out in the queue".into()));
        }
        if live.is_empty() {
            continue;
        }
        metrics.observe_batch(live.len());
        match run(model, &live) {
            Ok(rows) => {
                for (job, row) in live.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(row));
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                for job in live {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// One forward pass over the jobs' inputs: their logits, row by row.
fn run(model: &Classifier, jobs: &[Job]) -> anyhow::Result<Vec<Vec<f32>>> {
    let tensors: Vec<&Tensor> = jobs.iter().map(|j| &j.tensor).collect();
    let x = Tensor::stack(&tensors, 0)?;
    Ok(model.logits(&x)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}
