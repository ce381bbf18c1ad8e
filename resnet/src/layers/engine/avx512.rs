//! The AVX-512F micro-kernels: a tile of C of `MR` output channels x `16 * NV` pixels held in registers.
//! Each step of the depth loads one packed row of B (`NV` vectors) and broadcasts each of the 8 output
//! channels' weights from the packed weight panel: a full strip runs 8 x 48 (24 accumulators; 8 + 3 loads
//! for 24 FMAs of 16 lanes), a strip's narrower remainder 8 x 32 or 8 x 16. The partial last vector of a
//! strip and the rows past the tile's end are masked at the store. A remainder of at most four columns (a 7x7
//! map's 49th, a 14x14 map's last four) rides on a full strip's tile where one comes before it in the block
//! (`Extra`: one or two columns per tile, 8 output channels per 8-lane vector), else gets a tile of its own,
//! vectorised over the 8 output channels (`narrow`).

use std::arch::x86_64::*;

use super::{Ahead, MicroTile};

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
        // A full strip carrying one or two of the next strip's columns (see [`Extra`]); three or four: the
        // registers they take would spill the accumulators (measured: 42 stack accesses per two steps for four),
        // so they go to the narrow kernel after the strip's own tile.
        3 if t.extra.cols > 0 => match (t.fetch.some(), t.extra.cols) {
            (true, 1) => kernel::<3, true, 1>(t),
            (true, 2) => kernel::<3, true, 2>(t),
            (false, 1) => kernel::<3, false, 1>(t),
            (false, 2) => kernel::<3, false, 2>(t),
            _ => {
                tile(&MicroTile {
                    extra: super::Extra::NONE,
                    ..*t
                });
                tile(&t.extra.tile(t));
            }
        },
        // A strip's last few columns on their own (a 7x7 map's 49th, a 14x14 map's last 4, where no full strip
        // carries them): across the output channels.
        1 if t.cols <= NARROW => match t.cols {
            1 => narrow::<1>(t),
            2 => narrow::<2>(t),
            3 => narrow::<3>(t),
            _ => narrow::<4>(t),
        },
        // With lines to fetch ahead, or without (the depth loop as it was, free of the fetch's state).
        1 if t.fetch.some() => kernel::<1, true, 0>(t),
        2 if t.fetch.some() => kernel::<2, true, 0>(t),
        _ if t.fetch.some() => kernel::<3, true, 0>(t),
        1 => kernel::<1, false, 0>(t),
        2 => kernel::<2, false, 0>(t),
        _ => kernel::<3, false, 0>(t),
    }
}

/// The kernel: `NV` vectors of columns, fetching ahead (`AHEAD`) or not, and `E` (one or two) extra columns from
/// [`MicroTile::extra`] (`NV` = 3 only): per step one 8-lane load of the panel's `MR` weights, whose line the
/// broadcasts just read, and one 8-lane FMA per extra column with its value broadcast from the strip, 24 + `E`
/// FMAs per step, the accumulators still in registers. The extra columns' sums are chains one FMA per step long,
/// which the step's 24 others give the time to finish; each is summed in the depth's order, as the 16-lane
/// kernel sums a column, so the extra columns come out as a tile of their own would give them, to the bit.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel<const NV: usize, const AHEAD: bool, const E: usize>(t: &MicroTile) {
    const {
        assert!(
            E == 0 || (NV == 3 && E <= 2 && MR == 8),
            "one or two extra columns beside a full strip"
        )
    };
    debug_assert_eq!(t.extra.cols, E);
    let mut ex = [_mm256_setzero_ps(); E];
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    // A block's last conv: the residual's lines and the output's, fetched while the depth loop runs. At batch
    // 8 both are larger than the cache (ResNet-50 layer1's 64 -> 256 1x1: 25 MB each), and with the hardware
    // prefetcher alone that conv took 9-13 % longer, layer3's 256 -> 1024 5-11 %; no change at batch 1 (where
    // they are in cache), nor on convs without a residual (their stores alone gained nothing from it).
    if let Some((r, ld)) = t.epilogue.and_then(|e| e.residual) {
        for i in 0..t.rows.min(MR) {
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(i * ld + 16 * v).cast());
                _mm_prefetch::<_MM_HINT_T0>(t.c.wrapping_add(i * t.ldc + 16 * v).cast());
            }
        }
    }
    // One step `kk` of the depth: a row of the strip times each of the panel's `MR` weights (and the extra
    // columns' row times all of them).
    let step = |acc: &mut [[__m512; NV]; MR], ex: &mut [__m256; E], kk: usize| {
        let (a, b) = (t.a.add(kk * MR), t.b.add(kk * NR));
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_load_ps(b.add(16 * v));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*a.add(i));
            for (a, &b) in row.iter_mut().zip(&bv) {
                *a = _mm512_fmadd_ps(w, b, *a);
            }
        }
        if E > 0 {
            let (w, e) = (_mm256_loadu_ps(a), t.extra.b.add(kk * NR));
            for (c, x) in ex.iter_mut().enumerate() {
                *x = _mm256_fmadd_ps(w, _mm256_set1_ps(*e.add(c)), *x);
            }
        }
    };
    // Two steps per iteration (half the loop's own instructions, which share the FMA ports), with the next
    // tile's weights for them prefetched: one 64-byte line, as two steps of a panel take.
    let pairs = t.k / 2;
    let mut ahead = if AHEAD { t.fetch.start() } else { Ahead::NONE };
    for kk in (0..2 * pairs).step_by(2) {
        _mm_prefetch::<_MM_HINT_T0>(t.next_a.wrapping_add(kk * MR).cast());
        if AHEAD {
            ahead.fetch();
        }
        step(&mut acc, &mut ex, kk);
        step(&mut acc, &mut ex, kk + 1);
    }
    if t.k % 2 == 1 {
        step(&mut acc, &mut ex, t.k - 1);
    }
    // What the loop had no steps left for.
    if AHEAD {
        while ahead.count > 0 {
            ahead.fetch();
        }
        t.fetch.finish(&ahead);
    }
    store::<NV>(t, &acc);
    if E > 0 {
        store_narrow(&t.extra.tile(t), &ex);
    }
}

/// Columns up to which a tile runs [`narrow`] rather than a 16-lane kernel.
pub(crate) const NARROW: usize = 4;

/// A tile of `C` (at most [`NARROW`]) columns, vectorised over its `MR` output channels instead of its columns:
/// per step of the depth one load of the panel's `MR` weights and one FMA per column, where the 16-lane
/// kernel spends `MR` FMAs per step on 16 lanes that are mostly past the strip's end (a 7x7 map's 49 =
/// 48 + 1 columns cost 32 FMAs per step instead of 24 + 1). Each column is one chain of FMAs in the depth's
/// order, as the 16-lane kernel and the extra columns ([`super::Extra`]) sum a column, so a column comes out to the
/// bit the same whichever of them a product's blocking gives it (a projection sharing its conv's packed input
/// is cut into its conv's column blocks, not its own, and must stay bit for bit the projection alone). The
/// chains are latency-bound for one or two columns (a quarter of the FMA units' rate for one), which the few
/// tiles that still come here (a product of at most 4 columns per block; 3 or 4 beside a single full strip)
/// can afford; where a product's columns split at `NR`, its last few ride on the full strips instead.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn narrow<const C: usize>(t: &MicroTile) {
    narrow_with::<C>(t, |acc, a, b| {
        _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_set1_ps(*b), acc)
    });
}

/// The narrow kernels' body (see [`narrow`]), shared with the bf16 one: `step(acc, a, b)` adds to `acc` the
/// products of one depth step (or pair of steps) of the panel's `MR` rows at `a` with column `b`'s value.
///
/// # Safety
/// AVX2 (only called from the kernels, which enable it); the tile's pointers cover what [`MicroTile`]
/// describes.
#[inline(always)]
pub(crate) unsafe fn narrow_with<const C: usize>(
    t: &MicroTile,
    step: impl Fn(__m256, *const f32, *const f32) -> __m256,
) {
    const { assert!(MR == 8 && C <= NARROW, "one 8-lane vector per panel row") };
    debug_assert_eq!(t.cols, C);
    let mut acc = [_mm256_setzero_ps(); C];
    for kk in 0..t.k {
        let (a, b) = (t.a.add(kk * MR), t.b.add(kk * NR));
        for (c, x) in acc.iter_mut().enumerate() {
            *x = step(*x, a, b.add(c));
        }
    }
    store_narrow(t, &acc);
}

/// Stores a narrow tile's sums (lane `i` of column `c`'s vector is C[i, c]): one value at a time (at most 32 per
/// depth block), with what C holds, the bias, the residual and the ReLU as [`store`] applies them.
///
/// # Safety
/// The tile's pointers cover what [`MicroTile`] describes.
#[inline(always)]
unsafe fn store_narrow<const C: usize>(t: &MicroTile, acc: &[__m256; C]) {
    let mut sums = [[0f32; MR]; C];
    for (dst, a) in sums.iter_mut().zip(acc) {
        _mm256_storeu_ps(dst.as_mut_ptr(), *a);
    }
    for i in 0..t.rows.min(MR) {
        let c = t.c.add(i * t.ldc);
        for (j, col) in sums.iter().enumerate() {
            let mut x = col[i];
            if !t.first {
                x += *c.add(j);
            }
            if let Some(e) = t.epilogue {
                x += *e.bias.add(i);
                if let Some((r, ld)) = e.residual {
                    x += *r.add(i * ld + j);
                }
                if e.relu {
                    x = x.max(0.0);
                }
            }
            *c.add(j) = x;
        }
    }
}

/// Stores a finished register tile: adds what C holds (after the first depth block), then on the last
/// block the bias, the residual and the ReLU, masking the partial last vector and the rows past `t.rows`.
/// Shared with the bf16 kernel. Inlined into the kernels (so the accumulators stay in registers rather than
/// being spilled to an array the call reads), hence no `target_feature` of its own.
///
/// # Safety
/// AVX-512F (only called from the kernels, which enable it); the tile's pointers cover what [`MicroTile`]
/// describes.
#[inline(always)]
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layers::engine::Epilogue;

    /// The narrow kernel gives what the 16-lane kernel gives on the same tile, to the bit (each column summed in
    /// the depth's order by both), for every column count it takes, depths odd and even, partial row counts, both
    /// depth-block positions and the whole epilogue.
    #[test]
    fn narrow_tiles_match_the_sixteen_lane_kernel() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        check_narrow(
            |t| unsafe { kernel::<1, false, 0>(t) },
            |t| unsafe { tile(t) },
            |(x, _)| x,
            true,
        );
    }

    /// A full strip's tile carrying extra columns ([`Extra`]) gives what its tile without them and a 16-lane tile of
    /// the extra columns alone give, to the bit (each column summed in the depth's order; three and four go to the
    /// narrow kernel, which sums so too); for every count, at odd and even depths, with
    /// partial rows, both depth-block positions and the whole epilogue, the extra output apart from the tile's;
    /// and nothing else is written.
    #[test]
    fn extra_columns_are_the_next_strips_tile() {
        use crate::layers::engine::{Extra, Fetch};
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let k = 37;
        // Values in [-0.5, 0.5).
        let mut next = {
            let mut u = crate::layers::engine::tests::uniform(11);
            move || 0.5 * u()
        };
        #[repr(C, align(64))]
        struct Aligned([f32; 37 * NR]);
        let (mut a, mut main, mut strip) = (
            Aligned([0.0; 37 * NR]),
            Aligned([0.0; 37 * NR]),
            Aligned([0.0; 37 * NR]),
        );
        a.0[..k * MR].iter_mut().for_each(|v| *v = next());
        main.0.iter_mut().for_each(|v| *v = next());
        // Output rows `ld` wide: the tile's 48 columns, then the extra ones from column `at`.
        let (ld, at) = (NR + 8, NR + 3);
        let bias: Vec<f32> = (0..MR).map(|_| next()).collect();
        let residual: Vec<f32> = (0..MR * ld).map(|_| next()).collect();
        let start: Vec<f32> = (0..MR * ld).map(|_| next()).collect();
        for cols in 1..=NARROW {
            for row in strip.0.chunks_exact_mut(NR) {
                row.iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = if j < cols { next() } else { 0.0 });
            }
            for (rows, first, epilogue, depth) in
                (0..32).map(|i| ([MR, 5][i % 2], i / 2 % 2 == 0, i / 4 % 2 == 0, [37, 36, 2, 1][i / 8]))
            {
                let epilogue = epilogue.then_some(Epilogue {
                    bias: bias.as_ptr(),
                    residual: Some((residual.as_ptr(), ld)),
                    relu: true,
                });
                let tile_of = |b: *const f32, cols: usize, c: &mut [f32], off: usize| MicroTile {
                    a: a.0.as_ptr(),
                    rows,
                    b,
                    cols,
                    k: depth,
                    next_a: a.0.as_ptr(),
                    c: c.as_mut_ptr().wrapping_add(off),
                    ldc: ld,
                    first,
                    epilogue: epilogue.map(|e| Epilogue {
                        residual: e.residual.map(|(r, ld)| (r.wrapping_add(off), ld)),
                        ..e
                    }),
                    fetch: Fetch::NONE,
                    extra: Extra::NONE,
                };
                let mut got = start.clone();
                let t = MicroTile {
                    extra: Extra {
                        b: strip.0.as_ptr(),
                        c: got.as_mut_ptr().wrapping_add(at),
                        r: residual.as_ptr().wrapping_add(at),
                        cols,
                    },
                    ..tile_of(main.0.as_ptr(), NR, &mut got, 0)
                };
                unsafe { tile(&t) };
                let mut want = start.clone();
                unsafe {
                    kernel::<3, false, 0>(&tile_of(main.0.as_ptr(), NR, &mut want, 0));
                    kernel::<1, false, 0>(&tile_of(strip.0.as_ptr(), cols, &mut want, at));
                }
                let what = format!(
                    "cols {cols} rows {rows} k {depth} first {first} epilogue {}",
                    epilogue.is_some()
                );
                assert!(got == want, "{what}: not the tiles' bits");
                for (i, (g, s)) in got.iter().zip(&start).enumerate() {
                    let (r, j) = (i / ld, i % ld);
                    if r >= rows || (NR..at).contains(&j) || j >= at + cols {
                        assert_eq!(g, s, "{what}: wrote outside the tiles at {i}");
                    }
                }
            }
        }
    }

    /// Runs `tile` and the 16-lane `wide` kernel on the same narrow tiles (see
    /// [`narrow_tiles_match_the_sixteen_lane_kernel`]) and compares them; the panel and strip hold
    /// `value(x, y)` for random `x` and `y` in [-0.5, 0.5) (f32: `x`; bf16 pairs: both). `exact`: to the bit,
    /// else to f32 rounding.
    pub(crate) fn check_narrow(
        wide: unsafe fn(&MicroTile),
        tile: unsafe fn(&MicroTile),
        value: impl Fn((f32, f32)) -> f32,
        exact: bool,
    ) {
        let k = 37;
        let mut next = {
            let mut s = 7u32;
            move || {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            }
        };
        let mut next = move || {
            let x = next();
            (x, next())
        };
        // 64-byte aligned panel and strip, as the kernels get them.
        #[repr(C, align(64))]
        struct Aligned([f32; 37 * NR]);
        let mut a = Aligned([0.0; 37 * NR]);
        let mut b = Aligned([0.0; 37 * NR]);
        a.0[..k * MR].iter_mut().for_each(|v| *v = value(next()));
        let mut next = move || next().0;
        let bias: Vec<f32> = (0..MR).map(|_| next()).collect();
        let ld = 11;
        let residual: Vec<f32> = (0..MR * ld).map(|_| next()).collect();
        let start: Vec<f32> = (0..MR * ld).map(|_| next()).collect();
        for cols in 1..=NARROW {
            for row in b.0[..k * NR].chunks_exact_mut(NR) {
                row.iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = if j < cols { value((next(), next())) } else { 0.0 });
            }
            for rows in [MR, 5] {
                for first in [true, false] {
                    for epilogue in [false, true] {
                        let run = |k: usize, f: unsafe fn(&MicroTile)| {
                            let mut c = start.clone();
                            let t = MicroTile {
                                a: a.0.as_ptr(),
                                rows,
                                b: b.0.as_ptr(),
                                cols,
                                k,
                                next_a: a.0.as_ptr(),
                                c: c.as_mut_ptr(),
                                ldc: ld,
                                first,
                                epilogue: epilogue.then_some(Epilogue {
                                    bias: bias.as_ptr(),
                                    residual: Some((residual.as_ptr(), ld)),
                                    relu: true,
                                }),
                                fetch: crate::layers::engine::Fetch::NONE,
                                extra: crate::layers::engine::Extra::NONE,
                            };
                            unsafe { f(&t) };
                            c
                        };
                        for depth in [k, 5, 1] {
                            let (want, got) = (run(depth, wide), run(depth, tile));
                            let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
                            let what = format!("cols {cols} rows {rows} k {depth} first {first} epilogue {epilogue}");
                            assert!(err <= 1e-5, "{what}: {err}");
                            assert!(!exact || got == want, "{what}: not the 16-lane kernel's bits");
                            // Outside the tile (rows past `rows`, columns past `cols`) nothing is written.
                            for (i, (g, s)) in got.iter().zip(&start).enumerate() {
                                if i / ld >= rows || i % ld >= cols {
                                    assert_eq!(g, s, "{what}: wrote outside the tile at {i}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
