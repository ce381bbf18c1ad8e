//! The AVX2 + FMA micro-kernel: a 6 x 16 tile of C in 12 ymm registers (of 16). Each step of the depth
//! loads one packed row of B (two vectors) and broadcasts each of the 6 output channels' weights from the
//! packed weight panel: 6 + 2 loads for 12 FMAs of 8 lanes. The partial last vector is stored through a
//! lane mask.

use std::arch::x86_64::*;

use super::MicroTile;

/// Columns (pixels) per packed strip: two 8-float vectors.
pub(crate) const NR: usize = 16;

/// Output channels per register tile (rows of a packed weight panel).
pub(crate) const MR: usize = 6;

/// Runs the tile, with as many vectors as its columns need.
///
/// # Safety
/// The CPU has AVX2 and FMA; the tile's pointers cover what [`MicroTile`] describes.
pub(crate) unsafe fn tile(t: &MicroTile) {
    match t.cols.div_ceil(8) {
        1 => kernel::<1>(t),
        _ => kernel::<2>(t),
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const NV: usize>(t: &MicroTile) {
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    let mut b = t.b;
    let mut ahead = t.fetch.start();
    for kk in 0..t.k {
        ahead.fetch();
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm256_load_ps(b.add(8 * v));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let w = _mm256_set1_ps(*t.a.add(kk * MR + i));
            for (a, &b) in row.iter_mut().zip(&bv) {
                *a = _mm256_fmadd_ps(w, b, *a);
            }
        }
        b = b.add(NR);
    }
    while ahead.count > 0 {
        ahead.fetch();
    }
    t.fetch.finish(&ahead);
    let tail = (t.cols - 8 * (NV - 1)) as i32;
    // Lane l is kept when l < tail: the sign bit of (l - tail).
    let last = _mm256_sub_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(tail.min(8)),
    );
    // As in the AVX-512 kernel: constant row indices keep the accumulators in registers.
    let all = _mm256_set1_epi32(-1);
    macro_rules! rows {
        ($($i:literal)*) => {$(
            if $i < t.rows {
                let c = t.c.add($i * t.ldc);
                for v in 0..NV {
                    let m = if v + 1 == NV { last } else { all };
                    let mut x = acc[$i][v];
                    if !t.first {
                        x = _mm256_add_ps(x, _mm256_maskload_ps(c.add(8 * v), m));
                    }
                    if let Some(e) = t.epilogue {
                        x = _mm256_add_ps(x, _mm256_set1_ps(*e.bias.add($i)));
                        if let Some((r, ld)) = e.residual {
                            x = _mm256_add_ps(x, _mm256_maskload_ps(r.add($i * ld + 8 * v), m));
                        }
                        if e.relu {
                            x = _mm256_max_ps(x, _mm256_setzero_ps());
                        }
                    }
                    _mm256_maskstore_ps(c.add(8 * v), m, x);
                }
            }
        )*};
    }
    rows!(0 1 2 3 4 5);
}
