//! Times one ONNX image model on rten or tract, as `zoo bench --json` times ours: `warmup` untimed passes,
//! then the median of `iters` timed passes over one random input of `batch` x 3 x `size` x `size`.
//!
//! ```text
//! rust-peers-bench rten|tract MODEL.onnx BATCH [--size 224] [--iters 10] [--warmup 3] [--threads 2]
//! ```
//!
//! Prints one JSON line: `{"runtime": .., "batch": .., "threads": .., "median_ms": .., "load_ms": ..,
//! "checksum": ..}` (the checksum, the sum of the outputs, shows both ran the same network).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

struct Args {
    runtime: String,
    model: String,
    batch: usize,
    size: usize,
    iters: usize,
    warmup: usize,
    threads: usize,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let usage = "usage: rust-peers-bench rten|tract MODEL.onnx BATCH [--size N] [--iters N] [--warmup N] [--threads N]";
    let runtime = it.next().context(usage)?;
    let model = it.next().context(usage)?;
    let batch = it.next().context(usage)?.parse().context("BATCH")?;
    let mut a = Args {
        runtime,
        model,
        batch,
        size: 224,
        iters: 10,
        warmup: 3,
        threads: 2,
    };
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| flag.clone())?;
        match flag.as_str() {
            "--size" => a.size = value,
            "--iters" => a.iters = value.max(1),
            "--warmup" => a.warmup = value,
            "--threads" => a.threads = value.max(1),
            _ => bail!("unknown option {flag}\n{usage}"),
        }
    }
    Ok(a)
}

/// A deterministic input in [-1, 1).
fn input(len: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Runs `pass` `warmup` times untimed, then `iters` times timed; the median, and the last pass's checksum.
fn time(a: &Args, mut pass: impl FnMut() -> Result<f64>) -> Result<(Duration, f64)> {
    let mut sum = 0.0;
    for _ in 0..a.warmup {
        sum = pass()?;
    }
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        sum = pass()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], sum))
}

fn rten_bench(a: &Args, x: Vec<f32>) -> Result<(Duration, Duration, f64)> {
    use rten_tensor::prelude::*;
    use rten_tensor::NdTensor;
    // rten's own pool reads RTEN_NUM_THREADS once, when first used.
    std::env::set_var("RTEN_NUM_THREADS", a.threads.to_string());
    let t = Instant::now();
    let model = rten::Model::load_file(&a.model).with_context(|| format!("rten: loading {}", a.model))?;
    let load = t.elapsed();
    let x = NdTensor::from_data([a.batch, 3, a.size, a.size], x);
    let (median, sum) = time(a, || {
        let y = model.run_one(x.view().into(), None)?;
        let y: NdTensor<f32, 2> = y.try_into()?;
        Ok(y.iter().map(|&v| f64::from(v)).sum())
    })?;
    Ok((load, median, sum))
}

fn tract_bench(a: &Args, x: Vec<f32>) -> Result<(Duration, Duration, f64)> {
    use tract_onnx::prelude::*;
    tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::multithread(a.threads));
    let t = Instant::now();
    let shape = [a.batch, 3, a.size, a.size];
    let model = tract_onnx::onnx()
        .model_for_path(&a.model)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let load = t.elapsed();
    let x: Tensor = Tensor::from_shape(&shape, &x)?;
    let (median, sum) = time(a, || {
        let y = model.run(tvec!(x.clone().into()))?;
        let y = y[0].to_plain_array_view::<f32>()?;
        Ok(y.iter().map(|&v| f64::from(v)).sum())
    })?;
    Ok((load, median, sum))
}

fn main() -> Result<()> {
    let a = parse()?;
    let x = input(a.batch * 3 * a.size * a.size);
    let (load, median, sum) = match a.runtime.as_str() {
        "rten" => rten_bench(&a, x)?,
        "tract" => tract_bench(&a, x)?,
        other => bail!("unknown runtime {other} (rten or tract)"),
    };
    if !sum.is_finite() {
        bail!("{}: the outputs are not finite", a.runtime);
    }
    println!(
        "{{\"runtime\": \"{}\", \"batch\": {}, \"threads\": {}, \"median_ms\": {:.3}, \"load_ms\": {:.1}, \"checksum\": {}}}",
        a.runtime,
        a.batch,
        a.threads,
        median.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        sum
    );
    Ok(())
}
