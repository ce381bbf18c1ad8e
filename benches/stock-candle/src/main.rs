//! ms/img of candle-transformers' `resnet18` / `resnet50` (random weights, 224x224, f32, CPU) in stock
//! Candle: the median of `--iters` timed passes after `--warmup` untimed ones (default 1), per batch size,
//! printed as `model batch ms/img` lines for `scripts/bench_stock_candle.sh` and `scripts/bench_peers.py`.

use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.into())
    };
    let iters: usize = flag("--iters", "7").parse().expect("--iters takes a number");
    let warmup: usize = flag("--warmup", "1").parse().expect("--warmup takes a number");
    let batches: Vec<usize> = flag("--batches", "1,8").split(',').map(|b| b.parse().expect("--batches: numbers")).collect();
    let device = Device::Cpu;
    for arch in flag("--archs", "resnet18,resnet50").split(',') {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = match arch {
            "resnet18" => candle_transformers::models::resnet::resnet18(1000, vb)?,
            "resnet50" => candle_transformers::models::resnet::resnet50(1000, vb)?,
            other => panic!("unknown arch {other}: resnet18 or resnet50"),
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
