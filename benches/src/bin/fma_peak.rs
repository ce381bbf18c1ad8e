//! The machine's f32 FMA peak, the yardstick for the GFLOP/s that `zoo bench --layers` and `compare --convs`
//! report: each thread runs 12 independent chains of AVX-512 (or AVX2) fused multiply-adds on registers,
//! with no memory traffic, so nothing but the FMA units limits it.
//!
//! `cargo run --release -p zoo-benches --bin fma_peak [-- THREADS]` (default: all cores).

use std::time::Instant;

/// FMAs per chain per thread.
const ROUNDS: usize = 20_000_000;
const CHAINS: usize = 12;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|t| t.parse().expect("THREADS must be a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let Some((name, lanes, kernel)) = kernel() else {
        eprintln!("this CPU has neither AVX-512F nor AVX2+FMA: no kernel to measure");
        return;
    };
    for attempt in 0..3 {
        let start = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(kernel)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let flops = (threads * ROUNDS * CHAINS * lanes * 2) as f64;
        let gflops = flops / start.elapsed().as_secs_f64() / 1e9;
        println!("run {attempt}: {threads} threads, {name}: {gflops:.1} GFLOP/s (checksum {sink:.3})");
    }
}

type Kernel = fn() -> f32;

fn kernel() -> Option<(&'static str, usize, Kernel)> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Some(("AVX-512 FMA", 16, || unsafe { x86::chains_avx512() }));
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(("AVX2 FMA", 8, || unsafe { x86::chains_avx2() }));
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CHAINS, ROUNDS};
    use std::arch::x86_64::*;
    use std::hint::black_box;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains_avx512() -> f32 {
        // black_box: the compiler must not see the values, or it folds the loop away.
        let (m, c) = (_mm512_set1_ps(black_box(0.999_9)), _mm512_set1_ps(black_box(1e-4)));
        let mut acc = [_mm512_set1_ps(black_box(1.0)); CHAINS];
        for _ in 0..ROUNDS {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains_avx2() -> f32 {
        let (m, c) = (_mm256_set1_ps(black_box(0.999_9)), _mm256_set1_ps(black_box(1e-4)));
        let mut acc = [_mm256_set1_ps(black_box(1.0)); CHAINS];
        for _ in 0..ROUNDS {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut sum = 0.0;
        for a in acc {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), a);
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
}
