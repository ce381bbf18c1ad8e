//! Winograd against one GEMM, per convolution: each stride-1 3x3 shape of ResNet-18/50 at batch 1 and 8, the
//! same weights built both ways ([`Conv::new_inference_cpu_lowered`]), timed interleaved in one process so that
//! machine noise hits both alike, with the largest difference of their outputs.
//!
//! `cargo run --release -p zoo-benches --bin lowering -- [--rounds N] [--iters N]`

use candle_core::{Device, Result, Tensor};
use resnet::layers::{Conv, ConvSpec, Engine, Lowering};
use zoo_benches::{max_abs_diff, median, time_ms};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
            None => Ok(default),
            Some(s) => s
                .trim()
                .parse()
                .map_err(|_| candle_core::Error::Msg(format!("{name}: `{s}` is not a whole number"))),
        }
    };
    let (rounds, iters) = (opt("--rounds", 15)?, opt("--iters", 10)?.max(1));
    println!(
        "engine {}; {rounds} rounds of {iters} passes each, interleaved",
        Engine::current().name()
    );
    println!("| channels | map | batch | GEMM ms | Winograd ms | Winograd / GEMM | GEMM GFLOP/s | max diff |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let dev = Device::Cpu;
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        for n in [1usize, 8] {
            let spec = ConvSpec::new(c, c, 3, 1);
            let w: Vec<f32> = (0..c * c * 9)
                .map(|i| ((i * 7919) % 101) as f32 / 1010.0 - 0.05)
                .collect();
            let bias = Tensor::randn(0f32, 0.1, c, &dev)?;
            let x = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?.relu()?;
            let residual = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?;
            let convs = [Lowering::Gemm, Lowering::Winograd]
                .map(|l| Conv::new_inference_cpu_lowered(w.clone(), Some(bias.clone()), spec, l));
            let [gemm, wino] = convs;
            let (gemm, wino) = (gemm?, wino?);
            let pass = |conv: &Conv| conv.forward_fused(&x, Some(&residual), true);
            let diff = max_abs_diff(&pass(&gemm)?, &pass(&wino)?)?;
            let (mut tg, mut tw) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                tg.push(time_ms(|| (0..iters).try_for_each(|_| pass(&gemm).map(drop)))? / iters as f64);
                tw.push(time_ms(|| (0..iters).try_for_each(|_| pass(&wino).map(drop)))? / iters as f64);
            }
            let ratios: Vec<f64> = tw.iter().zip(&tg).map(|(w, g)| w / g).collect();
            let (g, wn, r) = (median(&mut tg), median(&mut tw), median(&mut ratios.clone()));
            let flops = 2.0 * (n * c * c * 9 * hw * hw) as f64;
            let lowered = wino.lowering().map_or("-", Lowering::name);
            println!(
                "| {c} | {hw}x{hw} | {n} | {g:.3} | {wn:.3} ({lowered}) | {r:.2}x | {:.0} | {diff:.1e} |",
                flops / g / 1e6
            );
        }
    }
    Ok(())
}
