//! The lowerings of a 3x3 stride-1 conv against each other, per convolution: one GEMM, Winograd's F(2x2, 3x3)
//! and F(4x4, 3x3), on each stride-1 3x3 shape of ResNet-18/50 at batch 1 and 8, the same weights built each way
//! ([`Conv::new_inference_cpu_lowered`]), timed interleaved in one process so that machine noise hits them
//! alike, with the largest difference of each Winograd output from the GEMM's. A lowering that does not apply to
//! a shape falls back as [`Lowering::choose`] says (the column names what ran).
//!
//! `cargo run --release -p zoo-benches --bin lowering -- [--rounds N] [--iters N] [--batches 1,8]`

use candle_core::{Device, Result, Tensor};
use resnet::layers::{Conv, ConvSpec, Lowering};
use zoo_benches::{interleaved_plan, max_abs_diff, median, time_ms, Args};

fn main() -> Result<()> {
    let columns = [
        "channels",
        "map",
        "batch",
        "GEMM ms",
        "F(2x2) ms",
        "F(4x4) ms",
        "F(2x2) / GEMM",
        "F(4x4) / F(2x2)",
        "GEMM GFLOP/s",
        "max diff F(2x2), F(4x4)",
    ];
    let (rounds, iters, batches) = interleaved_plan(&Args::from_env(), &columns)?;
    let dev = Device::Cpu;
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        for &n in &batches {
            let spec = ConvSpec::new(c, c, 3, 1);
            let w: Vec<f32> = (0..c * c * 9)
                .map(|i| ((i * 7919) % 101) as f32 / 1010.0 - 0.05)
                .collect();
            let bias = Tensor::randn(0f32, 0.1, c, &dev)?;
            let x = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?.relu()?;
            let residual = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?;
            let convs = [Lowering::Gemm, Lowering::Winograd, Lowering::Winograd4]
                .map(|l| Conv::new_inference_cpu_lowered(w.clone(), Some(bias.clone()), spec, l));
            let [gemm, f2, f4] = convs;
            let convs = [gemm?, f2?, f4?];
            let pass = |conv: &Conv| conv.forward_fused(&x, Some(&residual), true);
            let want = pass(&convs[0])?;
            let diffs = [
                max_abs_diff(&want, &pass(&convs[1])?)?,
                max_abs_diff(&want, &pass(&convs[2])?)?,
            ];
            let mut times = [Vec::new(), Vec::new(), Vec::new()];
            for round in 0..rounds {
                // Each round in another order, so that none always runs first.
                for i in 0..3 {
                    let k = (i + round) % 3;
                    let conv = &convs[k];
                    times[k].push(time_ms(|| (0..iters).try_for_each(|_| pass(conv).map(drop)))? / iters as f64);
                }
            }
            let ratio = |a: usize, b: usize| -> f64 {
                let mut r: Vec<f64> = times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect();
                median(&mut r)
            };
            let (r2, r4) = (ratio(1, 0), ratio(2, 1));
            let [g, t2, t4] = times.each_mut().map(|t| median(t));
            let flops = 2.0 * (n * c * c * 9 * hw * hw) as f64;
            let name = |conv: &Conv| conv.lowering().map_or("-", Lowering::name);
            println!(
                "| {c} | {hw}x{hw} | {n} | {g:.3} | {t2:.3} ({}) | {t4:.3} ({}) | {r2:.2}x | {r4:.2}x | {:.0} | {:.1e}, {:.1e} |",
                name(&convs[1]),
                name(&convs[2]),
                flops / g / 1e6,
                diffs[0],
                diffs[1]
            );
        }
    }
    Ok(())
}
