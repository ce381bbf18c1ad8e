//! The machine's f32 FMA peak, the yardstick for the GFLOP/s that `zoo bench --layers` and `compare --convs`
//! report: `resnet::layers::engine::fma_peak`, each thread running 12 independent chains of AVX-512 (or
//! AVX2) fused multiply-adds on registers, with no memory traffic, so nothing but the FMA units limits it.
//!
//! `cargo run --release -p zoo-benches --bin fma_peak [-- THREADS]` (default: all cores).

use std::process::ExitCode;

fn main() -> ExitCode {
    let threads = match std::env::args().nth(1).map(|t| t.parse::<usize>()) {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: fma_peak [THREADS] (a positive number)");
            return ExitCode::from(2);
        }
    };
    for attempt in 0..3 {
        match resnet::layers::engine::fma_peak(threads, 1000) {
            Some(g) => println!("run {attempt}: {threads} threads: {g:.1} GFLOP/s"),
            None => {
                eprintln!("this CPU has neither AVX-512F nor AVX2+FMA: no kernel to measure");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
