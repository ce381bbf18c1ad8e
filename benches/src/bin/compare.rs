//! Quick side-by-side numbers: ms/img for our ResNets vs candle-transformers', interleaved in one run so
//! that machine noise hits both alike.
//!
//! `cargo run --release -p zoo-benches --bin compare -- [--iters N] [--batches 1,8] [--archs resnet18,resnet50] [--convs]
//! [--stock-bin PATH]`
//!
//! `--convs` times the hottest single convolutions instead, with each one's share of the FMA peak of the
//! threads they run on (`RAYON_NUM_THREADS=1`: one core, the conv's operands in its caches).
//!
//! `--stock-bin` names the binary of `benches/stock-candle` (candle-transformers built without zoo's AVX-512
//! GEMM feature, as crates.io users get it); it is run right after each of our measurements, for an extra
//! column.

use std::process::Command;

use candle_core::{Device, Module, Result};
use zoo_benches::{conv_cases, grouped_case, input, max_abs_diff, median, pair, time_ms, Arch, Args, ConvBench};

fn main() -> Result<()> {
    let args = Args::from_env();
    let iters = args.number("--iters", 5)?;
    let batches = args.numbers("--batches", &[1, 8])?;
    let archs: Vec<Arch> = match args.opt("--archs") {
        None => Arch::ALL.to_vec(),
        Some(s) => Arch::ALL
            .iter()
            .copied()
            .filter(|a| s.split(',').any(|n| n == a.name()))
            .collect(),
    };
    let device = Device::Cpu;
    // For profiling: time only our network.
    let ours_only = args.has("--ours-only");

    if args.has("--convs") {
        let mut cases = conv_cases();
        cases.push(grouped_case());
        // The yardstick for the last column: the FMA peak of the threads the convs run on (rayon's pool:
        // `RAYON_NUM_THREADS`, else every core; `RAYON_NUM_THREADS=1` times the kernel alone, with a conv's
        // operands in one core's caches).
        let threads = candle_core::utils::get_num_threads();
        let peak = resnet::layers::engine::fma_peak(threads, 300).unwrap_or(f64::NAN);
        println!("FMA peak of {threads} threads: {peak:.1} GFLOP/s");
        println!(
            "{:<28} {:>5} {:>10} {:>10} {:>7} {:>9} {:>7}",
            "conv (batch 1 unless noted)", "batch", "ours ms", "candle ms", "ratio", "GFLOP/s", "% peak"
        );
        for &batch in &batches {
            for case in &cases {
                let b = ConvBench::new(*case, batch, &device)?;
                let diff = max_abs_diff(&b.run_ours()?, &b.run_candle()?)?;
                assert!(diff < 1e-3, "{}: ours and candle differ by {diff}", case.name);
                let (mut o, mut c) = (vec![], vec![]);
                for _ in 0..iters.max(3) {
                    o.push(time_ms(|| b.run_ours())?);
                    c.push(time_ms(|| b.run_candle())?);
                }
                let (o, c) = (median(&mut o), median(&mut c));
                let gflops = case.flops() * batch as f64 / (o * 1e-3) / 1e9;
                println!(
                    "{:<28} {:>5} {:>10.3} {:>10.3} {:>6.2}x {:>9.1} {:>6.1}%",
                    case.name,
                    batch,
                    o,
                    c,
                    c / o,
                    gflops,
                    100.0 * gflops / peak
                );
            }
        }
        return Ok(());
    }

    let stock_bin = args.opt("--stock-bin");
    println!(
        "{:<9} {:>5} {:>12} {:>12} {:>8} {:>10} {:>14} {:>8}",
        "model", "batch", "ours ms/img", "c-t ms/img", "speedup", "max|diff|", "stock c-t ms", "speedup"
    );
    for &arch in &archs {
        let p = pair(arch, &device)?;
        for &batch in &batches {
            let x = input(batch, &device)?;
            // Warm-up, and a check that both compute the same function.
            let diff = max_abs_diff(&p.ours.forward(&x)?, &p.theirs.forward(&x)?)?;
            let (mut o, mut t) = (vec![], vec![]);
            for _ in 0..iters {
                o.push(time_ms(|| p.ours.forward(&x))? / batch as f64);
                if !ours_only {
                    t.push(time_ms(|| p.theirs.forward(&x))? / batch as f64);
                }
            }
            let (o, t) = (median(&mut o), if ours_only { f64::NAN } else { median(&mut t) });
            let stock = match &stock_bin {
                Some(bin) => stock_ms(bin, arch, batch, iters)?,
                None => f64::NAN,
            };
            println!(
                "{:<9} {:>5} {:>12.1} {:>12.1} {:>7.2}x {:>10.2e} {:>14.1} {:>7.2}x",
                arch.name(),
                batch,
                o,
                t,
                t / o,
                diff,
                stock,
                stock / o
            );
        }
    }
    Ok(())
}

/// ms/img of stock candle-transformers, from the `benches/stock-candle` binary at `bin`.
fn stock_ms(bin: &str, arch: Arch, batch: usize, iters: usize) -> Result<f64> {
    let out = Command::new(bin)
        .args([
            "--archs",
            arch.name(),
            "--batches",
            &batch.to_string(),
            "--iters",
            &iters.to_string(),
        ])
        .output()
        .map_err(|e| candle_core::Error::Msg(format!("cannot run {bin}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| candle_core::Error::Msg(format!("{bin} printed no timing: {text}")))
}
