//! The transforms of Winograd's F(4x4, 3x3): each 4x4 block of output pixels (a tile) from the 6x6 patch of
//! input around it, 36 multiplications per (input, output) channel pair instead of the direct convolution's
//! 144: 4x fewer, where F(2x2, 3x3) saves 2.25x. With the interpolation points 0, 1, -1, 2, -2 (Lavin & Gray,
//! 2015), `y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` with
//!
//! ```text
//!       |  1/4     0     0 |         | 4  0 -5  0  1  0 |
//!       | -1/6  -1/6  -1/6 |         | 0 -4 -4  1  1  0 |         | 1  1  1  1  1  0 |
//!   G = | -1/6   1/6  -1/6 |    Bᵀ = | 0  4 -4 -1  1  0 |    Aᵀ = | 0  1 -1  2 -2  0 |
//!       | 1/24  1/12   1/6 |         | 0 -2 -1  2  1  0 |         | 0  1  1  4  4  0 |
//!       | 1/24 -1/12   1/6 |         | 0  2 -1 -2  1  0 |         | 0  1 -1  8 -8  1 |
//!       |    0     0     1 |         | 0  4  0 -5  0  1 |
//! ```
//!
//! The chunks, the 36 products on the micro-kernel and the layouts of `U`, `V` and `M` are the parent module's,
//! with 36 positions `ξ = 6 * (index down) + (index across)` in place of 16. Unlike F(2x2, 3x3)'s, these
//! transforms scale by 4, 5 and 8, and `G` by sixths, which f32 does not hold exactly: the sums are rounded
//! more than the direct convolution's (the property tests bound the error as for the other lowerings; the
//! golden tests hold within 1e-4 of PyTorch).
//!
//! The AVX-512 engine runs the transforms of `x86` (16 tiles of a tile row per vector); the others, the portable
//! ones: loops over a segment's tiles on fixed-size arrays, which the compiler vectorises (for AVX2 on that engine),
//! and the reference the tests hold the AVX-512 ones to.

use super::{u_step, Conv, Out, Segment, CHUNK, SPILL};

/// Positions of the transformed tile (6x6).
pub(super) const XI: usize = 36;

/// Tiles of a segment at most.
const N: usize = CHUNK + SPILL;

/// `Bᵀ d` for one line of six inputs.
#[inline(always)]
fn bt(d: [f32; 6]) -> [f32; 6] {
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        d[3] + d[4] - 4.0 * (d[1] + d[2]),
        d[4] - d[3] + 4.0 * (d[1] - d[2]),
        d[4] - d[2] + 2.0 * (d[3] - d[1]),
        d[4] - d[2] + 2.0 * (d[1] - d[3]),
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `Aᵀ m` for one line of six products.
#[inline(always)]
fn at(m: [f32; 6]) -> [f32; 4] {
    let (sum, diff) = (m[1] + m[2], m[1] - m[2]);
    let (sum2, diff2) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + sum + sum2,
        diff + 2.0 * diff2,
        sum + 4.0 * sum2,
        diff + 8.0 * diff2 + m[5],
    ]
}

/// `G g` for one line of three kernel taps, `MR` output channels (lanes) at once: F(4x4, 3x3)'s `G` by its
/// structure (no products by its zeros and ones).
#[inline(always)]
pub(crate) fn g_line<const MR: usize>(g0: [f32; MR], g1: [f32; MR], g2: [f32; MR]) -> [[f32; MR]; 6] {
    let (sixth, twelfth, quarter) = (1.0 / 6.0, 1.0 / 12.0, 0.25);
    // Plain loops over the lanes (not `array::from_fn`), so that callers in kernels inline it whole.
    let mut r = [[0.0; MR]; 6];
    for i in 0..MR {
        let outer = g0[i] + g2[i];
        let near = quarter * g0[i] + g2[i];
        r[0][i] = quarter * g0[i];
        r[1][i] = -sixth * (outer + g1[i]);
        r[2][i] = -sixth * (outer - g1[i]);
        r[3][i] = sixth * near + twelfth * g1[i];
        r[4][i] = sixth * near - twelfth * g1[i];
        r[5][i] = g2[i];
    }
    r
}

/// One weight panel's 36 matrices `U[ξ] = (G g Gᵀ)[ξ]`, laid out as the parent's `transform_panel` lays out 16
/// (`U[ξ]` step `ci` of row `i` at `ξ * u_step + ci * mr + i`), from the panel `g` of `mr` output channels over `c`
/// input channels by 9 taps.
pub(super) fn transform_panel(g: &[f32], c: usize, mr: usize, u: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(g: &[f32], c: usize, u: &mut [f32]) {
            transform_pairs(g, c, u)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<const MR: usize>(g: &[f32], c: usize, u: &mut [f32]) {
            transform_lanes::<MR, MR>(g, c, (0, c), u)
        }
        if mr == 8 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (and so AVX2 and FMA).
            return unsafe { avx512(g, c, u) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe {
                match mr {
                    8 => avx2::<8>(g, c, u),
                    _ => avx2::<6>(g, c, u),
                }
            };
        }
    }
    match mr {
        8 => transform_lanes::<8, 8>(g, c, (0, c), u),
        6 => transform_lanes::<6, 6>(g, c, (0, c), u),
        _ => unreachable!("weight panels are 6 or 8 rows"),
    }
}

/// [`transform_panel`] for input channels `from..to` of the panel's `c`, `W / MR` channels at a time (their `MR` rows
/// side by side, as each `U[ξ]` holds them), vectorised over those `W` lanes: the same operations lane for lane
/// whatever `W`, so the same bits.
#[inline(always)]
fn transform_lanes<const MR: usize, const W: usize>(g: &[f32], c: usize, (from, to): (usize, usize), u: &mut [f32]) {
    let (step, per) = (u_step(c, MR), W / MR);
    debug_assert!(W.is_multiple_of(MR) && (to - from).is_multiple_of(per) && to <= c);
    debug_assert!(g.len() >= c * 9 * MR && u.len() >= XI * step);
    for ci in (from..to).step_by(per) {
        let tap = |t: usize| -> [f32; W] {
            let mut lanes = [0f32; W];
            for (k, rows) in lanes.chunks_exact_mut(MR).enumerate() {
                rows.copy_from_slice(&g[((ci + k) * 9 + t) * MR..][..MR]);
            }
            lanes
        };
        // G g, column by column of the kernel; then each of its rows times Gᵀ.
        let cols = [
            g_line::<W>(tap(0), tap(3), tap(6)),
            g_line::<W>(tap(1), tap(4), tap(7)),
            g_line::<W>(tap(2), tap(5), tap(8)),
        ];
        for a in 0..6 {
            let row = g_line::<W>(cols[0][a], cols[1][a], cols[2][a]);
            for (b, x) in row.iter().enumerate() {
                u[(a * 6 + b) * step + ci * MR..][..W].copy_from_slice(x);
            }
        }
    }
}

/// True when segments `a` and `b` (consecutive in a chunk) can share vectors in the AVX-512 transforms, 8 tiles
/// each (`x86::Half`).
pub(super) fn pairs(a: &Segment, b: &Segment) -> bool {
    a.len <= 8 && b.len <= 8
}

/// [`transform_panel`] for 8-row panels, two input channels at a time (16 lanes, one AVX-512 vector), an odd last
/// channel alone.
#[inline(always)]
fn transform_pairs(g: &[f32], c: usize, u: &mut [f32]) {
    transform_lanes::<8, 16>(g, c, (0, c - c % 2), u);
    if c % 2 == 1 {
        transform_lanes::<8, 8>(g, c, (c - 1, c), u);
    }
}

/// `V[ξ][c][slots] = (Bᵀ d B)[ξ]` for the segment's tiles, every input channel: per channel, the six input rows
/// under the tile row are split into four phases (column `4 k + p` of the patch row into phase `p` at `k`), so that
/// tile `k` reads its six columns at `k` and `k + 1` of the phases, and the transform is a loop over tiles.
#[inline(always)]
pub(super) fn input(conv: &Conv, x: &[f32], seg: Segment, v: &mut [f32]) {
    let (c, h, w) = conv.chw;
    let len = seg.len.min(N);
    // Input columns `first .. first + span`: phases 0..4 of groups 0..=len.
    let first = 4 * seg.tx as isize - 1;
    let span = 4 * (len + 1);
    let lo = (-first).max(0) as usize;
    let hi = ((w as isize - first).max(0) as usize).min(span);
    let mut line = [0f32; 4 * (N + 1)];
    let mut phases = [[[0f32; N + 1]; 4]; 6];
    let mut across = [[[0f32; N]; 6]; 6];
    let mut t = [[0f32; N]; XI];
    let (base, step) = (conv.at(0, 0, seg.slot, c), conv.xi_step(c));
    for ci in 0..c {
        let plane = &x[(seg.image * c + ci) * h * w..][..h * w];
        for (r, rows) in phases.iter_mut().enumerate() {
            let y = 4 * seg.ty as isize - 1 + r as isize;
            if y < 0 || y >= h as isize || lo >= hi {
                rows.iter_mut().for_each(|p| p[..=len].fill(0.0));
                continue;
            }
            let row = &plane[y as usize * w..][..w];
            let line = &mut line[..span];
            line[..lo].fill(0.0);
            line[hi..].fill(0.0);
            let start = (first + lo as isize) as usize;
            line[lo..hi].copy_from_slice(&row[start..start + hi - lo]);
            for (k, q) in line.chunks_exact(4).enumerate() {
                for (p, &val) in q.iter().enumerate() {
                    rows[p][k] = val;
                }
            }
        }
        // Across each row, then down each column.
        for (rows, out) in phases.iter().zip(across.iter_mut()) {
            for k in 0..len {
                let d = [
                    rows[0][k],
                    rows[1][k],
                    rows[2][k],
                    rows[3][k],
                    rows[0][k + 1],
                    rows[1][k + 1],
                ];
                for (o, val) in out.iter_mut().zip(bt(d)) {
                    o[k] = val;
                }
            }
        }
        for s in 0..6 {
            for k in 0..len {
                let col = bt(std::array::from_fn(|r| across[r][s][k]));
                for (a, val) in col.into_iter().enumerate() {
                    t[a * 6 + s][k] = val;
                }
            }
        }
        for (xi, t) in t.iter().enumerate() {
            let at = base + xi * step + ci * conv.nr;
            v[at..at + len].copy_from_slice(&t[..len]);
        }
    }
}

/// Output pixels of the segment's tiles for channels `o0..o1`: `Aᵀ M A` plus the bias, the residual, the ReLU;
/// the tiles' rows and columns past the map's edge are dropped.
///
/// # Safety
/// `out` holds the conv's whole output, and no other thread writes these tiles' pixels of these channels.
#[inline(always)]
pub(super) unsafe fn output(
    conv: &Conv,
    m: &[f32],
    seg: Segment,
    (o0, o1): (usize, usize),
    residual: Option<&[f32]>,
    out: Out,
) {
    let (_, h, w) = conv.chw;
    let block = conv.block();
    let len = seg.len.min(N);
    let rows = (h - 4 * seg.ty).min(4);
    let x0 = 4 * seg.tx;
    let valid = (4 * len).min(w - x0);
    let (first, step) = (conv.at(0, 0, seg.slot, block), conv.xi_step(block));
    let mut down = [[[0f32; N]; 6]; 4];
    let mut y = [0f32; 4 * N];
    for o in o0..o1 {
        let base = first + (o - o0) * conv.nr;
        let mv: [&[f32]; XI] = std::array::from_fn(|xi| &m[base + xi * step..][..len]);
        let bias = conv.bias[o];
        for s in 0..6 {
            for k in 0..len {
                let col = at(std::array::from_fn(|r| mv[r * 6 + s][k]));
                for (a, val) in col.into_iter().enumerate() {
                    down[a][s][k] = val;
                }
            }
        }
        let image = (seg.image * conv.out_channels + o) * h * w;
        for (a, d) in down.iter().enumerate().take(rows) {
            for k in 0..len {
                let row = at(std::array::from_fn(|s| d[s][k]));
                for (b, val) in row.into_iter().enumerate() {
                    y[4 * k + b] = val + bias;
                }
            }
            let at = image + (4 * seg.ty + a) * w + x0;
            // SAFETY: the row's pixels of this segment, inside the map (`valid`), this task's alone.
            let dst = std::slice::from_raw_parts_mut(out.0.add(at), valid);
            let y = &y[..valid];
            // NaN stays NaN without the ReLU (and becomes 0 with it, as in the other kernels).
            match (residual.map(|r| &r[at..at + valid]), conv.relu) {
                (Some(r), true) => dst
                    .iter_mut()
                    .zip(y.iter().zip(r))
                    .for_each(|(d, (&v, &r))| *d = (v + r).max(0.0)),
                (Some(r), false) => dst.iter_mut().zip(y.iter().zip(r)).for_each(|(d, (&v, &r))| *d = v + r),
                (None, true) => dst.iter_mut().zip(y).for_each(|(d, &v)| *d = v.max(0.0)),
                (None, false) => dst.copy_from_slice(y),
            }
        }
    }
}

/// The transforms with AVX-512: 16 tiles of a segment per vector.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86::{first, inside, store};
    use super::super::{Conv, Segment};
    use super::XI;

    /// [`super::bt`] on vectors.
    #[inline(always)]
    unsafe fn bt(d: [__m512; 6]) -> [__m512; 6] {
        let (four, five, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0), _mm512_set1_ps(2.0));
        let outer = _mm512_sub_ps(d[4], d[2]);
        [
            _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
            _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4])),
            _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3])),
            _mm512_fmadd_ps(two, _mm512_sub_ps(d[3], d[1]), outer),
            _mm512_fmadd_ps(two, _mm512_sub_ps(d[1], d[3]), outer),
            _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
        ]
    }

    /// [`super::at`] on vectors.
    #[inline(always)]
    unsafe fn at(m: [__m512; 6]) -> [__m512; 4] {
        let (sum, diff) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (sum2, diff2) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], sum), sum2),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), diff2, diff),
            _mm512_fmadd_ps(_mm512_set1_ps(4.0), sum2, sum),
            _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), diff2, diff), m[5]),
        ]
    }

    /// Up to 8 tiles of one tile row in a vector: the first half's from lane 0, the second's right after them. A
    /// vector takes 16 tiles of one segment (its halves 8 tiles apart in one row), or, where two consecutive segments
    /// (tile rows) have at most 8 tiles each (ResNet's 28x28 maps: 7), one segment per half: consecutive slots of the
    /// chunk in consecutive lanes, as `V` and `M` hold them, so that no lane idles for want of tiles in a row.
    #[derive(Clone, Copy)]
    struct Half {
        image: usize,
        ty: usize,
        /// The tile column of the half's first lane.
        tx: usize,
        /// The chunk slot of the half's first lane (its place in `V` and `M`).
        slot: usize,
        /// Tiles (lanes) in the half that exist.
        len: usize,
    }

    impl Half {
        /// Tiles `from..` of segment `s`, at most 8.
        fn of(s: Segment, from: usize) -> Half {
            Half {
                image: s.image,
                ty: s.ty,
                tx: s.tx + from,
                slot: s.slot + from,
                len: s.len.saturating_sub(from).min(8),
            }
        }
    }

    /// Where a vector's lanes go in `V` or `M` (`place`: a slot's index there): one masked store at the first half's
    /// place where the second half's slots follow in the same strip (always within one segment), else one per half,
    /// the second's lanes `len..` placed `len` before its first slot.
    #[inline(always)]
    fn placed(hv: [Half; 2], place: impl Fn(usize) -> usize) -> [(usize, __mmask16); 2] {
        let (split, end) = (hv[0].len, hv[0].len + hv[1].len);
        let (lo, hi) = (place(hv[0].slot), place(hv[1].slot));
        match hi == lo + split {
            true => [(lo, first(end)), (0, 0)],
            false => [(lo, first(split)), (hi.wrapping_sub(split), first(end) & !first(split))],
        }
    }

    /// Column `p` of tile `k`'s patch is loaded column `4 k + p`: element `(4 k + p) % 32` of its half's pair of
    /// loads, for the patch columns `p` = 0-3.
    #[inline(always)]
    unsafe fn patch_columns() -> [__m512i; 4] {
        std::array::from_fn(|p| {
            let lanes: [i32; 16] = std::array::from_fn(|k| ((4 * k + p) % 32) as i32);
            _mm512_loadu_si512(lanes.as_ptr().cast())
        })
    }

    /// [`super::input`] 16 tiles at a time (see [`Half`]): per input row and half, four masked loads (zero outside
    /// the image: the columns of 8 tiles, and the same 4 columns on), and each of the six columns of the tiles'
    /// patches gathered from them by two permutes (one per half) and a blend.
    ///
    /// # Safety
    /// AVX-512F; `b`, if any, follows `a` in the chunk and [`super::pairs`] with it.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn input(conv: &Conv, x: &[f32], (a, b): (Segment, Option<Segment>), v: &mut [f32]) {
        let idx = patch_columns();
        match b {
            Some(b) => input_block::<true>(conv, x, [Half::of(a, 0), Half::of(b, 0)], v, &idx),
            None => (0..a.len)
                .step_by(16)
                .for_each(|blk| input_block::<false>(conv, x, [Half::of(a, blk), Half::of(a, blk + 8)], v, &idx)),
        }
    }

    /// One vector's tiles of [`input`]: two segments' (`PAIR`), or 16 of one (the second half the first's row, 8 tiles
    /// on: one row pointer and one store, as the compiler folds the pair's cases away).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn input_block<const PAIR: bool>(conv: &Conv, x: &[f32], hv: [Half; 2], v: &mut [f32], idx: &[__m512i; 4]) {
        let (c, h, w) = conv.chw;
        let step = conv.xi_step(c);
        let vp = v.as_mut_ptr();
        let zero = _mm512_setzero_ps();
        // Per half, its loads' offsets from its first column: two for the patch columns 0-3, two 4 columns on.
        const OFFSETS: [isize; 4] = [0, 16, 4, 20];
        // Per half: the six input rows under its tile row (offsets in a plane, inside the image or not), its first
        // column, its loads' masks.
        let ys0 = super::super::patch_rows::<6>(4 * hv[0].ty as isize - 1, (h, w));
        let ys1 = match PAIR {
            true => super::super::patch_rows::<6>(4 * hv[1].ty as isize - 1, (h, w)),
            false => ys0,
        };
        let start = [4 * hv[0].tx as isize - 1, 4 * hv[1].tx as isize - 1];
        let masks: [[__mmask16; 4]; 2] = std::array::from_fn(|i| {
            std::array::from_fn(|j| match PAIR && hv[i].len == 0 {
                true => 0,
                false => inside(start[i] + OFFSETS[j], w),
            })
        });
        // The second half's tiles from lane `split` on: its patch columns at `(4 (k - split) + p) % 32`, blended in.
        let split = match PAIR {
            true => hv[0].len,
            false => 8,
        };
        let idx_hi: [__m512i; 4] = match PAIR {
            true => {
                let shift = _mm512_set1_epi32(4 * split as i32);
                std::array::from_fn(|p| _mm512_and_si512(_mm512_sub_epi32(idx[p], shift), _mm512_set1_epi32(31)))
            }
            false => *idx,
        };
        let from_hi = !first(split);
        let stores = match PAIR {
            true => placed(hv, |slot| conv.at(0, 0, slot, c)),
            false => [(conv.at(0, 0, hv[0].slot, c), first(hv[0].len + hv[1].len)), (0, 0)],
        };
        for ci in 0..c {
            let plane = |t: &Half| x.as_ptr().add((t.image * c + ci) * h * w);
            let planes = [plane(&hv[0]), if PAIR { plane(&hv[1]) } else { plane(&hv[0]) }];
            let mut across = [[zero; 6]; 6];
            for r in 0..6 {
                let ok = [ys0[r].1, ys1[r].1];
                if !ok[0] && !ok[1] {
                    continue;
                }
                let rows = [
                    planes[0].wrapping_offset(ys0[r].0 + start[0]),
                    planes[1].wrapping_offset(ys1[r].0 + start[1]),
                ];
                // Loads 0-3: the first half's; 4-7: the second's.
                let l: [__m512; 8] = std::array::from_fn(|i| {
                    let (half, j) = (i / 4, i % 4);
                    let mask = if ok[half] { masks[half][j] } else { 0 };
                    _mm512_maskz_loadu_ps(mask, rows[half].wrapping_offset(OFFSETS[j]))
                });
                // Patch column `p` of every tile, from loads `q, q + 1` of each half.
                let column = |q: usize, p: usize| {
                    let lo = _mm512_permutex2var_ps(l[q], idx[p], l[q + 1]);
                    let hi = _mm512_permutex2var_ps(l[4 + q], idx_hi[p], l[4 + q + 1]);
                    _mm512_mask_blend_ps(from_hi, lo, hi)
                };
                across[r] = bt([
                    column(0, 0),
                    column(0, 1),
                    column(0, 2),
                    column(0, 3),
                    column(2, 0),
                    column(2, 1),
                ]);
            }
            let columns: [[__m512; 6]; 6] = std::array::from_fn(|s| std::array::from_fn(|r| across[r][s]));
            for (s, column) in columns.into_iter().enumerate() {
                for (k, val) in bt(column).into_iter().enumerate() {
                    for &(at, mask) in &stores {
                        if mask != 0 {
                            let to = vp.wrapping_add(at.wrapping_add((k * 6 + s) * step + ci * conv.nr));
                            _mm512_mask_storeu_ps(to, mask, val);
                        }
                    }
                }
            }
        }
    }

    /// The pixels of 16 tiles' row from the row's four pixels per tile (`y[b]`: pixel `b` of each tile): four
    /// vectors of 16 pixels, tiles 0-3, 4-7, 8-11, 12-15 (a 4 x 16 transpose).
    #[inline(always)]
    unsafe fn interleave(y: [__m512; 4]) -> [__m512; 4] {
        let pd = _mm512_castps_pd;
        let (t0, t1) = (_mm512_unpacklo_ps(y[0], y[1]), _mm512_unpackhi_ps(y[0], y[1]));
        let (t2, t3) = (_mm512_unpacklo_ps(y[2], y[3]), _mm512_unpackhi_ps(y[2], y[3]));
        // Tile 4 L + j in 128-bit lane L of r[j].
        let r = [
            _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t0), pd(t2))),
            _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t0), pd(t2))),
            _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t1), pd(t3))),
            _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t1), pd(t3))),
        ];
        let s0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(r[0], r[1]);
        let s1 = _mm512_shuffle_f32x4::<0b01_00_01_00>(r[2], r[3]);
        let s2 = _mm512_shuffle_f32x4::<0b11_10_11_10>(r[0], r[1]);
        let s3 = _mm512_shuffle_f32x4::<0b11_10_11_10>(r[2], r[3]);
        [
            _mm512_shuffle_f32x4::<0b10_00_10_00>(s0, s1),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(s0, s1),
            _mm512_shuffle_f32x4::<0b10_00_10_00>(s2, s3),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(s2, s3),
        ]
    }

    /// [`super::output`] 16 tiles at a time (see [`Half`]): per output row of the tiles, `Aᵀ` across, the four pixels
    /// of each tile interleaved into the row's order, the residual loaded and the output stored through masks that
    /// keep the pixels inside the map.
    ///
    /// # Safety
    /// As [`super::output`]; `b`, if any, follows `a` in the chunk and [`super::pairs`] with it.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn output(
        conv: &Conv,
        m: &[f32],
        (a, b): (Segment, Option<Segment>),
        rows: (usize, usize),
        residual: Option<&[f32]>,
        out: *mut f32,
    ) {
        match b {
            Some(b) => output_block::<true>(conv, m, [Half::of(a, 0), Half::of(b, 0)], rows, residual, out),
            None => (0..a.len).step_by(16).for_each(|blk| {
                output_block::<false>(conv, m, [Half::of(a, blk), Half::of(a, blk + 8)], rows, residual, out)
            }),
        }
    }

    /// One vector's tiles of [`output`] (see [`input_block`]).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn output_block<const PAIR: bool>(
        conv: &Conv,
        m: &[f32],
        hv: [Half; 2],
        (o0, o1): (usize, usize),
        residual: Option<&[f32]>,
        out: *mut f32,
    ) {
        let (_, h, w) = conv.chw;
        let block = conv.block();
        let step = conv.xi_step(block);
        debug_assert!(m.len() >= XI * step);
        let mp = m.as_ptr();
        // The row's pixels as `interleave` gives them: the first half's tiles' from 0, the second's from `4 * split`
        // (one run of 16 tiles for a single segment). Per half: its output rows inside the map, where its pixels
        // start and where those inside the map end in that order, and so each of the four vectors' lanes that are
        // its.
        let halves = if PAIR { 2 } else { 1 };
        let lens = match PAIR {
            true => [hv[0].len, hv[1].len],
            false => [hv[0].len + hv[1].len, 0],
        };
        let rows: [usize; 2] = std::array::from_fn(|i| (h - 4 * hv[i].ty).min(4));
        let from = [0, 4 * hv[0].len];
        let to: [usize; 2] = std::array::from_fn(|i| match lens[i] {
            0 => from[i],
            n => from[i] + (4 * n).min(w - 4 * hv[i].tx),
        });
        let masks: [[__mmask16; 4]; 2] = std::array::from_fn(|i| {
            std::array::from_fn(|q| first(to[i].saturating_sub(16 * q)) & !first(from[i].saturating_sub(16 * q)))
        });
        let loads = match PAIR {
            true => placed(hv, |slot| conv.at(0, 0, slot, block)),
            false => [(conv.at(0, 0, hv[0].slot, block), 0xffff), (0, 0)],
        };
        for o in o0..o1 {
            let shift = (o - o0) * conv.nr;
            let bias = _mm512_set1_ps(conv.bias[o]);
            // `Aᵀ` down each column, then across each of the four rows.
            let mut columns = [[_mm512_setzero_ps(); 4]; 6];
            for (s, column) in columns.iter_mut().enumerate() {
                let mut d = [_mm512_setzero_ps(); 6];
                for (r, x) in d.iter_mut().enumerate() {
                    *x = load_m::<PAIR>(mp, &loads, shift + (r * 6 + s) * step);
                }
                *column = at(d);
            }
            let down: [[__m512; 6]; 4] = std::array::from_fn(|a| std::array::from_fn(|s| columns[s][a]));
            for (r, &row) in down.iter().enumerate().take(rows[0].max(rows[1])) {
                let mut y = at(row);
                for v in y.iter_mut() {
                    *v = _mm512_add_ps(*v, bias);
                }
                for (q, px) in interleave(y).into_iter().enumerate() {
                    for (i, t) in hv.iter().enumerate().take(halves) {
                        if r >= rows[i] || masks[i][q] == 0 {
                            continue;
                        }
                        let plane = (t.image * conv.out_channels + o) * h * w;
                        // Pixel `16 q` of the interleaved row, in the half's output row (before its first pixel for
                        // the second half of a pair: only its lanes are stored).
                        let at_px = (plane + (4 * t.ty + r) * w + 4 * t.tx + 16 * q).wrapping_sub(from[i]);
                        store(px, (out, at_px), masks[i][q], residual, conv.relu);
                    }
                }
            }
        }
    }

    /// 16 lanes of `M` at `off` past each place of `loads` (see [`placed`]): one load, and for a pair whose second
    /// half lies elsewhere a masked load of its lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_m<const PAIR: bool>(mp: *const f32, loads: &[(usize, __mmask16); 2], off: usize) -> __m512 {
        let v = _mm512_loadu_ps(mp.add(loads[0].0 + off));
        match PAIR && loads[1].1 != 0 {
            true => _mm512_mask_loadu_ps(v, loads[1].1, mp.wrapping_add(loads[1].0.wrapping_add(off))),
            false => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panel's transformed weights are `G g Gᵀ` with the module's `G`, computed here as the matrix products in
    /// f64, for both panel heights.
    #[test]
    fn panel_transform_is_g_g_gt() {
        let gm: [[f64; 3]; 6] = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        super::super::tests::assert_transform_is_g_g_gt(&gm, transform_panel);
    }

    /// The portable transform gives the two-channel one's bits (the same operations lane for lane), for even and
    /// odd channel counts.
    #[test]
    fn paired_panel_transform_matches_the_portable_one_bit_for_bit() {
        for c in [1usize, 2, 7, 64] {
            let g: Vec<f32> = (0..c * 9 * 8).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let (mut want, mut got) = (vec![f32::NAN; XI * u_step(c, 8)], vec![f32::NAN; XI * u_step(c, 8)]);
            transform_lanes::<8, 8>(&g, c, (0, c), &mut want);
            transform_pairs(&g, c, &mut got);
            for ci in 0..c {
                for xi in 0..XI {
                    let at = xi * u_step(c, 8) + ci * 8;
                    assert_eq!(got[at..at + 8], want[at..at + 8], "c {c}: channel {ci}, xi {xi}");
                }
            }
        }
    }

    /// Whole convolutions as F(4x4, 3x3), with the AVX-512 transforms and with the portable ones, on each micro-kernel
    /// this CPU runs, against the definition: maps whose edges cut tiles, chunks spanning tile rows and images, tile
    /// rows of more than 16 tiles, maps of one and two rows, a depth of one channel and of 128, on one thread and on
    /// two.
    #[test]
    fn convolutions_match_the_definition() {
        use crate::layers::engine::tests::{max_err, naive, uniform};
        use crate::layers::engine::Engine;
        use crate::layers::ConvSpec;
        // (images, input channels, output channels, height, width)
        // (Output channels in whole panels of both kernels' rows, 6 and 8.)
        let cases = [
            (2, 24, 24, 23, 29),
            (1, 8, 48, 64, 64),
            (3, 128, 24, 17, 18),
            (2, 1, 24, 10, 70),
            (1, 40, 24, 3, 5),
            (1, 3, 24, 1, 300),
            (2, 5, 24, 2, 2),
        ];
        for engine in [Engine::Avx512, Engine::Avx2Fma]
            .into_iter()
            .filter(|e| e.is_supported())
        {
            let Some(crate::layers::engine::MicroKernel {
                tile: kernel,
                mr,
                nr,
                extra,
            }) = engine.micro_kernel()
            else {
                continue;
            };
            for (i, &(n, c, o, h, w)) in cases.iter().enumerate() {
                let mut next = uniform(i as u64 + 7);
                let x: Vec<f32> = (0..n * c * h * w).map(|_| next()).collect();
                let weight: Vec<f32> = (0..o * c * 9).map(|_| next()).collect();
                let bias: Vec<f32> = (0..o).map(|_| next()).collect();
                let res: Vec<f32> = (0..n * o * h * w).map(|_| next()).collect();
                let spec = ConvSpec::new(c, o, 3, 1);
                let want = naive(&x, (n, c, h, w), &weight, &bias, &spec, Some(&res), true);
                // The weights in the micro-kernel's panels: step `(ci, tap)` of row `r` at `(ci * 9 + tap) * mr + r`.
                let mut g = vec![0f32; o * c * 9];
                for oc in 0..o {
                    for k in 0..c * 9 {
                        g[(oc / mr * c * 9 + k) * mr + oc % mr] = weight[oc * c * 9 + k];
                    }
                }
                for (transforms, threads) in [(engine, 1), (engine, 2), (Engine::Portable, 2)] {
                    let conv = Conv {
                        g: &g,
                        kernel,
                        mr,
                        nr,
                        extra,
                        bias: &bias,
                        relu: true,
                        chw: (c, h, w),
                        out_channels: o,
                        engine: transforms,
                        tile: super::super::Tile::F4,
                    };
                    let mut out = vec![f32::NAN; n * o * h * w];
                    // SAFETY: `out` holds the whole output; the kernel runs on this CPU (`is_supported`).
                    unsafe { conv.run(&x, n, Some(&res), out.as_mut_ptr(), threads) };
                    let (err, tol) = (max_err(&out, &want), 2e-5 * (c * 9) as f32 + 1e-5);
                    assert!(err <= tol, "{engine:?} ({transforms:?} transforms, {threads} threads): {n}x{c}x{h}x{w} -> {o}: {err} > {tol}");
                }
            }
        }
    }

    /// The one-dimensional transforms compute a 3-tap correlation of six inputs: `Aᵀ [(G g) ⊙ (Bᵀ d)]` is the
    /// four outputs, against the definition.
    #[test]
    fn transforms_compute_a_correlation() {
        let d = [0.3f32, -1.2, 0.7, 2.0, -0.4, 1.1];
        let g = [0.5f32, -0.25, 0.9];
        let gg = g_line::<1>([g[0]], [g[1]], [g[2]]);
        let bd = bt(d);
        let y = at(std::array::from_fn(|i| gg[i][0] * bd[i]));
        for (i, &got) in y.iter().enumerate() {
            let want: f32 = (0..3).map(|j| d[i + j] * g[j]).sum();
            assert!((got - want).abs() < 1e-5, "output {i}: {got} vs {want}");
        }
    }
}
