//! The AVX512-VNNI int8 kernel, for CPUs with AVX-512 int8 dot products but no AMX (Intel Cascade Lake,
//! Ice Lake, AMD Zen 4 and later): `vpdpbusd` multiplies 64 unsigned activation bytes by 64 signed weight
//! bytes and adds each group of four products into one of 16 i32 lanes, exactly (no intermediate
//! saturation), so it computes the same sums as the AMX-INT8 kernel.
//!
//! Layouts: the weights are the int8 OIHW rows the AMX kernel reads (depth padded with zeros), read in
//! place: a depth quad of one output channel is one 4-byte broadcast. B is packed per block of columns by
//! [`super::int8::pack`] (quantized as it is packed, moved as bytes where it was quantized before
//! im2col, or read straight from a stride-1 conv's quantized image) into strips 48 columns wide whose lanes hold four
//! depth steps of one column, over the whole depth. A register tile is 8 output channels x 48 pixels
//! (24 accumulators; per depth quad 3 loads of B, 8 broadcasts of A, 24 dot products), summed over the
//! whole depth, then dequantized with the bias, residual and ReLU by [`super::int8::store`].

use std::arch::x86_64::*;

use super::int8::{self, Requant};
use super::Gemm;

/// Output channels per register tile.
const MR: usize = 8;
/// Columns of a packed B strip: three 16-lane vectors.
const NR: usize = 48;
/// Target size of one column block's packed strips (stays in L2 while every row block reads it).
const BLOCK_BYTES: usize = 256 * 1024;

/// True when the CPU has AVX-512F, BW and VL (for packing) and AVX512-VNNI.
pub(crate) fn is_supported() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
}

/// Computes one tile of C whose weights are int8 rows at `a` (`kpad` bytes per row, `kpad >= g.k`, zero
/// past `g.k`; `g.m` a multiple of 8) and whose activations are quantized as `q` says while B is packed;
/// the epilogue dequantizes.
///
/// # Safety
/// [`is_supported`]; the pointers cover what `g` describes; `q`'s per-row slices cover the tile's rows
/// (row 0 of the tile first); no other thread writes this tile.
pub(crate) unsafe fn gemm_int8(g: &Gemm, a: *const i8, kpad: usize, q: &Requant) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    debug_assert!(g.m.is_multiple_of(MR) && kpad >= g.k.div_ceil(4) * 4);
    let quads = g.k.div_ceil(4);
    // Lanes of one strip, strips per column block.
    let strip = quads * NR;
    // Rows outer for a wide 1x1 conv's product, as the f32 kernels do (see `super::blocked`).
    let rows_outer = super::rows_outer(q.image.is_none(), g, 4 * MR);
    let per_block = match rows_outer {
        true => (super::ROWS_OUTER_B / strip.max(1)).clamp(1, 64),
        false => (BLOCK_BYTES / (4 * strip).max(1)).clamp(1, 8),
    };
    let nc = per_block * NR;
    // The strips, then the register tile's sums (MR x NR i32).
    super::with_panel(per_block * strip + MR * NR, |panel| {
        let (bp, scratch) = panel.split_at_mut(per_block * strip);
        let lanes = std::slice::from_raw_parts_mut(bp.as_mut_ptr().cast::<u32>(), bp.len());
        let sums = scratch.as_mut_ptr().cast::<i32>();
        for j0 in (0..g.n).step_by(nc) {
            let nb = nc.min(g.n - j0);
            int8::pack(g, q, j0, nb, NR, quads, lanes);
            let (strips, panels) = (nb.div_ceil(NR), g.m / MR);
            for t in 0..strips * panels {
                let (s, p) = super::tile_at(rows_outer, t, strips, panels);
                let (j, i0) = (s * NR, p * MR);
                let b = lanes.as_ptr().add(s * strip);
                let cols = NR.min(nb - j);
                let rows = a.add(i0 * kpad);
                match cols.div_ceil(16) {
                    1 => kernel::<1>(rows, kpad, b, quads, sums),
                    2 => kernel::<2>(rows, kpad, b, quads, sums),
                    _ => kernel::<3>(rows, kpad, b, quads, sums),
                }
                let tile = sums.cast_const();
                int8::store(g, q, i0, j0 + j, MR, cols, |r, v| tile.add(r * NR + 16 * v));
            }
        }
    })
}

/// Sums `quads` depth quads of 8 weight rows (`lda` bytes apart) times the first `NV` vectors of a strip
/// into registers, and stores them to `out` (row `i`, vector `v` at `out + i * NR + 16 v`).
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn kernel<const NV: usize>(a: *const i8, lda: usize, b: *const u32, quads: usize, out: *mut i32) {
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for s in 0..quads {
        let mut bv = [_mm512_setzero_si512(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_load_si512(b.add(s * NR + 16 * v).cast());
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // Four signed weight bytes of row `i`, broadcast to every lane.
            let w = _mm512_set1_epi32(a.add(i * lda + 4 * s).cast::<i32>().read_unaligned());
            for (acc, &x) in row.iter_mut().zip(&bv) {
                *acc = _mm512_dpbusd_epi32(*acc, x, w);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            _mm512_storeu_si512(out.add(i * NR + 16 * v).cast(), *x);
        }
    }
}
