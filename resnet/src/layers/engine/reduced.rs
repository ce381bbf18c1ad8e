//! Weights held in bf16 or f16 (half the memory of f32), in the panels the micro-kernels read; and int8
//! weights quantized per output channel (see `int8`).
//!
//! - **bf16** panels hold *pairs* of consecutive depth steps: `u32` number `kp * rows + i` of a panel is
//!   row `i`'s weights at steps `2 kp` (low half) and `2 kp + 1` (high half), the operand layout of
//!   AVX512-BF16's `vdpbf16ps`, which multiplies a pair of bf16 by a pair and adds both products to an f32
//!   lane ([`super::avx512_bf16`]). An odd depth ends in a zero. On a CPU without AVX512-BF16 each depth
//!   block of a panel is widened to f32 (exact: a bf16 is the top half of an f32) and the f32 kernel runs.
//! - **f16** panels are the f32 layout (`k * rows + i`) in f16, widened to f32 block by block (F16C's
//!   `vcvtph2ps`); products and sums stay f32 (AVX512-FP16's f16 arithmetic would sum in f16).
//!
//! Rounding from f32 is to nearest, ties to even, the rounding of PyTorch's `.to(torch.bfloat16)`.

/// The bf16 nearest to `x` (ties to even), as its 16 bits; NaN stays NaN.
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 a bf16 stands for (exact).
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Rearranges one group's OIHW rows, `oihw` = (`m`, `k`) row-major with `m` a multiple of `rows`, into
/// bf16 pair panels: panel `p` at `p * ceil(k / 2) * rows`.
pub(crate) fn bf16_panels(oihw: &[f32], k: usize, rows: usize) -> Vec<u32> {
    let m = oihw.len() / k.max(1);
    debug_assert!(m.is_multiple_of(rows));
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; m / rows * kp * rows];
    for (o, row) in oihw.chunks_exact(k).enumerate() {
        let panel = &mut out[(o / rows) * kp * rows..];
        for (step, pair) in row.chunks(2).enumerate() {
            let lo = u32::from(bf16_bits(pair[0]));
            let hi = pair.get(1).map_or(0, |&w| u32::from(bf16_bits(w)));
            panel[step * rows + o % rows] = lo | (hi << 16);
        }
    }
    out
}

/// The inverse of [`bf16_panels`]: OIHW f32 rows (the bf16 values, exactly).
pub(crate) fn bf16_unpanel(panels: &[u32], m: usize, k: usize, rows: usize) -> Vec<f32> {
    let kp = k.div_ceil(2);
    let mut out = vec![0f32; m * k];
    for (o, row) in out.chunks_exact_mut(k.max(1)).enumerate().take(m) {
        let panel = &panels[(o / rows) * kp * rows..];
        for (step, w) in row.iter_mut().enumerate() {
            let pair = panel[(step / 2) * rows + o % rows];
            *w = bf16_to_f32((pair >> (16 * (step % 2))) as u16);
        }
    }
    out
}

/// OIHW rows (`m` x `k`) in bf16, each padded with zeros to `kpad` steps: the AMX kernel's weights.
pub(crate) fn bf16_rows(oihw: &[f32], k: usize, kpad: usize) -> Vec<u16> {
    let m = oihw.len() / k.max(1);
    let mut out = vec![0u16; m * kpad];
    for (dst, row) in out.chunks_exact_mut(kpad.max(1)).zip(oihw.chunks_exact(k.max(1))) {
        for (d, &w) in dst.iter_mut().zip(row) {
            *d = bf16_bits(w);
        }
    }
    out
}

/// The inverse of [`bf16_rows`].
pub(crate) fn bf16_unrows(rows: &[u16], m: usize, k: usize, kpad: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * k];
    for (dst, row) in out.chunks_exact_mut(k.max(1)).zip(rows.chunks_exact(kpad.max(1))) {
        for (d, &w) in dst.iter_mut().zip(row) {
            *d = bf16_to_f32(w);
        }
    }
    out
}

/// Quantizes OIHW rows (`m` x `k`) per row: int8 rows padded with zeros to `kpad`, each row's scale
/// (`max |w| / 127`, 1 for an all-zero row) and the sum of its quantized weights.
pub(crate) fn quantize_int8(oihw: &[f32], k: usize, kpad: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let m = oihw.len() / k.max(1);
    let mut q = vec![0i8; m * kpad];
    let mut scales = Vec::with_capacity(m);
    let mut sums = Vec::with_capacity(m);
    for (dst, row) in q.chunks_exact_mut(kpad.max(1)).zip(oihw.chunks_exact(k.max(1))) {
        let max = row.iter().fold(0f32, |a, w| a.max(w.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut sum = 0i32;
        for (d, &w) in dst.iter_mut().zip(row) {
            let v = round_ties_even((w / s).clamp(-127.0, 127.0)) as i8;
            *d = v;
            sum += i32::from(v);
        }
        scales.push(s);
        sums.push(sum);
    }
    (q, scales, sums)
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2^22`: adding and subtracting 1.5 * 2^23
/// leaves no bits below the units, so the add rounds in the default mode (nearest, ties to even). What
/// `f32::round_ties_even` computes, without the library call it becomes on x86-64's baseline (it has no
/// rounding instruction before SSE4.1), which made loading an int8 ResNet-50 several times slower.
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Rearranges OIHW rows (`m` x `k`, `m` a multiple of `rows`) into f32-layout panels of f16 bits.
pub(crate) fn f16_panels(oihw: &[f32], k: usize, rows: usize) -> Vec<u16> {
    let m = oihw.len() / k.max(1);
    debug_assert!(m.is_multiple_of(rows));
    let mut out = vec![0u16; m * k];
    for (o, row) in oihw.chunks_exact(k).enumerate() {
        let panel = &mut out[(o / rows) * k * rows..];
        for (step, &w) in row.iter().enumerate() {
            panel[step * rows + o % rows] = half::f16::from_f32(w).to_bits();
        }
    }
    out
}

/// The inverse of [`f16_panels`].
pub(crate) fn f16_unpanel(panels: &[u16], m: usize, k: usize, rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * k];
    for (o, row) in out.chunks_exact_mut(k.max(1)).enumerate().take(m) {
        let panel = &panels[(o / rows) * k * rows..];
        for (step, w) in row.iter_mut().enumerate() {
            *w = half::f16::from_bits(panel[step * rows + o % rows]).to_f32();
        }
    }
    out
}

/// Widens steps `k0 .. k0 + kb` (`k0` even) of the bf16 pair panels of `panels` (`count` panels, each of
/// depth `k`) into f32 panels of depth `kb` in `dst`: what the f32 kernels read.
///
/// # Safety
/// `panels` covers `count` panels of `ceil(k / 2) * rows` pairs; `dst` holds `count * kb * rows` floats.
pub(crate) unsafe fn widen_bf16(
    panels: *const u32,
    k: usize,
    rows: usize,
    count: usize,
    (k0, kb): (usize, usize),
    dst: &mut [f32],
) {
    debug_assert!(k0.is_multiple_of(2) && dst.len() >= count * kb * rows);
    let kp = k.div_ceil(2);
    for p in 0..count {
        let src = std::slice::from_raw_parts(panels.add(p * kp * rows + k0 / 2 * rows), kb.div_ceil(2) * rows);
        let out = &mut dst[p * kb * rows..(p + 1) * kb * rows];
        for (step, pairs) in src.chunks_exact(rows).enumerate() {
            let (lo, hi) = out[2 * step * rows..].split_at_mut(rows);
            for (d, &v) in lo.iter_mut().zip(pairs) {
                *d = f32::from_bits(v << 16);
            }
            if 2 * step + 1 < kb {
                for (d, &v) in hi[..rows].iter_mut().zip(pairs) {
                    *d = f32::from_bits(v & 0xffff_0000);
                }
            }
        }
    }
}

/// Widens f16 bits to f32: F16C where the CPU has it, else `half`'s conversion.
pub(crate) fn widen_f16(src: &[u16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has F16C and AVX.
        return unsafe { widen_f16_f16c(src, dst) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_bits(s).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c,avx")]
unsafe fn widen_f16_f16c(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = src.len() / 8 * 8;
    for i in (0..n).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    for i in n..src.len() {
        dst[i] = half::f16::from_bits(src[i]).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_quantize_per_channel_with_sums() {
        let w = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0];
        let (q, s, sums) = super::quantize_int8(&w, 3, 64);
        assert_eq!(q.len(), 128);
        assert_eq!(&q[..3], &[64, -127, 32]);
        assert!(q[3..64].iter().all(|&v| v == 0) && q[64..].iter().all(|&v| v == 0));
        assert_eq!(s, vec![1.0 / 127.0, 1.0]);
        assert_eq!(sums, vec![64 - 127 + 32, 0]);
    }

    #[test]
    fn rounding_matches_the_library_over_the_int8_range() {
        // Every half-integer (the ties) and a dense sweep between them, both signs, past +-127.
        for i in -256_000..=256_000 {
            let x = i as f32 / 2000.0;
            assert_eq!(super::round_ties_even(x), x.round_ties_even(), "{x}");
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, -126.5, 127.49999, -0.0, 1e-30] {
            assert_eq!(super::round_ties_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn bf16_rounding_matches_half() {
        let mut x = 0x3f80_0000u32;
        for _ in 0..200_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = f32::from_bits(x);
            if v.is_nan() {
                continue;
            }
            assert_eq!(bf16_bits(v), half::bf16::from_f32(v).to_bits(), "{v:e}");
        }
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn panels_round_trip_and_widen() {
        for (m, k, rows) in [(8, 7, 8), (16, 10, 8), (12, 9, 6), (6, 1, 6)] {
            let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let bf: Vec<f32> = w.iter().map(|&v| bf16_to_f32(bf16_bits(v))).collect();
            let p = bf16_panels(&w, k, rows);
            assert_eq!(bf16_unpanel(&p, m, k, rows), bf);
            let kpad = k.div_ceil(32) * 32;
            let r = bf16_rows(&w, k, kpad);
            assert!(r.chunks_exact(kpad).all(|row| row[k..].iter().all(|&v| v == 0)));
            assert_eq!(bf16_unrows(&r, m, k, kpad), bf);
            let h = f16_panels(&w, k, rows);
            let hf: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
            assert_eq!(f16_unpanel(&h, m, k, rows), hf);
            // Widening block k0..k0+kb gives the f32 panel layout of the rounded weights.
            for (k0, kb) in [(0, k), (0, k.min(4)), (2.min(k - k % 2), k - 2.min(k - k % 2))] {
                if kb == 0 {
                    continue;
                }
                let count = m / rows;
                let mut dst = vec![f32::NAN; count * kb * rows];
                unsafe { widen_bf16(p.as_ptr(), k, rows, count, (k0, kb), &mut dst) };
                let mut fh = vec![f32::NAN; count * kb * rows];
                for pnl in 0..count {
                    let src = &h[pnl * k * rows + k0 * rows..pnl * k * rows + (k0 + kb) * rows];
                    widen_f16(src, &mut fh[pnl * kb * rows..(pnl + 1) * kb * rows]);
                }
                for o in 0..m {
                    for s in 0..kb {
                        let at = (o / rows) * kb * rows + s * rows + o % rows;
                        assert_eq!(dst[at], bf[o * k + k0 + s], "bf16 m{m} k{k} o{o} step {}", k0 + s);
                        assert_eq!(fh[at], hf[o * k + k0 + s], "f16 m{m} k{k} o{o} step {}", k0 + s);
                    }
                }
            }
        }
    }
}
