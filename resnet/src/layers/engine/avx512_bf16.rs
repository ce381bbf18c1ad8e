//! The AVX512-BF16 micro-kernel: the f32 kernel's 8 x 48 register tile ([`super::avx512`]), fed bf16.
//!
//! B is packed in pairs of depth steps: strip row `kp` holds, for each of its 48 columns, the bf16 of steps
//! `2 kp` and `2 kp + 1` side by side in one 32-bit lane; the weights are packed the same way at load
//! ([`super::reduced::bf16_panels`]). One `vdpbf16ps` then multiplies 16 columns' pairs by one output
//! channel's broadcast pair and adds both products to the f32 accumulators: twice the multiply-adds of an
//! f32 FMA per instruction, and half the bytes of B and of the weights to move. Sums are f32 throughout;
//! only the operands are rounded to bf16 (as PyTorch's CPU autocast does). The epilogue is the f32
//! kernel's.

use std::arch::x86_64::*;

use super::avx512::{MR, NARROW, NR};
use super::MicroTile;

/// True when the running CPU has the instructions of this kernel and of [`strips`].
pub(crate) fn is_supported() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512f")
}

/// Runs the tile; `t.k` counts pairs of depth steps, `t.a` and `t.b` point at pair panels and strips.
///
/// # Safety
/// [`is_supported`]; the tile's pointers cover what [`MicroTile`] describes, in pairs.
pub(crate) unsafe fn tile(t: &MicroTile) {
    match t.cols.div_ceil(16) {
        // As in the f32 kernel: a strip's last few columns across the output channels.
        1 if t.cols <= NARROW => match t.cols {
            1 => narrow::<1>(t),
            2 => narrow::<2>(t),
            3 => narrow::<3>(t),
            _ => narrow::<4>(t),
        },
        1 => kernel::<1>(t),
        2 => kernel::<2>(t),
        _ => kernel::<3>(t),
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const NV: usize>(t: &MicroTile) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let a = t.a.cast::<i32>();
    let mut b = t.b;
    let mut ahead = t.fetch.start();
    for kp in 0..t.k {
        _mm_prefetch::<_MM_HINT_T0>(t.next_a.wrapping_add(kp * MR).cast());
        ahead.fetch();
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_load_ps(b.add(16 * v));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let w = bh(_mm512_castsi512_ps(_mm512_set1_epi32(*a.add(kp * MR + i))));
            for (acc, &b) in row.iter_mut().zip(&bv) {
                *acc = _mm512_dpbf16_ps(*acc, w, bh(b));
            }
        }
        b = b.add(NR);
    }
    while ahead.count > 0 {
        ahead.fetch();
    }
    t.fetch.finish(&ahead);
    super::avx512::store::<NV>(t, &acc);
}

/// A tile of at most [`NARROW`] columns, vectorised over its `MR` output channels (see the f32 kernel's
/// `narrow`): per pair of depth steps, one 8-lane `vdpbf16ps` of the panel's `MR` weight pairs by the
/// column's broadcast pair.
#[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx2,fma")]
unsafe fn narrow<const C: usize>(t: &MicroTile) {
    super::avx512::narrow_with::<C>(t, |acc, a, b| {
        // SAFETY: both are 256 bits of plain data.
        let bh = |x: __m256| unsafe { std::mem::transmute::<__m256, __m256bh>(x) };
        let pair = _mm256_castsi256_ps(_mm256_set1_epi32(*b.cast::<i32>()));
        _mm256_dpbf16_ps(acc, bh(_mm256_loadu_ps(a)), bh(pair))
    });
}

/// 32 bf16 in a register, seen as what `vdpbf16ps` takes.
#[inline(always)]
fn bh(x: __m512) -> __m512bh {
    // SAFETY: both are 512 bits of plain data.
    unsafe { std::mem::transmute::<__m512, __m512bh>(x) }
}

/// Packs `k` rows x `n` columns of f32 `b` (row stride `ldb`) into `ceil(n / nr)` strips of bf16 pairs,
/// `nr` (a multiple of 16) columns wide and `pairs` (at least `ceil(k / 2)`) pair rows deep: strip `s` at
/// `s * pairs * nr` lanes, lane `kp * nr + j` = (row `2 kp`, row `2 kp + 1`) of column `s * nr + j`, zero
/// past the block's width and below its last row. The AMX kernel reads 16 x 16 tiles of these strips.
///
/// # Safety
/// [`is_supported`]; `b` covers the block; `out` holds `ceil(n / nr) * pairs * nr` lanes, 64-byte aligned.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn strips(b: *const f32, ldb: usize, k: usize, n: usize, nr: usize, pairs: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    debug_assert!(pairs >= kp && nr.is_multiple_of(16) && out.len() >= n.div_ceil(nr) * pairs * nr);
    for (s, j0) in (0..n).step_by(nr).enumerate() {
        let w = nr.min(n - j0);
        let strip = out.as_mut_ptr().add(s * pairs * nr);
        for p in 0..kp {
            let lo = b.add(2 * p * ldb + j0);
            let hi = (2 * p + 1 < k).then(|| b.add((2 * p + 1) * ldb + j0));
            for v in 0..nr / 16 {
                let cols = w.saturating_sub(16 * v).min(16);
                let m: __mmask16 = if cols >= 16 { 0xffff } else { (1u16 << cols) - 1 };
                let x0 = _mm512_maskz_loadu_ps(m, lo.add(16 * v));
                let x1 = match hi {
                    Some(h) => _mm512_maskz_loadu_ps(m, h.add(16 * v)),
                    None => _mm512_setzero_ps(),
                };
                store_pair(x0, x1, strip.add(p * nr + 16 * v));
            }
        }
        std::ptr::write_bytes(strip.add(kp * nr), 0, (pairs - kp) * nr);
    }
}

/// Stores 16 columns of two depth rows as bf16 pairs: lane `j` at `dst` = (`lo[j]`, `hi[j]`), low half first.
///
/// # Safety
/// [`is_supported`]; `dst` is 64-byte aligned and holds 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn store_pair(lo: __m512, hi: __m512, dst: *mut u32) {
    // After the conversion the low 16 lanes hold `lo`'s bf16 and the high 16 `hi`'s: interleave them.
    let idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
        16, 0,
    );
    let pair = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
    _mm512_store_si512(dst.cast(), _mm512_permutexvar_epi16(idx, pair));
}

#[cfg(test)]
mod tests {
    use super::super::reduced::bf16_bits;

    /// The bf16 narrow kernel gives what the 16-lane bf16 kernel gives on the same narrow tiles (to f32
    /// rounding; see the f32 kernel's test, whose checks it runs on bf16 pairs).
    #[test]
    fn narrow_tiles_match_the_sixteen_lane_kernel() {
        if !super::is_supported() {
            return;
        }
        let pair = |(x, y): (f32, f32)| f32::from_bits(u32::from(bf16_bits(x)) | u32::from(bf16_bits(y)) << 16);
        let wide = |t: &super::MicroTile| unsafe { super::kernel::<1>(t) };
        let tile = |t: &super::MicroTile| unsafe { super::tile(t) };
        crate::layers::engine::avx512::tests::check_narrow(wide, tile, pair, false);
    }

    #[test]
    fn strips_pair_rows_column_by_column() {
        if !super::is_supported() {
            return;
        }
        for (k, n, ldb) in [(5usize, 50usize, 53usize), (4, 48, 48), (1, 7, 9), (8, 100, 101)] {
            let b: Vec<f32> = (0..k * ldb).map(|i| (i as f32 * 0.731).cos() * 3.0).collect();
            let kp = k.div_ceil(2);
            let strips = n.div_ceil(super::NR);
            let pairs = kp + 1;
            let mut out = vec![0x5555_5555u32; strips * pairs * super::NR + 16];
            let start = out.as_ptr().align_offset(64);
            unsafe { super::strips(b.as_ptr(), ldb, k, n, super::NR, pairs, &mut out[start..]) };
            let out = &out[start..];
            for s in 0..strips {
                assert!(out[(s * pairs + kp) * super::NR..(s * pairs + pairs) * super::NR]
                    .iter()
                    .all(|&v| v == 0));
                for p in 0..kp {
                    for j in 0..super::NR {
                        let col = s * super::NR + j;
                        let want = |r: usize| match r < k && col < n {
                            true => u32::from(bf16_bits(b[r * ldb + col])),
                            false => 0,
                        };
                        let got = out[(s * pairs + p) * super::NR + j];
                        assert_eq!(
                            got,
                            want(2 * p) | (want(2 * p + 1) << 16),
                            "k{k} n{n} strip {s} pair {p} col {j}"
                        );
                    }
                }
            }
        }
    }
}
