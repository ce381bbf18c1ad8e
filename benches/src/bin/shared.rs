//! A residual block's strided first conv and its 1x1 projection shortcut, run one by one against run on one packed
//! input ([`Conv::forward_shared`]), per block: ResNet-18/34's stride-2 blocks (layer2.0, layer3.0, layer4.0) at
//! batch 1 and 8, the same weights both ways, timed interleaved in one process (the order swapped every round) so
//! that machine noise hits them alike, with the largest difference between the two ways' outputs (0: the same
//! arithmetic).
//!
//! `cargo run --release -p zoo-benches --bin shared -- [--rounds N] [--iters N] [--batches 1,8]`

use candle_core::{Device, Result, Tensor};
use resnet::layers::{Conv, ConvSpec};
use zoo_benches::{interleaved_plan, max_abs_diff, median, time_ms, Args};

fn main() -> Result<()> {
    let columns = [
        "block",
        "input",
        "batch",
        "one by one ms",
        "shared ms",
        "shared / one by one",
        "GFLOP/s one by one, shared",
        "max diff",
    ];
    let (rounds, iters, batches) = interleaved_plan(&Args::from_env(), &columns)?;
    let dev = Device::Cpu;
    for (name, c, hw) in [("layer2.0", 64, 56), ("layer3.0", 128, 28), ("layer4.0", 256, 14)] {
        for &n in &batches {
            let o = 2 * c;
            let weights = |len: usize, seed: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| ((i * 7919 + seed) % 101) as f32 / 1010.0 - 0.05)
                    .collect()
            };
            let mut spec = ConvSpec::new(c, o, 3, 2);
            spec.padding = 1;
            let proj_spec = ConvSpec::new(c, o, 1, 2);
            let bias = Tensor::randn(0f32, 0.1, o, &dev)?;
            let conv = Conv::new_inference_cpu(weights(o * c * 9, 1), Some(bias.clone()), spec)?;
            let proj = Conv::new_inference_cpu(weights(o * c, 2), Some(bias), proj_spec)?;
            let x = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?.relu()?;
            let alone = || -> Result<(Tensor, Tensor)> {
                Ok((
                    conv.forward_fused(&x, None, true)?,
                    proj.forward_fused(&x, None, false)?,
                ))
            };
            let shared = || -> Result<(Tensor, Tensor)> {
                conv.forward_shared(&x, &proj, true)?
                    .ok_or_else(|| candle_core::Error::Msg(format!("{name} b{n}: the convs do not share")))
            };
            let (a, s) = (alone()?, shared()?);
            let diff = max_abs_diff(&a.0, &s.0)?.max(max_abs_diff(&a.1, &s.1)?);
            let mut times = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                for i in 0..2 {
                    let k = (i + round) % 2;
                    let run = |k: usize| if k == 0 { alone() } else { shared() };
                    times[k].push(time_ms(|| (0..iters).try_for_each(|_| run(k).map(drop)))? / iters as f64);
                }
            }
            let mut ratios: Vec<f64> = times[1].iter().zip(&times[0]).map(|(s, a)| s / a).collect();
            let ratio = median(&mut ratios);
            let [one, both] = times.each_mut().map(|t| median(t));
            let oh = hw / 2;
            let flops = 2.0 * (n * o * oh * oh * c * 10) as f64;
            println!(
                "| {name} | {c}x{hw}x{hw} | {n} | {one:.3} | {both:.3} | {ratio:.2}x | {:.0}, {:.0} | {diff:.1e} |",
                flops / one / 1e6,
                flops / both / 1e6
            );
        }
    }
    Ok(())
}
