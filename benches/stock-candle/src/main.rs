//! ms/img of candle-transformers' `resnet18` / `resnet50` (random weights, 224x224, f32, CPU) in stock
//! Candle: the median of `--iters` timed passes after `--warmup` untimed ones (default 1), per batch size,
//! printed as `model batch ms/img` lines for `scripts/bench_stock_candle.sh` and `scripts/bench_peers.py`.

use std::time::Instant;

use candle_core::{DType, Device, Error, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or(default.into())
    };
    // Counts and batch sizes: whole numbers from 1 (`--warmup` from 0) to 10,000, else a usage error.
    let number = |what: &str, s: &str, least: usize| -> Result<usize> {
        s.trim()
            .parse()
            .ok()
            .filter(|n| (least..=10_000).contains(n))
            .ok_or_else(|| Error::Msg(format!("{what} takes whole numbers from {least} to 10000, not {s:?}")))
    };
    let iters = number("--iters", &flag("--iters", "7"), 1)?;
    let warmup = number("--warmup", &flag("--warmup", "1"), 0)?;
    let batches = flag("--batches", "1,8")
        .split(',')
        .map(|b| number("--batches", b, 1))
        .collect::<Result<Vec<usize>>>()?;
    let device = Device::Cpu;
    for arch in flag("--archs", "resnet18,resnet50").split(',') {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = match arch {
            "resnet18" => candle_transformers::models::resnet::resnet18(1000, vb)?,
            "resnet50" => candle_transformers::models::resnet::resnet50(1000, vb)?,
            other => return Err(Error::Msg(format!("unknown arch {other:?}: resnet18 or resnet50"))),
        };
        for &batch in &batches {
            let x = Tensor::randn(0f32, 1f32, (batch, 3, 224, 224), &device)?;
            for _ in 0..warmup {
                model.forward(&x)?;
            }
            let mut times = Vec::with_capacity(iters);
            for _ in 0..iters {
                let start = Instant::now();
                model.forward(&x)?;
                times.push(start.elapsed().as_secs_f64() * 1e3 / batch as f64);
            }
            times.sort_by(|a, b| a.total_cmp(b));
            println!("{arch} {batch} {:.1}", times[times.len() / 2]);
        }
    }
    Ok(())
}
