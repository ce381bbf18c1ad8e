//! A probe for issue #14's next lever: would the 1x1 convs run faster on a channel-blocked activation layout
//! (NCHW16c: per image, blocks of 16 channels, each a `h * w` run of 64-byte lines, one per pixel), as ONNX
//! Runtime runs them, than as our matrix products on NCHW?
//!
//! The probe is a minimal direct 1x1 kernel on that layout, AVX-512 only: a register tile of 4 blocks of 16 output
//! channels by up to 6 pixels (24 accumulators) summed over the whole depth in registers, per input channel 4
//! weight vectors loaded and one value per pixel broadcast, nothing packed; then bias, residual and ReLU and one
//! store per line. Images go over the threads (batch 1: pixel ranges). It is timed against our conv (`Conv::
//! forward_fused`, the pass's own call, on the NCHW tensor) on ResNet-50's 1x1 shapes (the stride-2 downsamples
//! included), interleaved, outputs compared; the layout conversions are left out of the probe's time (the layout
//! would be kept between convs).
//!
//! With `--hybrid`, also the kernel on half the layout, as it would run with only a bottleneck's residual stream
//! blocked: a block's last 1x1 (with its residual) reading NCHW (each value broadcast from its channel's row) and
//! writing NCHW16c, its first reading NCHW16c and writing NCHW (each output line scattered to its channels' rows).
//!
//! With `--winograd`, the same for ResNet-50's stride-1 3x3s: our Winograd lowering against F(2x2, 3x3) and F(4x4, 3x3)
//! on the layout (the input transform reading 16-channel lines, the products on the probe's kernel, the output
//! transform writing lines).
//!
//! `cargo run --release -p zoo-benches --bin nchwc_probe [-- --iters N --batches 1,8 --hybrid --winograd]` (threads: rayon's
//! pool, `RAYON_NUM_THREADS`, for both).

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::time::Instant;

use rayon::prelude::*;

use candle_core::{Device, Result, Tensor};
use resnet::layers::{Conv, ConvSpec};
use zoo_benches::{max_abs_diff, median, Args};

/// One pixel's 16 channels of a block (or 16 output channels' weights for one input channel).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Output channel blocks per register tile, and pixels.
const OB: usize = 4;
const PX: usize = 6;

/// NCHW -> NCHW16c (`c` a multiple of 16).
fn to_blocked(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<Line> {
    let mut out = vec![Line([0.0; 16]); n * c / 16 * hw];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * c / 16 + ch / 16) * hw + p].0[ch % 16] = x[(i * c + ch) * hw + p];
            }
        }
    }
    out
}

/// NCHW16c -> NCHW.
fn from_blocked(x: &[Line], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * c * hw];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * c + ch) * hw + p] = x[(i * c / 16 + ch / 16) * hw + p].0[ch % 16];
            }
        }
    }
    out
}

/// OI (1x1) weights -> per block of 16 output channels, per input channel, a line of the 16 outputs' weights.
fn pack_weights(w: &[f32], o: usize, c: usize) -> Vec<Line> {
    let mut out = vec![Line([0.0; 16]); o / 16 * c];
    for oc in 0..o {
        for ic in 0..c {
            out[(oc / 16) * c + ic].0[oc % 16] = w[oc * c + ic];
        }
    }
    out
}

/// The probe's conv: one image's input (`c / 16` blocks of `side_in^2` lines), weights from [`pack_weights`], output
/// and residual in the same layout (`o / 16` blocks of `hw` lines, the output map `side` wide; `side_in = side` at
/// stride 1, `2 side` at stride 2).
#[derive(Clone, Copy)]
struct Probe<'a> {
    w: &'a [Line],
    bias: &'a [f32],
    c: usize,
    o: usize,
    /// Lines per block of the output, and of the input.
    hw: usize,
    plane_in: usize,
    side: usize,
    side_in: usize,
    /// Bias and ReLU (and the residual, if any) applied; else the sums stored as they are.
    epilogue: bool,
    /// `--hybrid`: the input in NCHW (each value broadcast from its channel's row), not NCHW16c.
    in_nchw: bool,
    /// `--hybrid`: the output in NCHW (each output line scattered to its 16 channels' rows), not NCHW16c.
    out_nchw: bool,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Line, Probe, OB, PX};

    /// Output blocks `ob0..ob0 + OB` at pixels `p0..p0 + P` of one image, at stride `S`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const P: usize, const S: usize, const IN: bool, const OUT: bool>(
        pr: &Probe,
        x: *const Line,
        res: Option<*const Line>,
        out: *mut Line,
        (ob0, p0): (usize, usize),
    ) {
        let (c, hw) = (pr.c, pr.hw);
        let mut acc = [[_mm512_setzero_ps(); P]; OB];
        let w = pr.w.as_ptr().add(ob0 * c).cast::<f32>();
        // The input pixel under each output pixel of the tile.
        let src: [usize; P] = std::array::from_fn(|p| match S {
            1 => p0 + p,
            _ => ((p0 + p) / pr.side * S) * pr.side_in + (p0 + p) % pr.side * S,
        });
        for cb in 0..c / 16 {
            let xb = x.add(cb * pr.plane_in).cast::<f32>();
            for i in 0..16 {
                let ci = cb * 16 + i;
                let wv: [__m512; OB] = std::array::from_fn(|b| _mm512_load_ps(w.add((b * c + ci) * 16)));
                for p in 0..P {
                    let xv = match IN {
                        true => _mm512_set1_ps(*x.cast::<f32>().add(ci * pr.plane_in + src[p])),
                        false => _mm512_set1_ps(*xb.add(src[p] * 16 + i)),
                    };
                    for (row, &w) in acc.iter_mut().zip(&wv) {
                        row[p] = _mm512_fmadd_ps(w, xv, row[p]);
                    }
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (b, row) in acc.iter().enumerate() {
            if !pr.epilogue {
                for (p, &a) in row.iter().enumerate() {
                    _mm512_store_ps(out.add((ob0 + b) * hw + p0 + p).cast(), a);
                }
                continue;
            }
            let bias = _mm512_loadu_ps(pr.bias.as_ptr().add((ob0 + b) * 16));
            for (p, &a) in row.iter().enumerate() {
                let at = (ob0 + b) * hw + p0 + p;
                let mut y = _mm512_add_ps(a, bias);
                if let Some(r) = res {
                    y = _mm512_add_ps(y, _mm512_load_ps(r.add(at).cast()));
                }
                if OUT {
                    let mut line = Line([0.0; 16]);
                    _mm512_store_ps(line.0.as_mut_ptr(), _mm512_max_ps(y, zero));
                    let o = out.cast::<f32>();
                    for (l, &v) in line.0.iter().enumerate() {
                        *o.add(((ob0 + b) * 16 + l) * hw + p0 + p) = v;
                    }
                    continue;
                }
                _mm512_store_ps(out.add(at).cast(), _mm512_max_ps(y, zero));
            }
        }
    }

    /// Pixels `from..to` of one image, every output block.
    ///
    /// # Safety
    /// AVX-512F; `x`, `res` and `out` hold one image each in the probe's layout.
    pub(super) unsafe fn run(
        pr: &Probe,
        x: *const Line,
        res: Option<*const Line>,
        out: *mut Line,
        range: (usize, usize),
    ) {
        match (pr.side_in / pr.side, pr.in_nchw, pr.out_nchw) {
            (1, true, _) => run_at::<1, true, false>(pr, x, res, out, range),
            (1, _, true) => run_at::<1, false, true>(pr, x, res, out, range),
            (1, _, _) => run_at::<1, false, false>(pr, x, res, out, range),
            _ => run_at::<2, false, false>(pr, x, res, out, range),
        }
    }

    /// [`run`] at stride `S`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_at<const S: usize, const IN: bool, const OUT: bool>(
        pr: &Probe,
        x: *const Line,
        res: Option<*const Line>,
        out: *mut Line,
        (from, to): (usize, usize),
    ) {
        for ob0 in (0..pr.o / 16).step_by(OB) {
            let mut p0 = from;
            while p0 + PX <= to {
                tile::<PX, S, IN, OUT>(pr, x, res, out, (ob0, p0));
                p0 += PX;
            }
            match to - p0 {
                0 => {}
                1 => tile::<1, S, IN, OUT>(pr, x, res, out, (ob0, p0)),
                2 => tile::<2, S, IN, OUT>(pr, x, res, out, (ob0, p0)),
                3 => tile::<3, S, IN, OUT>(pr, x, res, out, (ob0, p0)),
                4 => tile::<4, S, IN, OUT>(pr, x, res, out, (ob0, p0)),
                _ => tile::<5, S, IN, OUT>(pr, x, res, out, (ob0, p0)),
            }
        }
    }
}

// Winograd's F(2x2, 3x3) on the layout (`--winograd`), with a [`Probe`] holding `U` for weights: per chunk of up to
// [`CHUNK`] 2x2 tiles of one image, the input transform reads each tile's 4x4 patch as 16-channel lines into `V[ξ]`
// (per ξ, the probe's input layout with the chunk's tiles for pixels), the 16 products `M[ξ] = U[ξ] V[ξ]` run on the
// 1x1 probe's kernel, and the output transform writes each tile's 2x2 pixels as lines, with bias and ReLU.

/// Tiles per chunk.
const CHUNK: usize = 48;

/// `U = G g Gᵀ` for every (output, input) channel pair of OIHW 3x3 weights: per ξ, laid out as [`pack_weights`]
/// lays out a 1x1's weights, the 16 one after another.
fn wino_weights(g: &[f32], o: usize, c: usize) -> Vec<Line> {
    const G: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    let mut u = vec![Line([0.0; 16]); 16 * o / 16 * c];
    for oc in 0..o {
        for ic in 0..c {
            let k = &g[(oc * c + ic) * 9..][..9];
            for (i, gi) in G.iter().enumerate() {
                for (j, gj) in G.iter().enumerate() {
                    let mut v = 0.0;
                    for (a, &ga) in gi.iter().enumerate() {
                        for (b, &gb) in gj.iter().enumerate() {
                            v += ga * k[a * 3 + b] * gb;
                        }
                    }
                    u[((i * 4 + j) * (o / 16) + oc / 16) * c + ic].0[oc % 16] = v;
                }
            }
        }
    }
    u
}

/// F(4x4, 3x3)'s `U = G g Gᵀ` (`G` 6 x 3), laid out as [`wino_weights`] lays out F(2x2)'s, the 36 one after another.
fn wino4_weights(g: &[f32], o: usize, c: usize) -> Vec<Line> {
    const S: f32 = 1.0 / 6.0;
    const G: [[f32; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-S, -S, -S],
        [-S, S, -S],
        [S / 4.0, S / 2.0, S],
        [S / 4.0, -S / 2.0, S],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![Line([0.0; 16]); 36 * o / 16 * c];
    for oc in 0..o {
        for ic in 0..c {
            let k = &g[(oc * c + ic) * 9..][..9];
            for (i, gi) in G.iter().enumerate() {
                for (j, gj) in G.iter().enumerate() {
                    let mut v = 0.0;
                    for (a, &ga) in gi.iter().enumerate() {
                        for (b, &gb) in gj.iter().enumerate() {
                            v += ga * k[a * 3 + b] * gb;
                        }
                    }
                    u[((i * 6 + j) * (o / 16) + oc / 16) * c + ic].0[oc % 16] = v;
                }
            }
        }
    }
    u
}

#[cfg(target_arch = "x86_64")]
mod wino {
    use std::arch::x86_64::*;

    use super::{Line, Probe, CHUNK};

    /// `(b0 - b2, b1 + b2, b2 - b1, b1 - b3)`: `Bᵀ` applied along one direction.
    #[inline(always)]
    unsafe fn bt(d: [__m512; 4]) -> [__m512; 4] {
        [
            _mm512_sub_ps(d[0], d[2]),
            _mm512_add_ps(d[1], d[2]),
            _mm512_sub_ps(d[2], d[1]),
            _mm512_sub_ps(d[1], d[3]),
        ]
    }

    /// `(m0 + m1 + m2, m1 - m2 - m3)`: `Aᵀ` applied along one direction.
    #[inline(always)]
    unsafe fn at(m: [__m512; 4]) -> [__m512; 2] {
        [
            _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]),
            _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]),
        ]
    }

    /// Tiles `t0..t0 + len` of one image (`x`: its input lines; `out`: its output lines); `wi.w` holds `U`.
    ///
    /// # Safety
    /// AVX-512F; `x` and `out` hold one image each; `v` and `m` hold `16 * c / 16 * CHUNK` and
    /// `16 * o / 16 * CHUNK` lines.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chunk(
        wi: &Probe,
        x: *const Line,
        out: *mut Line,
        (t0, len): (usize, usize),
        v: &mut [Line],
        m: &mut [Line],
    ) {
        let (c, o, side) = (wi.c, wi.o, wi.side);
        let tw = side / 2;
        let zero = _mm512_setzero_ps();
        let line = |cb: usize, y: isize, xx: isize| -> __m512 {
            if y < 0 || xx < 0 || y >= side as isize || xx >= side as isize {
                return zero;
            }
            _mm512_load_ps(x.add((cb * side + y as usize) * side + xx as usize).cast())
        };
        // Input transform: V[ξ][cb][t], ξ = 4 * (index down) + (index across).
        let vp = v.as_mut_ptr();
        for cb in 0..c / 16 {
            for t in 0..len {
                let (ty, tx) = ((t0 + t) / tw, (t0 + t) % tw);
                let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
                // Column `i` of the patch, transformed down the rows.
                let cols: [[__m512; 4]; 4] =
                    std::array::from_fn(|i| bt(std::array::from_fn(|j| line(cb, y0 + j as isize, x0 + i as isize))));
                // Then across the columns, for each index down.
                let [c0, c1, c2, c3] = cols;
                for (a, (((&v0, &v1), &v2), &v3)) in c0.iter().zip(&c1).zip(&c2).zip(&c3).enumerate() {
                    for (b, &val) in bt([v0, v1, v2, v3]).iter().enumerate() {
                        _mm512_store_ps(vp.add(((a * 4 + b) * (c / 16) + cb) * CHUNK + t).cast(), val);
                    }
                }
            }
        }
        // The 16 products, on the 1x1 probe's kernel.
        for xi in 0..16 {
            let pr = Probe {
                w: &wi.w[xi * (o / 16) * c..(xi + 1) * (o / 16) * c],
                bias: &[],
                c,
                o,
                hw: CHUNK,
                plane_in: CHUNK,
                side: 1,
                side_in: 1,
                epilogue: false,
                in_nchw: false,
                out_nchw: false,
            };
            super::x86::run_at::<1, false, false>(
                &pr,
                v.as_ptr().add(xi * (c / 16) * CHUNK),
                None,
                m.as_mut_ptr().add(xi * (o / 16) * CHUNK),
                (0, len),
            );
        }
        // Output transform, bias, ReLU.
        let mp = m.as_ptr();
        for ob in 0..o / 16 {
            let bias = _mm512_loadu_ps(wi.bias.as_ptr().add(ob * 16));
            for t in 0..len {
                let (ty, tx) = ((t0 + t) / tw, (t0 + t) % tw);
                let mv = |xi: usize| _mm512_load_ps(mp.add((xi * (o / 16) + ob) * CHUNK + t).cast());
                // Down (the first index of ξ) for each index across, then across for each output row.
                let downs: [[__m512; 2]; 4] = std::array::from_fn(|b| at([mv(b), mv(4 + b), mv(8 + b), mv(12 + b)]));
                let [d0, d1, d2, d3] = downs;
                for (a, (((&v0, &v1), &v2), &v3)) in d0.iter().zip(&d1).zip(&d2).zip(&d3).enumerate() {
                    for (b, &val) in at([v0, v1, v2, v3]).iter().enumerate() {
                        let r = _mm512_max_ps(_mm512_add_ps(val, bias), zero);
                        _mm512_store_ps(out.add((ob * side + 2 * ty + a) * side + 2 * tx + b).cast(), r);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod wino4 {
    use std::arch::x86_64::*;

    use super::{Line, Probe, CHUNK};

    /// F(4x4, 3x3)'s `Bᵀ` applied along one direction to six lines.
    #[inline(always)]
    unsafe fn bt(d: [__m512; 6]) -> [__m512; 6] {
        let (add, sub, mul) = (_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);
        let (two, four, five) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(5.0));
        // r1 = d4 + d3 - 4 (d1 + d2), r2 = d4 - d3 + 4 (d1 - d2), r3 = d4 - d2 + 2 (d3 - d1), r4 = d4 - d2 - 2 (d3 - d1).
        let (s12, d12, d31, d42) = (add(d[1], d[2]), sub(d[1], d[2]), sub(d[3], d[1]), sub(d[4], d[2]));
        [
            add(sub(mul(four, d[0]), mul(five, d[2])), d[4]),
            sub(add(d[4], d[3]), mul(four, s12)),
            add(sub(d[4], d[3]), mul(four, d12)),
            add(d42, mul(two, d31)),
            sub(d42, mul(two, d31)),
            add(sub(mul(four, d[1]), mul(five, d[3])), d[5]),
        ]
    }

    /// F(4x4, 3x3)'s `Aᵀ` applied along one direction to six lines.
    #[inline(always)]
    unsafe fn at(m: [__m512; 6]) -> [__m512; 4] {
        let (add, sub, mul) = (_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);
        let (s12, d12, s34, d34) = (add(m[1], m[2]), sub(m[1], m[2]), add(m[3], m[4]), sub(m[3], m[4]));
        [
            add(add(m[0], s12), s34),
            add(d12, mul(_mm512_set1_ps(2.0), d34)),
            add(s12, mul(_mm512_set1_ps(4.0), s34)),
            add(add(d12, mul(_mm512_set1_ps(8.0), d34)), m[5]),
        ]
    }

    /// F(4x4, 3x3) on tiles `t0..t0 + len` of one image, as `wino::chunk` runs F(2x2, 3x3); the 4x4 tiles of a map
    /// whose side is not a multiple of 4 cut at its edge (zeros read, nothing written there).
    ///
    /// # Safety
    /// AVX-512F; `x` and `out` hold one image each; `v` and `m` hold `36 * c / 16 * CHUNK` and
    /// `36 * o / 16 * CHUNK` lines.
    // The transforms index a tile's rows and columns as the formulas do.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chunk(
        wi: &Probe,
        x: *const Line,
        out: *mut Line,
        (t0, len): (usize, usize),
        v: &mut [Line],
        m: &mut [Line],
    ) {
        let (c, o, side) = (wi.c, wi.o, wi.side);
        let tw = side.div_ceil(4);
        let zero = _mm512_setzero_ps();
        let line = |cb: usize, y: isize, xx: isize| -> __m512 {
            if y < 0 || xx < 0 || y >= side as isize || xx >= side as isize {
                return zero;
            }
            _mm512_load_ps(x.add((cb * side + y as usize) * side + xx as usize).cast())
        };
        let vp = v.as_mut_ptr();
        for cb in 0..c / 16 {
            for t in 0..len {
                let (ty, tx) = ((t0 + t) / tw, (t0 + t) % tw);
                let (y0, x0) = (4 * ty as isize - 1, 4 * tx as isize - 1);
                let cols: [[__m512; 6]; 6] =
                    std::array::from_fn(|i| bt(std::array::from_fn(|j| line(cb, y0 + j as isize, x0 + i as isize))));
                for a in 0..6 {
                    let across = bt(std::array::from_fn(|i| cols[i][a]));
                    for (b, &val) in across.iter().enumerate() {
                        _mm512_store_ps(vp.add(((a * 6 + b) * (c / 16) + cb) * CHUNK + t).cast(), val);
                    }
                }
            }
        }
        for xi in 0..36 {
            let pr = Probe {
                w: &wi.w[xi * (o / 16) * c..(xi + 1) * (o / 16) * c],
                bias: &[],
                c,
                o,
                hw: CHUNK,
                plane_in: CHUNK,
                side: 1,
                side_in: 1,
                epilogue: false,
                in_nchw: false,
                out_nchw: false,
            };
            super::x86::run_at::<1, false, false>(
                &pr,
                v.as_ptr().add(xi * (c / 16) * CHUNK),
                None,
                m.as_mut_ptr().add(xi * (o / 16) * CHUNK),
                (0, len),
            );
        }
        let mp = m.as_ptr();
        for ob in 0..o / 16 {
            let bias = _mm512_loadu_ps(wi.bias.as_ptr().add(ob * 16));
            for t in 0..len {
                let (ty, tx) = ((t0 + t) / tw, (t0 + t) % tw);
                let mv = |xi: usize| _mm512_load_ps(mp.add((xi * (o / 16) + ob) * CHUNK + t).cast());
                let downs: [[__m512; 4]; 6] = std::array::from_fn(|b| at(std::array::from_fn(|a| mv(6 * a + b))));
                for a in 0..4 {
                    let y = 4 * ty + a;
                    if y >= side {
                        break;
                    }
                    for (b, &val) in at(std::array::from_fn(|i| downs[i][a])).iter().enumerate() {
                        let xx = 4 * tx + b;
                        if xx < side {
                            let r = _mm512_max_ps(_mm512_add_ps(val, bias), zero);
                            _mm512_store_ps(out.add((ob * side + y) * side + xx).cast(), r);
                        }
                    }
                }
            }
        }
    }
}

/// The Winograd probe over `n` images in `threads` parts: the (image, chunk) tasks dealt out in runs.
#[cfg(target_arch = "x86_64")]
fn run_wino(wi: Probe, x: &[Line], n: usize, threads: usize, f4: bool) -> Vec<Line> {
    let (in_img, out_img) = (wi.c / 16 * wi.side * wi.side, wi.o / 16 * wi.side * wi.side);
    let mut out: Vec<Line> = Vec::with_capacity(n * out_img);
    // SAFETY: every line is written by a chunk's output transform before it is read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(n * out_img)
    };
    let dst = Ptr(out.as_mut_ptr());
    let (m_out, xis) = if f4 { (4, 36) } else { (2, 16) };
    let tiles = wi.side.div_ceil(m_out).pow(2);
    let tasks: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..tiles).step_by(CHUNK).map(move |t| (i, t)))
        .collect();
    (0..threads).into_par_iter().for_each(|part| {
        let mut v = vec![Line([0.0; 16]); xis * wi.c / 16 * CHUNK];
        let mut m = vec![Line([0.0; 16]); xis * wi.o / 16 * CHUNK];
        let mine = tasks.len() * part / threads..tasks.len() * (part + 1) / threads;
        for &(i, t0) in &tasks[mine] {
            // SAFETY: the CPU has AVX-512F (checked in `main`); each task writes its own tiles of its image.
            unsafe {
                let (x, out, tiles) = (
                    x.as_ptr().add(i * in_img),
                    dst.at(i * out_img),
                    (t0, CHUNK.min(tiles - t0)),
                );
                match f4 {
                    true => wino4::chunk(&wi, x, out, tiles, &mut v, &mut m),
                    false => wino::chunk(&wi, x, out, tiles, &mut v, &mut m),
                }
            }
        }
    });
    out
}

/// Raw pointers handed to the probe's threads (each writes its own images or pixels).
#[derive(Clone, Copy)]
struct Ptr(*mut Line);
// SAFETY: the threads write disjoint parts of the output.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// The line `offset` lines on (a method, so that closures capture the whole `Ptr`).
    fn at(self, offset: usize) -> *mut Line {
        self.0.wrapping_add(offset)
    }
}

/// The probe over `n` images in `threads` parts: images split between them, or each image's pixels.
#[cfg(target_arch = "x86_64")]
fn run_probe(pr: Probe, x: &[Line], res: Option<&[Line]>, n: usize, threads: usize) -> Vec<Line> {
    let (in_img, out_img) = (pr.c / 16 * pr.plane_in, pr.o / 16 * pr.hw);
    // Allocated per call and left uninitialized, as our conv allocates its output.
    let mut out: Vec<Line> = Vec::with_capacity(n * out_img);
    // SAFETY: every line is written by a tile before it is read (`Line` is plain floats).
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(n * out_img)
    };
    let dst = Ptr(out.as_mut_ptr());
    // (image, pixel range) per thread.
    let parts: Vec<Vec<(usize, (usize, usize))>> = (0..threads)
        .map(|t| match n >= threads {
            true => (0..n)
                .filter(|i| i * threads / n == t)
                .map(|i| (i, (0, pr.hw)))
                .collect(),
            false => (0..n)
                .map(|i| {
                    let cut = |k: usize| (pr.hw * k / threads) / PX * PX;
                    let to = if t + 1 == threads { pr.hw } else { cut(t + 1) };
                    (i, (cut(t), to))
                })
                .collect(),
        })
        .collect();
    // On rayon's pool, as our conv runs (one task per thread's part).
    parts.par_iter().for_each(|part| {
        for &(i, range) in part {
            // SAFETY: the CPU has AVX-512F (checked in `main`); the images and ranges are this part's alone.
            unsafe {
                x86::run(
                    &pr,
                    x.as_ptr().add(i * in_img),
                    res.map(|r| r.as_ptr().add(i * out_img)),
                    dst.at(i * out_img),
                    range,
                )
            }
        }
    });
    out
}

fn main() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("the probe's kernel needs AVX-512F");
            return Ok(());
        }
        let args = Args::from_env();
        let iters = args.number("--iters", 20)?.max(1);
        let threads = rayon::current_num_threads();
        let batches = args.numbers("--batches", &[8, 1])?;
        let peak = resnet::layers::engine::fma_peak(threads, 300).unwrap_or(f64::NAN);
        println!("{threads} threads (rayon's pool), FMA peak {peak:.1} GFLOP/s");
        let hybrid = args.has("--hybrid");
        if args.has("--winograd") {
            return winograd_table(&batches, iters, threads, peak);
        }
        print_header("1x1 conv");
        // ResNet-50's 1x1 shapes: (in, out, output map side, stride, residual); the stride-2 ones are the
        // downsamples of layer2-4 (layer1's, 64 -> 256 at stride 1, is the conv3 shape without the residual).
        let shapes = [
            (256, 64, 56, 1, false),
            (64, 256, 56, 1, true),
            (64, 64, 56, 1, false),
            (512, 128, 28, 1, false),
            (128, 512, 28, 1, true),
            (1024, 256, 14, 1, false),
            (256, 1024, 14, 1, true),
            (2048, 512, 7, 1, false),
            (512, 2048, 7, 1, true),
            (256, 512, 28, 2, false),
            (512, 1024, 14, 2, false),
            (1024, 2048, 7, 2, false),
        ];
        let dev = Device::Cpu;
        for &n in &batches {
            for &(c, o, side, stride, residual) in &shapes {
                let (hw, side_in) = (side * side, side * stride);
                let spec = ConvSpec::new(c, o, 1, stride);
                let x = Tensor::randn(0f32, 1f32, (n, c, side_in, side_in), &dev)?;
                let w = (Tensor::randn(0f32, 1f32, spec.weight_shape(), &dev)? / (c as f64).sqrt())?;
                let bias = Tensor::randn(0f32, 1f32, o, &dev)?;
                let r = Tensor::randn(0f32, 1f32, (n, o, side, side), &dev)?;
                let ours = Conv::new_inference(w.clone(), Some(bias.clone()), spec)?;
                let res = residual.then_some(&r);
                let (xv, wv, bv, rv) = (
                    x.flatten_all()?.to_vec1::<f32>()?,
                    w.flatten_all()?.to_vec1::<f32>()?,
                    bias.to_vec1::<f32>()?,
                    r.flatten_all()?.to_vec1::<f32>()?,
                );
                let (xb, wb, rb) = (
                    to_blocked(&xv, n, c, side_in * side_in),
                    pack_weights(&wv, o, c),
                    to_blocked(&rv, n, o, hw),
                );
                let pr = Probe {
                    w: &wb,
                    bias: &bv,
                    c,
                    o,
                    hw,
                    plane_in: side_in * side_in,
                    side,
                    side_in,
                    epilogue: true,
                    in_nchw: false,
                    out_nchw: false,
                };
                // `--hybrid`: a block's last 1x1 (with its residual) reading NCHW and writing NCHW16c, its first
                // (deeper in than out) reading NCHW16c and writing NCHW, as they would with only the residual
                // stream (a block's input and output) blocked and the 3x3 between them left on NCHW.
                let (in_nchw, out_nchw) = match (hybrid, stride, residual, c > o) {
                    (true, 1, true, _) => (true, false),
                    (true, 1, false, true) => (false, true),
                    _ => (false, false),
                };
                let hy = Probe {
                    in_nchw,
                    out_nchw,
                    ..pr
                };
                let xn: Vec<Line> = match in_nchw {
                    true => xv
                        .chunks_exact(16)
                        .map(|s| Line(std::array::from_fn(|i| s[i])))
                        .collect(),
                    false => vec![],
                };
                let hx = if in_nchw { &xn } else { &xb };
                let want = ours.forward_fused(&x, res, true)?;
                let got = from_blocked(&run_probe(pr, &xb, residual.then_some(&rb[..]), n, threads), n, o, hw);
                let diff = max_abs_diff(&want, &Tensor::from_vec(got, (n, o, side, side), &dev)?)?;
                if diff > 1e-3 {
                    candle_core::bail!(
                        "{c} -> {o} at {side}x{side}, batch {n}: the probe and our conv differ by {diff}"
                    );
                }
                let label = format!(
                    "{c}->{o} {side}x{side}{}",
                    match (stride, residual) {
                        (2, _) => " s2",
                        (_, true) => " +res",
                        _ => "",
                    }
                );
                let flops = 2.0 * (n * c * o * hw) as f64;
                if !(in_nchw || out_nchw) {
                    let timed = interleaved(
                        iters,
                        || ours.forward_fused(&x, res, true).map(drop),
                        || drop(run_probe(pr, &xb, residual.then_some(&rb[..]), n, threads)),
                    )?;
                    print_row(&label, n, timed, flops / peak / 1e9, diff);
                    continue;
                }
                let hybrid = |pr: Probe, x: &[Line]| run_probe(pr, x, residual.then_some(&rb[..]), n, threads);
                let hv: Vec<f32> = match out_nchw {
                    true => hybrid(hy, hx).iter().flat_map(|l| l.0).collect(),
                    false => from_blocked(&hybrid(hy, hx), n, o, hw),
                };
                let hdiff = max_abs_diff(&want, &Tensor::from_vec(hv, (n, o, side, side), &dev)?)?;
                if hdiff > 1e-3 {
                    candle_core::bail!("{label}, batch {n}: the hybrid probe and our conv differ by {hdiff}");
                }
                let [a, b, h] = interleaved_n(
                    iters,
                    &mut [
                        &mut || ours.forward_fused(&x, res, true).map(drop),
                        &mut || done(hybrid(pr, &xb)),
                        &mut || done(hybrid(hy, hx)),
                    ],
                )?;
                print_row(&label, n, (a, b), flops / peak / 1e9, diff);
                let side = if in_nchw {
                    "NCHW in, NCHW16c out"
                } else {
                    "NCHW16c in, NCHW out"
                };
                println!(
                    "{:<24} {n:>5} {h:>9.3} ms, ours / hybrid {:.2}x",
                    format!("  hybrid ({side})"),
                    a / h
                );
            }
        }
    }
    Ok(())
}

/// `--winograd`: ResNet-50's stride-1 3x3s (our Winograd lowering on NCHW) against the Winograd probe on NCHW16c;
/// the shares of the peak count the direct convolution's multiply-adds.
#[cfg(target_arch = "x86_64")]
fn winograd_table(batches: &[usize], iters: usize, threads: usize, peak: f64) -> Result<()> {
    print_header("3x3 conv");
    let dev = Device::Cpu;
    for &n in batches {
        for &(c, side) in &[(64usize, 56usize), (128, 28), (256, 14)] {
            let spec = ConvSpec::new(c, c, 3, 1);
            let x = Tensor::randn(0f32, 1f32, (n, c, side, side), &dev)?;
            let w = (Tensor::randn(0f32, 1f32, spec.weight_shape(), &dev)? / ((9 * c) as f64).sqrt())?;
            let bias = Tensor::randn(0f32, 1f32, c, &dev)?;
            let ours = Conv::new_inference(w.clone(), Some(bias.clone()), spec)?;
            let (xv, wv, bv) = (
                x.flatten_all()?.to_vec1::<f32>()?,
                w.flatten_all()?.to_vec1::<f32>()?,
                bias.to_vec1::<f32>()?,
            );
            let (xb, ub, u4) = (
                to_blocked(&xv, n, c, side * side),
                wino_weights(&wv, c, c),
                wino4_weights(&wv, c, c),
            );
            let wi = Probe {
                w: &ub,
                bias: &bv,
                c,
                o: c,
                hw: side * side,
                plane_in: side * side,
                side,
                side_in: side,
                epilogue: true,
                in_nchw: false,
                out_nchw: false,
            };
            let wi4 = Probe { w: &u4, ..wi };
            let want = ours.forward_fused(&x, None, true)?;
            let check = |probe: Vec<Line>, f: &str| -> Result<f32> {
                let got = from_blocked(&probe, n, c, side * side);
                let diff = max_abs_diff(&want, &Tensor::from_vec(got, (n, c, side, side), &dev)?)?;
                if diff > 1e-3 {
                    candle_core::bail!(
                        "3x3 {c} at {side}x{side}, batch {n}: the {f} probe and our conv differ by {diff}"
                    );
                }
                Ok(diff)
            };
            let diff = check(run_wino(wi, &xb, n, threads, false), "F(2x2)")?;
            let diff4 = check(run_wino(wi4, &xb, n, threads, true), "F(4x4)")?;
            let flops = 2.0 * (n * c * c * 9 * side * side) as f64;
            let [a, b, f4] = interleaved_n(
                iters,
                &mut [
                    &mut || ours.forward_fused(&x, None, true).map(drop),
                    &mut || done(run_wino(wi, &xb, n, threads, false)),
                    &mut || done(run_wino(wi4, &xb, n, threads, true)),
                ],
            )?;
            print_row(&format!("{c}->{c} {side}x{side}"), n, (a, b), flops / peak / 1e9, diff);
            let share = 100.0 * flops / peak / 1e9 / (f4 * 1e-3);
            println!(
                "{:<24} {n:>5} {f4:>9.3} ms {share:>7.1}%, ours / F(4x4) probe {:.2}x, max|diff| {diff4:.1e}",
                "  F(4x4) on NCHW16c",
                a / f4
            );
        }
    }
    Ok(())
}

/// A timed run's result dropped (an output timed, not kept).
fn done<T>(_: T) -> Result<()> {
    Ok(())
}

/// Medians (ms) of `iters` runs of `ours` and `probe`, taken in turn.
fn interleaved(iters: usize, mut ours: impl FnMut() -> Result<()>, mut probe: impl FnMut()) -> Result<(f64, f64)> {
    let [a, b] = interleaved_n(
        iters,
        &mut [&mut ours, &mut || {
            probe();
            Ok(())
        }],
    )?;
    Ok((a, b))
}

/// Medians (ms) of `iters` runs of each of `runs`, taken in turn.
fn interleaved_n<const N: usize>(iters: usize, runs: &mut [&mut dyn FnMut() -> Result<()>; N]) -> Result<[f64; N]> {
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| vec![]);
    for _ in 0..iters {
        for (run, t) in runs.iter_mut().zip(&mut times) {
            let start = Instant::now();
            run()?;
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times.map(|mut t| median(&mut t)))
}

/// A table's header.
fn print_header(what: &str) {
    println!(
        "{:<24} {:>5} {:>9} {:>9} {:>8} {:>8} {:>12} {:>9}",
        what, "batch", "ours ms", "probe ms", "ours %", "probe %", "ours/probe", "max|diff|"
    );
}

/// One row of a table: the times, their shares of the peak (`peak_s`: the work's seconds at the FMA peak) and
/// their ratio.
fn print_row(label: &str, n: usize, (a, b): (f64, f64), peak_s: f64, diff: f32) {
    let share = |ms: f64| 100.0 * peak_s / (ms * 1e-3);
    println!(
        "{:<24} {:>5} {:>9.3} {:>9.3} {:>7.1}% {:>7.1}% {:>11.2}x {:>9.1e}",
        label,
        n,
        a,
        b,
        share(a),
        share(b),
        a / b,
        diff
    );
}
