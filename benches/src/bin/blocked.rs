//! ResNet-50's convolutions on NCHW against the same convs on the channel-blocked layout, NCHW16c
//! ([`resnet::layers::Layout::Nchw16c`]: the conv held for the blocked kernel, its input and residual already in that
//! layout, as inside a network that runs its blocks on it), per conv at batch 1 and 8: the same weights both ways,
//! timed interleaved in one process (the order swapped every round), with the largest difference between the two
//! outputs (the blocked one converted back to NCHW). Both sides take the default lowering: Winograd for the
//! stride-1 3x3s (on NCHW, or on NCHW16c), else our GEMM on NCHW and the direct conv on NCHW16c; `--direct` runs
//! every blocked conv on the direct kernel.
//!
//! `cargo run --release -p zoo-benches --bin blocked -- [--rounds N] [--iters N] [--batches 1,8] [--direct]
//! [--only TEXT]` (`--only`: the convs whose name contains `TEXT`)

use candle_core::{Device, Result, Tensor};
use resnet::layers::blocked::{from_blocked, to_blocked};
use resnet::layers::{Conv, ConvSpec, Layout, Lowering};
use zoo_benches::{interleaved_plan, max_abs_diff, median, time_ms, Args};

fn main() -> Result<()> {
    let columns = [
        "conv",
        "input",
        "batch",
        "NCHW ms",
        "NCHW16c ms",
        "NCHW16c / NCHW",
        "GFLOP/s NCHW, NCHW16c",
        "max diff",
    ];
    let args = Args::from_env();
    let direct = args.has("--direct");
    // `--only TEXT`: the cases whose name contains it.
    let only = args.opt("--only");
    let (rounds, iters, batches) = interleaved_plan(&args, &columns)?;
    let dev = Device::Cpu;
    // (name, in, out, kernel, stride, input side, residual): ResNet-50's block convs.
    let cases = [
        ("layer1 conv1", 256, 64, 1, 1, 56, false),
        ("layer1 conv2", 64, 64, 3, 1, 56, false),
        ("layer1 conv3", 64, 256, 1, 1, 56, true),
        ("layer2.0 conv2", 128, 128, 3, 2, 56, false),
        ("layer2.0 downsample", 256, 512, 1, 2, 56, false),
        ("layer2 conv1", 512, 128, 1, 1, 28, false),
        ("layer2 conv2", 128, 128, 3, 1, 28, false),
        ("layer2 conv3", 128, 512, 1, 1, 28, true),
        ("layer3.0 conv2", 256, 256, 3, 2, 28, false),
        ("layer3 conv1", 1024, 256, 1, 1, 14, false),
        ("layer3 conv2", 256, 256, 3, 1, 14, false),
        ("layer3 conv3", 256, 1024, 1, 1, 14, true),
        ("layer4.0 conv2", 512, 512, 3, 2, 14, false),
        ("layer4 conv1", 2048, 512, 1, 1, 7, false),
        ("layer4 conv2", 512, 512, 3, 1, 7, false),
        ("layer4 conv3", 512, 2048, 1, 1, 7, true),
    ];
    for &n in &batches {
        for &(name, c, o, k, stride, side, residual) in &cases {
            if only.as_deref().is_some_and(|text| !name.contains(text)) {
                continue;
            }
            let mut spec = ConvSpec::new(c, o, k, stride);
            spec.padding = k / 2;
            let weights: Vec<f32> = (0..o * spec.depth())
                .map(|i| ((i * 7919) % 101) as f32 / (101.0 * spec.depth() as f32).sqrt() - 0.05)
                .collect();
            let bias = Tensor::randn(0f32, 0.1, o, &dev)?;
            let nchw = Conv::new_inference_cpu(weights.clone(), Some(bias.clone()), spec)?;
            Layout::set_default(Some(Layout::Nchw16c));
            // Every conv on the blocked kernels: the same lowering as on NCHW (Winograd on the layout for the
            // stride-1 3x3s), or with `--direct` every one on the direct kernel.
            let lowering = if direct { Lowering::Gemm } else { Lowering::detect() };
            let blocked = Conv::new_inference_cpu_lowered(weights, Some(bias), spec, lowering);
            Layout::set_default(None);
            let blocked = blocked?;
            if blocked.layout() != Layout::Nchw16c {
                candle_core::bail!("{name}: the conv is not held for the blocked kernel");
            }
            let x = Tensor::randn(0f32, 1., (n, c, side, side), &dev)?.relu()?;
            let out = spec.output_size(side);
            let r = Tensor::randn(0f32, 1., (n, o, out, out), &dev)?;
            let (xb, rb) = (to_blocked(&x)?, to_blocked(&r)?);
            let res = |t| residual.then_some(t);
            let plain = || nchw.forward_fused(&x, res(&r), true);
            let on_blocks = || blocked.forward_fused(&xb, res(&rb), true);
            let diff = max_abs_diff(&plain()?, &from_blocked(&on_blocks()?)?)?;
            let mut times = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                for i in 0..2 {
                    let which = (i + round) % 2;
                    let run = || if which == 0 { plain() } else { on_blocks() };
                    times[which].push(time_ms(|| (0..iters).try_for_each(|_| run().map(drop)))? / iters as f64);
                }
            }
            let mut ratios: Vec<f64> = times[1].iter().zip(&times[0]).map(|(b, a)| b / a).collect();
            let ratio = median(&mut ratios);
            let [a, b] = times.each_mut().map(|t| median(t));
            let flops = 2.0 * (n * o * out * out * spec.depth()) as f64;
            println!(
                "| {name} | {c}x{side}x{side} | {n} | {a:.3} | {b:.3} | {ratio:.2}x | {:.0}, {:.0} | {diff:.1e} |",
                flops / a / 1e6,
                flops / b / 1e6
            );
        }
    }
    Ok(())
}
