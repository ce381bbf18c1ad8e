//! Int8 convolutions: weights quantized per output channel (symmetric, `q = round(w / s_w)` in
//! [-127, 127]), activations per tensor with a zero point (`q = clamp(round(x / s_x) + z, 0, 255)`, `z` = 0
//! for inputs calibrated non-negative, as every post-ReLU input is, else 128), multiplied by AMX-INT8 tiles
//! (`tdpbsud`, [`super::amx`]) or AVX512-VNNI dot products (`vpdpbusd`, [`super::vnni`]), signed weights by
//! unsigned activations four byte products at a time, summed in i32 exactly (both kernels give the same
//! sums), and dequantized in the epilogue:
//!
//! `y[o] = s_x * s_w[o] * (sum_k q_w[o, k] * q_x[k] - z * sum_k q_w[o, k]) + bias[o]`
//!
//! then the residual add and the ReLU, in f32, before the only store. The zero-point term is exact integer
//! arithmetic (`z * sum_k q_w` precomputed per channel), so zero padding (`x = 0`, `q = z`) costs nothing.
//! Activations are quantized while B is packed; between layers they stay f32.

use std::arch::x86_64::*;

use super::Gemm;

/// How one tile's products become outputs, per row from the tile's first: `mul[r] = s_x * s_w[r]`,
/// `zw[r] = z * sum_k q_w[r, k]`; and the activations' quantization.
#[derive(Clone, Copy)]
pub(crate) struct Requant {
    pub inv_scale: f32,
    pub zero: u8,
    pub mul: *const f32,
    pub zw: *const i32,
    /// B already quantized, as bytes (`Gemm::ldb` apart, the tile's first column first): an unfolded
    /// input is quantized once, before im2col, rather than as each block is packed. Null: B is `Gemm::b`,
    /// f32, quantized while it is packed.
    pub b8: *const u8,
    /// The conv's input image, quantized, that B is packed from directly (no unfolded copy); B and `b8`
    /// are then unused.
    pub image: Option<Implicit>,
    /// Where the outputs go as bytes, quantized for the next conv (`Gemm::ldc` apart, at the tile's first
    /// row and column; after the residual and the ReLU): `q = clamp(round(y * inv_scale) + zero, 0, 255)`, the
    /// bytes the next conv would make of the f32 outputs. `None`: f32 to `Gemm::c`.
    pub emit: Option<Emit>,
}

/// An int8 conv's outputs stored as the next int8 conv's quantized inputs (see [`Requant::emit`]).
#[derive(Clone, Copy)]
pub(crate) struct Emit {
    pub c: *mut u8,
    pub inv_scale: f32,
    pub zero: u8,
}

/// A conv's quantized input image, read as B (see [`super::implicit`]).
pub(crate) type Implicit = super::implicit::Implicit<u8>;

/// Packs columns `j0 .. j0 + n` of the tile's B (`g.k` rows) into strips (see [`strips`]) from where `q`
/// says B is: f32 (quantized on the way), bytes, or the image itself.
///
/// # Safety
/// As [`strips`] (AVX-512F, BW and VL); B covers the columns.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack(g: &Gemm, q: &Requant, j0: usize, n: usize, nr: usize, lane_rows: usize, out: &mut [u32]) {
    match (&q.image, q.b8.is_null()) {
        (Some(img), _) => strips_image(img, img.first_col + j0, g.k, n, nr, lane_rows, q.zero, out),
        (None, false) => strips_u8(q.b8.add(j0), g.ldb, g.k, n, nr, lane_rows, q.zero, out),
        (None, true) => strips(g.b.add(j0), g.ldb, g.k, n, nr, lane_rows, q.inv_scale, q.zero, out),
    }
}

/// `out[i] = clamp(round(x[i] * inv_scale) + zero, 0, 255)`, rounding to nearest even: the values
/// [`strips`] packs for the same inputs.
///
/// # Safety
/// AVX-512F; `out` is at least as long as `x`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn quantize(x: &[f32], inv_scale: f32, zero: u8, out: &mut [u8]) {
    debug_assert!(out.len() >= x.len());
    let (inv, z, lo, hi) = (
        _mm512_set1_ps(inv_scale),
        _mm512_set1_epi32(i32::from(zero)),
        _mm512_setzero_si512(),
        _mm512_set1_epi32(255),
    );
    for i in (0..x.len()).step_by(16) {
        let n = (x.len() - i).min(16);
        let m: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), z);
        let q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(i).cast(), m, q);
    }
}

/// [`strips`] for a B already quantized to bytes (`b`, row stride `ldb`): the same layout, by moving
/// bytes. Columns past `n` are `zero`, rows past `k` 0.
///
/// # Safety
/// AVX-512F; `b` covers the block; `out` as for [`strips`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn strips_u8(
    b: *const u8,
    ldb: usize,
    k: usize,
    n: usize,
    nr: usize,
    lane_rows: usize,
    zero: u8,
    out: &mut [u32],
) {
    pack_quads(k, n, nr, lane_rows, out, |row, col, cols| {
        let src = b.add(row * ldb + col);
        let bytes = if cols == 16 {
            _mm_loadu_si128(src.cast())
        } else {
            // The strip's partial last vector: the columns past `n` hold the zero point.
            let mut part = [zero; 16];
            std::ptr::copy_nonoverlapping(src, part.as_mut_ptr(), cols);
            _mm_loadu_si128(part.as_ptr().cast())
        };
        _mm512_cvtepu8_epi32(bytes)
    })
}

/// Quantizes and packs `k` rows x `n` columns of f32 `b` (row stride `ldb`) into strips `nr` columns wide
/// of `lane_rows` quads: lane `kq * nr + j` holds the quantized rows `4 kq .. 4 kq + 4` of column `j`, one
/// byte each (low byte first). Rows past `k` are 0 (their weights are 0), columns past `n` are `zero`.
///
/// # Safety
/// AVX-512F; `b` covers the block; `out` holds `ceil(n / nr) * lane_rows * nr` lanes, 64-byte aligned.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn strips(
    b: *const f32,
    ldb: usize,
    k: usize,
    n: usize,
    nr: usize,
    lane_rows: usize,
    inv_scale: f32,
    zero: u8,
    out: &mut [u32],
) {
    let (inv, z, lo, hi) = (
        _mm512_set1_ps(inv_scale),
        _mm512_set1_epi32(i32::from(zero)),
        _mm512_setzero_si512(),
        _mm512_set1_epi32(255),
    );
    pack_quads(k, n, nr, lane_rows, out, |row, col, cols| {
        let m: __mmask16 = if cols >= 16 { 0xffff } else { (1u16 << cols) - 1 };
        let x = _mm512_maskz_loadu_ps(m, b.add(row * ldb + col));
        // Round to nearest even (the default MXCSR mode), shift by the zero point, saturate. Columns past
        // `n` load as 0.0, which quantizes to the zero point.
        let qv = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, inv)), z);
        _mm512_min_epi32(_mm512_max_epi32(qv, lo), hi)
    })
}

/// [`strips`] straight from a conv's quantized image (implicit GEMM): the strips im2col followed by
/// [`strips_u8`] would give for output columns `col0 .. col0 + n`, without the unfolded copy. Each
/// 16-column vector of a strip is gathered by the masked loads of a [`super::implicit::Gather`] (16 bytes;
/// at stride 2, 32 bytes whose even ones are kept), lanes in the padding or past `n` keeping the zero point.
///
/// # Safety
/// AVX-512F, BW and VL; `img.x` holds the whole (C, H, W) image; `k == C * kernel^2`; `out` as for
/// [`strips`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn strips_image(
    img: &Implicit,
    col0: usize,
    k: usize,
    n: usize,
    nr: usize,
    lane_rows: usize,
    zero: u8,
    out: &mut [u32],
) {
    let (c, h, w) = img.chw;
    let (taps, st) = (img.kernel * img.kernel, img.stride);
    let kq = k.div_ceil(4);
    debug_assert!(k == c * taps && lane_rows >= kq && nr.is_multiple_of(16) && (1..=2).contains(&st));
    debug_assert!(out.len() >= n.div_ceil(nr) * lane_rows * nr);
    let vectors = n.div_ceil(nr) * (nr / 16);
    let gather = super::implicit::Gather::new(img, col0, n, vectors);
    let plane = (h * w) as isize;
    let zeros = _mm_set1_epi8(zero as i8);
    let vecs = nr / 16;
    let load = |bytes: __m128i, mask: u16, even: u32, at: *const u8| match st {
        1 => _mm_mask_loadu_epi8(bytes, mask, at.cast()),
        // Lane `l` is byte `2 l`: load the valid lanes' even bytes, keep the low byte of each 16-bit pair.
        _ => {
            let pairs = _mm256_maskz_loadu_epi8(even, at.cast());
            _mm_mask_blend_epi8(mask, bytes, _mm256_cvtepi16_epi8(pairs))
        }
    };
    // Interleaves four rows of 16 bytes into 16 lanes of four bytes, row 0 lowest (bytes into pairs, pairs
    // into quads), at `dst`.
    let quads = |r: [__m128i; 4], dst: *mut __m128i| {
        let (lo01, hi01) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpackhi_epi8(r[0], r[1]));
        let (lo23, hi23) = (_mm_unpacklo_epi8(r[2], r[3]), _mm_unpackhi_epi8(r[2], r[3]));
        _mm_store_si128(dst, _mm_unpacklo_epi16(lo01, lo23));
        _mm_store_si128(dst.add(1), _mm_unpackhi_epi16(lo01, lo23));
        _mm_store_si128(dst.add(2), _mm_unpacklo_epi16(hi01, hi23));
        _mm_store_si128(dst.add(3), _mm_unpackhi_epi16(hi01, hi23));
    };
    if img.tap_major {
        // A quad is channels `ci .. ci + 4` at tap `t`: one set of loads, four channels apart.
        debug_assert!(c.is_multiple_of(4));
        for s in 0..n.div_ceil(nr) {
            let strip = out.as_mut_ptr().add(s * lane_rows * nr);
            let (mut t, mut ci) = (0usize, 0usize);
            for q in 0..kq {
                for v in 0..vecs {
                    let u = s * vecs + v;
                    let mut r = [zeros; 4];
                    for ld in gather.at(u, t) {
                        for (i, bytes) in r.iter_mut().enumerate() {
                            let at = img.x.wrapping_offset((ci + i) as isize * plane + ld.off);
                            *bytes = load(*bytes, ld.mask, ld.even, at);
                        }
                    }
                    quads(r, strip.add(q * nr + 16 * v).cast());
                }
                ci += 4;
                if ci == c {
                    (t, ci) = (t + 1, 0);
                }
            }
            std::ptr::write_bytes(strip.add(kq * nr), 0, (lane_rows - kq) * nr);
        }
        return;
    }
    for s in 0..n.div_ceil(nr) {
        let strip = out.as_mut_ptr().add(s * lane_rows * nr);
        // The first of the quad's rows: channel and tap, stepped along without dividing.
        let (mut ci, mut t0) = (0usize, 0usize);
        for q in 0..kq {
            let mut rows = [(0isize, 0usize); 4];
            let used = (k - 4 * q).min(4);
            let (mut cr, mut tr) = (ci, t0);
            for row in rows.iter_mut().take(used) {
                *row = (cr as isize * plane, tr);
                tr += 1;
                if tr == taps {
                    (cr, tr) = (cr + 1, 0);
                }
            }
            (ci, t0) = (cr, tr);
            for v in 0..vecs {
                let u = s * vecs + v;
                // The quad's four rows at these 16 columns (rows past `k`: 0).
                let mut r = [_mm_setzero_si128(); 4];
                for (bytes, &(base, t)) in r.iter_mut().zip(&rows).take(used) {
                    *bytes = zeros;
                    for ld in gather.at(u, t) {
                        *bytes = load(*bytes, ld.mask, ld.even, img.x.wrapping_offset(base + ld.off));
                    }
                }
                quads(r, strip.add(q * nr + 16 * v).cast());
            }
        }
        std::ptr::write_bytes(strip.add(kq * nr), 0, (lane_rows - kq) * nr);
    }
}

/// The layout both packings share: strips `nr` columns wide of `lane_rows` lanes of four depth rows, lane
/// `kq * nr + j` holding rows `4 kq .. 4 kq + 4` of column `j` (low byte first), rows past `k` 0. `row_at(row,
/// col, cols)` gives row `row`'s values (0..=255, one per i32 lane) at columns `col .. col + 16`, of which
/// `cols` lie inside the block.
#[inline(always)]
unsafe fn pack_quads(
    k: usize,
    n: usize,
    nr: usize,
    lane_rows: usize,
    out: &mut [u32],
    row_at: impl Fn(usize, usize, usize) -> __m512i,
) {
    let kq = k.div_ceil(4);
    debug_assert!(lane_rows >= kq && nr.is_multiple_of(16) && out.len() >= n.div_ceil(nr) * lane_rows * nr);
    for (s, j0) in (0..n).step_by(nr).enumerate() {
        let w = nr.min(n - j0);
        let strip = out.as_mut_ptr().add(s * lane_rows * nr);
        for q in 0..kq {
            for v in 0..nr / 16 {
                let cols = w.saturating_sub(16 * v).min(16);
                let mut lane = _mm512_setzero_si512();
                for r in 0..4 {
                    let row = 4 * q + r;
                    if row >= k {
                        break;
                    }
                    let bytes = row_at(row, j0 + 16 * v, cols);
                    lane = _mm512_or_si512(lane, _mm512_sllv_epi32(bytes, _mm512_set1_epi32(8 * r as i32)));
                }
                _mm512_store_si512(strip.add(q * nr + 16 * v).cast(), lane);
            }
        }
        std::ptr::write_bytes(strip.add(kq * nr), 0, (lane_rows - kq) * nr);
    }
}

/// Writes `rows` x `cols` of i32 sums to C at (row `i0`, column `j`): dequantized, plus bias and residual,
/// ReLU; as f32, or quantized again to bytes for the next conv ([`Requant::emit`]). `at(r, v)` is where the
/// sums of the block's row `r`, columns `16 v .. 16 v + 16` are.
///
/// # Safety
/// AVX-512F; as [`super::amx::gemm_int8`]; `at` points at 16 readable i32 for every row and vector.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store(
    g: &Gemm,
    q: &Requant,
    i0: usize,
    j: usize,
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> *const i32,
) {
    let e = g.epilogue;
    let (emit_inv, emit_zero) = match q.emit {
        Some(out) => (out.inv_scale, i32::from(out.zero)),
        None => (0.0, 0),
    };
    let (emit_inv, emit_zero, lo, hi) = (
        _mm512_set1_ps(emit_inv),
        _mm512_set1_epi32(emit_zero),
        _mm512_setzero_si512(),
        _mm512_set1_epi32(255),
    );
    for r in 0..rows {
        let o = i0 + r;
        let (mul, zw, bias) = (
            _mm512_set1_ps(*q.mul.add(o)),
            _mm512_set1_epi32(*q.zw.add(o)),
            _mm512_set1_ps(*e.bias.add(o)),
        );
        for v in 0..cols.div_ceil(16) {
            let n = (cols - 16 * v).min(16);
            let m: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            let acc = _mm512_loadu_si512(at(r, v).cast());
            let mut x = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zw)), mul, bias);
            if let Some((res, ld)) = e.residual {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, res.add(o * ld + j + 16 * v)));
            }
            if e.relu {
                x = _mm512_max_ps(x, _mm512_setzero_ps());
            }
            let at = o * g.ldc + j + 16 * v;
            match q.emit {
                // As `quantize` rounds: to nearest even, shifted by the zero point, saturated.
                Some(out) => {
                    let qv = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, emit_inv)), emit_zero);
                    let qv = _mm512_min_epi32(_mm512_max_epi32(qv, lo), hi);
                    _mm512_mask_cvtepi32_storeu_epi8(out.c.add(at).cast(), m, qv);
                }
                None => _mm512_mask_storeu_ps(g.c.add(at), m, x),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Strips packed straight from an image equal strips packed from its naive unfolding, for kernels 1-7,
    /// maps narrower than a vector, blocks starting mid-row and partial last strips.
    #[test]
    fn image_strips_match_the_unfolded_ones() {
        let has = |f| match f {
            "bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            _ => std::arch::is_x86_feature_detected!("avx512vl"),
        };
        if !std::arch::is_x86_feature_detected!("avx512f") || !has("bw") || !has("vl") {
            return;
        }
        let zero = 7u8;
        // The f32 packers' shapes, and more with channels in quads for the tap-major order.
        let quads = [
            (8usize, 9usize, 10usize, 3usize, 1usize, 1usize),
            (4, 7, 7, 3, 1, 1),
            (8, 15, 17, 3, 1, 2),
            (4, 11, 9, 1, 0, 2),
        ];
        for (c, h, w, kernel, pad, st) in super::super::implicit::tests::SHAPES.into_iter().chain(quads) {
            let (oh, ow) = ((h + 2 * pad - kernel) / st + 1, (w + 2 * pad - kernel) / st + 1);
            let p = oh * ow;
            let x: Vec<u8> = (0..c * h * w).map(|i| (i * 37 % 251) as u8).collect();
            let k = c * kernel * kernel;
            for tap_major in [false, true] {
                if tap_major && !c.is_multiple_of(4) {
                    continue;
                }
                // Row (ci, i, j) (or (i, j, ci)), column (oy, ox): the pixel the tap sees, the zero point in the
                // padding.
                let mut b = vec![zero; k * p];
                for r in 0..k {
                    let (ci, tap) = match tap_major {
                        false => (r / (kernel * kernel), r % (kernel * kernel)),
                        true => (r % c, r / c),
                    };
                    let (i, j) = (tap / kernel, tap % kernel);
                    for col in 0..p {
                        let (y, xx) = (
                            (col / ow * st + i) as isize - pad as isize,
                            (col % ow * st + j) as isize - pad as isize,
                        );
                        if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                            b[r * p + col] = x[ci * h * w + y as usize * w + xx as usize];
                        }
                    }
                }
                for (nr, lane_rows) in [(48usize, k.div_ceil(4)), (32, k.div_ceil(4) + 3)] {
                    for col0 in [0, 1, p / 2] {
                        let n = p - col0;
                        let len = n.div_ceil(nr) * lane_rows * nr;
                        let mut want = vec![0x5555_5555u32; len + 16];
                        let mut got = want.clone();
                        let (a, g) = (want.as_ptr().align_offset(64), got.as_ptr().align_offset(64));
                        let img = super::Implicit {
                            x: x.as_ptr(),
                            chw: (c, h, w),
                            kernel,
                            stride: st,
                            tap_major,
                            pad,
                            ow,
                            first_col: 0,
                        };
                        unsafe {
                            super::strips_u8(b.as_ptr().add(col0), p, k, n, nr, lane_rows, zero, &mut want[a..]);
                            super::strips_image(&img, col0, k, n, nr, lane_rows, zero, &mut got[g..]);
                        }
                        assert_eq!(
                            &got[g..g + len],
                            &want[a..a + len],
                            "c{c} {h}x{w} k{kernel}/{st} pad{pad} nr{nr} from {col0} tap-major {tap_major}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strips_hold_quantized_quads() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let (k, n, ldb, nr, lane_rows) = (6usize, 40usize, 41usize, 32usize, 3usize);
        let b: Vec<f32> = (0..k * ldb).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let (inv, zero) = (20.0f32, 128u8);
        let strips = n.div_ceil(nr);
        let mut buf = vec![0x5555_5555u32; strips * lane_rows * nr + 16];
        let at = buf.as_ptr().align_offset(64);
        unsafe { super::strips(b.as_ptr(), ldb, k, n, nr, lane_rows, inv, zero, &mut buf[at..]) };
        let out = &buf[at..];
        let quant = |v: f32| ((v * inv).round_ties_even() + f32::from(zero)).clamp(0.0, 255.0) as u32;
        for s in 0..strips {
            for q in 0..lane_rows {
                for j in 0..nr {
                    let col = s * nr + j;
                    let want = (0..4).fold(0u32, |acc, r| {
                        let row = 4 * q + r;
                        let byte = match (row < k, col < n) {
                            (false, _) => 0,
                            (true, true) => quant(b[row * ldb + col]),
                            (true, false) => u32::from(zero),
                        };
                        acc | (byte << (8 * r))
                    });
                    assert_eq!(out[(s * lane_rows + q) * nr + j], want, "strip {s} quad {q} col {j}");
                }
            }
        }
        // Quantized first, then packed as bytes: the same strips.
        let mut bytes = vec![0u8; b.len()];
        unsafe { super::quantize(&b, inv, zero, &mut bytes) };
        assert!(b.iter().zip(&bytes).all(|(&v, &q)| quant(v) == u32::from(q)));
        let mut again = vec![0x5555_5555u32; strips * lane_rows * nr + 16];
        let at2 = again.as_ptr().align_offset(64);
        unsafe { super::strips_u8(bytes.as_ptr(), ldb, k, n, nr, lane_rows, zero, &mut again[at2..]) };
        assert_eq!(
            &again[at2..at2 + strips * lane_rows * nr],
            &out[..strips * lane_rows * nr]
        );
    }
}
