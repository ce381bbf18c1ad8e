//! The AVX-512F micro-kernels: a tile of C of `MR` output channels x `16 * NV` pixels held in registers.
//! Each step of the depth loads one packed row of B (`NV` vectors) and broadcasts each of the 8 output
//! channels' weights from the packed weight panel: a full strip runs 8 x 48 (24 accumulators; 8 + 3 loads
//! for 24 FMAs of 16 lanes), a strip's narrower remainder 8 x 32 or 8 x 16. The partial last vector of a
//! strip and the rows past the tile's end are masked at the store.

use std::arch::x86_64::*;

use super::MicroTile;

/// Columns (pixels) per packed strip: three 16-float vectors.
pub(crate) const NR: usize = 48;

/// Output channels per register tile (rows of a packed weight panel).
pub(crate) const MR: usize = 8;

/// Runs the tile, with as many vectors as its columns need.
///
/// # Safety
/// The CPU has AVX-512F; the tile's pointers cover what [`MicroTile`] describes.
pub(crate) unsafe fn tile(t: &MicroTile) {
    match t.cols.div_ceil(16) {
        1 => kernel::<1>(t),
        2 => kernel::<2>(t),
        _ => kernel::<3>(t),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel<const NV: usize>(t: &MicroTile) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut b = t.b;
    for kk in 0..t.k {
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_load_ps(b.add(16 * v));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*t.a.add(kk * MR + i));
            for (a, &b) in row.iter_mut().zip(&bv) {
                *a = _mm512_fmadd_ps(w, b, *a);
            }
        }
        b = b.add(NR);
    }
    store::<NV>(t, &acc);
}

/// Stores a finished register tile: adds what C holds (after the first depth block), then on the last
/// block the bias, the residual and the ReLU, masking the partial last vector and the rows past `t.rows`.
/// Shared with the bf16 kernel.
///
/// # Safety
/// AVX-512F; the tile's pointers cover what [`MicroTile`] describes.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store<const NV: usize>(t: &MicroTile, acc: &[[__m512; NV]; MR]) {
    let tail = t.cols - 16 * (NV - 1);
    let last: __mmask16 = if tail >= 16 { 0xffff } else { (1u16 << tail) - 1 };
    // One row at a time, with constant row indices (a macro, not a loop over a runtime row count, which
    // would keep the accumulators in memory throughout the main loop).
    macro_rules! rows {
        ($($i:literal)*) => {$(
            if $i < t.rows {
                let c = t.c.add($i * t.ldc);
                for v in 0..NV {
                    let m = if v + 1 == NV { last } else { 0xffff };
                    let mut x = acc[$i][v];
                    if !t.first {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, c.add(16 * v)));
                    }
                    if let Some(e) = t.epilogue {
                        x = _mm512_add_ps(x, _mm512_set1_ps(*e.bias.add($i)));
                        if let Some((r, ld)) = e.residual {
                            x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, r.add($i * ld + 16 * v)));
                        }
                        if e.relu {
                            x = _mm512_max_ps(x, _mm512_setzero_ps());
                        }
                    }
                    _mm512_mask_storeu_ps(c.add(16 * v), m, x);
                }
            }
        )*};
    }
    rows!(0 1 2 3 4 5 6 7);
}
