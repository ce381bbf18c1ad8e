//! The machine's f32 FMA peak of the moment: the yardstick for a convolution's GFLOP/s. Each thread runs 12
//! independent chains of fused multiply-adds on registers (no memory traffic), so only the FMA units
//! limit it; 12 chains cover two FMA ports of 4-6 cycles' latency. The same chains of AVX512-BF16 dot
//! products tell whether `vdpbf16ps` outruns the FMA on this CPU ([`bf16_dot_speedup`]).

use std::time::Instant;

const CHAINS: usize = 12;

/// f32 GFLOP/s of `threads` threads each running FMA chains for about `millis` ms, with the widest FMA
/// this CPU has (AVX-512F, else AVX2+FMA); `None` on CPUs with neither (whose engine is the portable one).
pub fn fma_peak(threads: usize, millis: u64) -> Option<f64> {
    let (lanes, kernel) = chains()?;
    // Calibrate one thread's rounds, then time all threads together.
    let rounds = rounds_for(kernel, millis, 100_000);
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(move || kernel(rounds))).collect();
        handles.into_iter().for_each(|h| {
            std::hint::black_box(h.join().unwrap_or(0.0));
        });
    });
    let flops = (threads.max(1) * rounds * CHAINS * lanes * 2) as f64;
    Some(flops / start.elapsed().as_secs_f64() / 1e9)
}

/// Multiply-adds per second of one thread's `vdpbf16ps` chains (32 per instruction) over those of its
/// AVX-512 FMA chains (16 per instruction), each timed for about `millis` ms: above 1 the bf16 dot products
/// do more work per second than f32 FMAs (AMD Zen 4: ~2; Intel Sapphire Rapids, where they issue at half
/// the FMA's rate: ~1). `None` without AVX512-BF16.
pub fn bf16_dot_speedup(millis: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if super::avx512_bf16::is_supported() {
        let rate = |kernel: Chains, macs: usize| {
            let rounds = rounds_for(kernel, millis, 20_000);
            let start = Instant::now();
            std::hint::black_box(kernel(rounds));
            (rounds * CHAINS * macs) as f64 / start.elapsed().as_secs_f64()
        };
        // SAFETY: the CPU has AVX-512F and AVX512-BF16.
        let dot = rate(|n| unsafe { x86::avx512_bf16(n) }, 32);
        // SAFETY: as above.
        let fma = rate(|n| unsafe { x86::avx512(n) }, 16);
        return Some(dot / fma);
    }
    let _ = millis;
    None
}

type Chains = fn(usize) -> f32;

/// How many rounds of `kernel` one thread runs in about `millis` ms, from timing `probe` rounds (at least that).
fn rounds_for(kernel: Chains, millis: u64, probe: usize) -> usize {
    let start = Instant::now();
    std::hint::black_box(kernel(probe));
    let per_ms = probe as f64 / (start.elapsed().as_secs_f64() * 1e3).max(1e-3);
    ((per_ms * millis as f64) as usize).max(probe)
}

fn chains() -> Option<(usize, Chains)> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return Some((16, |n| unsafe { x86::avx512(n) }));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return Some((8, |n| unsafe { x86::avx2(n) }));
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::CHAINS;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(rounds: usize) -> f32 {
        // Values the compiler cannot see, or it would fold the loop away.
        let (m, c) = (_mm512_set1_ps(black_box(0.999_9)), _mm512_set1_ps(black_box(1e-4)));
        let mut acc = [_mm512_set1_ps(black_box(1.0)); CHAINS];
        for _ in 0..rounds {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn avx512_bf16(rounds: usize) -> f32 {
        let pairs = |x: __m512| std::mem::transmute::<__m512, __m512bh>(x);
        let (a, b) = (
            pairs(_mm512_set1_ps(black_box(1e-3))),
            pairs(_mm512_set1_ps(black_box(2e-3))),
        );
        let mut acc = [_mm512_set1_ps(black_box(1.0)); CHAINS];
        for _ in 0..rounds {
            for c in acc.iter_mut() {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(rounds: usize) -> f32 {
        let (m, c) = (_mm256_set1_ps(black_box(0.999_9)), _mm256_set1_ps(black_box(1e-4)));
        let mut acc = [_mm256_set1_ps(black_box(1.0)); CHAINS];
        for _ in 0..rounds {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut lanes = [0f32; 8];
        let mut sum = 0.0;
        for a in acc {
            _mm256_storeu_ps(lanes.as_mut_ptr(), a);
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
}
