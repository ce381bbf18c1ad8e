//! Packing B for the micro-kernels: `k` rows of a row-major block become strips `nr` columns wide, each
//! strip `k` consecutive rows of `nr` floats, so a kernel walks its strip with one pointer and aligned
//! loads. Columns past the block's width are zero.

/// Packs `k` rows x `n` columns of `b` (row stride `ldb`) into `ceil(n / nr)` strips of `k * nr` floats
/// at the start of `panel`.
///
/// # Safety
/// `b` covers the block; `panel` holds `ceil(n / nr) * k * nr` floats.
pub(crate) unsafe fn strips(b: *const f32, ldb: usize, k: usize, n: usize, nr: usize, panel: &mut [f32]) {
    debug_assert!(panel.len() >= n.div_ceil(nr) * k * nr);
    for (s, j0) in (0..n).step_by(nr).enumerate() {
        let w = nr.min(n - j0);
        let strip = &mut panel[s * k * nr..(s + 1) * k * nr];
        for (r, dst) in strip.chunks_exact_mut(nr).enumerate() {
            let src = std::slice::from_raw_parts(b.add(r * ldb + j0), w);
            dst[..w].copy_from_slice(src);
            dst[w..].fill(0.0);
        }
    }
}

/// [`strips`] with AVX-512 loads and stores (`nr` a multiple of 16, `panel` 64-byte aligned): a strip row is a
/// few vector moves rather than a `memcpy` and a `memset` call.
///
/// # Safety
/// AVX-512F; as [`strips`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn strips_avx512(b: *const f32, ldb: usize, k: usize, n: usize, nr: usize, panel: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(nr.is_multiple_of(16) && panel.len() >= n.div_ceil(nr) * k * nr);
    debug_assert!(panel.as_ptr().cast::<u8>().align_offset(64) == 0);
    for (s, j0) in (0..n).step_by(nr).enumerate() {
        let w = nr.min(n - j0);
        let strip = panel.as_mut_ptr().add(s * k * nr);
        if w == nr && nr == 48 {
            // AVX-512's strip, three vectors a row, written out: as a loop over `nr / 16` vectors the compiler
            // turns each row's copy into a call to `memcpy`.
            for r in 0..k {
                let (src, dst) = (b.add(r * ldb + j0), strip.add(r * nr));
                let row = [
                    _mm512_loadu_ps(src),
                    _mm512_loadu_ps(src.add(16)),
                    _mm512_loadu_ps(src.add(32)),
                ];
                for (v, x) in row.into_iter().enumerate() {
                    _mm512_store_ps(dst.add(16 * v), x);
                }
            }
            continue;
        }
        if w == nr {
            for r in 0..k {
                let (src, dst) = (b.add(r * ldb + j0), strip.add(r * nr));
                for v in 0..nr / 16 {
                    _mm512_store_ps(dst.add(16 * v), _mm512_loadu_ps(src.add(16 * v)));
                }
            }
            continue;
        }
        // The partial last strip: masked loads, zero past `w`.
        for r in 0..k {
            let (src, dst) = (b.add(r * ldb + j0), strip.add(r * nr));
            for v in 0..nr / 16 {
                let cols = w.saturating_sub(16 * v).min(16);
                let m: __mmask16 = if cols >= 16 { 0xffff } else { (1u16 << cols) - 1 };
                _mm512_store_ps(dst.add(16 * v), _mm512_maskz_loadu_ps(m, src.add(16 * v)));
            }
        }
    }
}

/// Packs `m` rows x `k` columns of `a` (row stride `lda`) into `ceil(m / mr)` panels of `k * mr` floats:
/// panel `p` holds rows `p * mr ..`, step `kk` of row `i` at `kk * mr + i`, zero past row `m`.
///
/// # Safety
/// `a` covers the block; `panel` holds `ceil(m / mr) * k * mr` floats.
pub(crate) unsafe fn panels(a: *const f32, lda: usize, m: usize, k: usize, mr: usize, panel: &mut [f32]) {
    debug_assert!(panel.len() >= m.div_ceil(mr) * k * mr);
    for (p, i0) in (0..m).step_by(mr).enumerate() {
        let dst = &mut panel[p * k * mr..(p + 1) * k * mr];
        let rows = mr.min(m - i0);
        for i in 0..mr {
            if i < rows {
                let src = std::slice::from_raw_parts(a.add((i0 + i) * lda), k);
                for (kk, &v) in src.iter().enumerate() {
                    dst[kk * mr + i] = v;
                }
            } else {
                for kk in 0..k {
                    dst[kk * mr + i] = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The AVX-512 packer gives what the portable one gives, full and partial strips, both strip widths.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_strips_match_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for (k, n, ldb, nr) in [
            (5usize, 50usize, 53usize, 48usize),
            (3, 96, 96, 48),
            (4, 7, 9, 16),
            (2, 33, 40, 32),
        ] {
            let b: Vec<f32> = (0..k * ldb + 16).map(|v| v as f32 + 0.5).collect();
            let len = n.div_ceil(nr) * k * nr;
            let (mut want, mut got) = (vec![f32::NAN; len + 16], vec![f32::NAN; len + 16]);
            let (a, g) = (want.as_ptr().align_offset(64), got.as_ptr().align_offset(64));
            unsafe {
                super::strips(b.as_ptr(), ldb, k, n, nr, &mut want[a..]);
                super::strips_avx512(b.as_ptr(), ldb, k, n, nr, &mut got[g..]);
            }
            assert_eq!(&got[g..g + len], &want[a..a + len], "k{k} n{n} nr{nr}");
        }
    }

    #[test]
    fn panels_interleave_rows_with_zero_tails() {
        let (m, k, lda, mr) = (5, 3, 4, 4);
        let a: Vec<f32> = (0..m * lda).map(|v| v as f32 + 1.0).collect();
        let mut panel = vec![f32::NAN; 2 * k * mr];
        unsafe { super::panels(a.as_ptr(), lda, m, k, mr, &mut panel) };
        for row in 0..8 {
            for kk in 0..k {
                let want = if row < m { a[row * lda + kk] } else { 0.0 };
                assert_eq!(
                    panel[(row / mr) * k * mr + kk * mr + row % mr],
                    want,
                    "row {row} step {kk}"
                );
            }
        }
    }

    #[test]
    fn strips_hold_the_block_column_by_column_with_zero_tails() {
        let (k, n, ldb, nr) = (3, 7, 9, 4);
        let b: Vec<f32> = (0..k * ldb).map(|v| v as f32).collect();
        let mut panel = vec![f32::NAN; 2 * k * nr];
        unsafe { super::strips(b.as_ptr(), ldb, k, n, nr, &mut panel) };
        for r in 0..k {
            for j in 0..8 {
                let (s, jj) = (j / nr, j % nr);
                let want = if j < n { b[r * ldb + j] } else { 0.0 };
                assert_eq!(panel[s * k * nr + r * nr + jj], want, "row {r} col {j}");
            }
        }
    }
}
