//! A direct convolution for a network's thin, strided stem (ResNet's 7x7 stride-2 conv of 3 input channels,
//! the deep stem's first 3x3 one), on the AVX-512 engine.
//!
//! As a GEMM, such a conv is shallow (147 steps for the 7x7) and very wide (a column per output pixel), and
//! its right-hand operand is a gather: every packed value comes from a stride-2 step through the padded
//! image, and there are as many of them per image as the kernel has taps times the pixels out, for only
//! `out_channels` multiply-adds each. Here nothing is packed but the input, once per image and cheaply:
//! each padded input row is split into its even and odd columns (two "phase" rows). Output pixel `ox` of a
//! row then reads tap `kx` at column `ox + kx / 2` of phase `kx % 2`, so 16 neighbouring outputs read 16
//! neighbouring floats, one unaligned load, for every tap.
//!
//! A register tile is 8 output channels (one panel of the weights, as the GEMM lowering holds them: the
//! weights stay where they are) x [`NV`] vectors of 16 output pixels: per tap, `NV` loads of the phase
//! rows, 8 broadcast weights, `8 * NV` FMAs. The tiles walk the output's 16-pixel vectors in order, row
//! after row (a row's last vector masked at the store); each thread takes a run of them and sweeps every
//! panel over it. Bias, residual and ReLU are applied before the one store. Each output's sum runs over the
//! taps in the weights' order (channel, row, column): the definition's order.

use rayon::prelude::*;

use crate::layers::pool::{pool_row, pooled, window_rows};

/// Output channels per register tile: the AVX-512 engine's panel rows.
pub(crate) const MR: usize = 8;

/// 16-pixel vectors per register tile (24 accumulators, 3 + 8 loads per 24 FMAs).
pub(crate) const NV: usize = 3;

/// Register tiles per task at most: 27 rows of a 112-pixel-wide map (measured: 0.97x the time of 16 tiles at
/// batch 8; 4 tiles took 1.2x).
const TILES_PER_TASK: usize = 64;

/// Tasks per thread at least, where one image's tiles are spread over the pool (batch 1): whole tasks, so
/// that the threads' shares differ by at most one task in this many.
const TASKS_PER_THREAD: usize = 4;

/// Pooled rows per band of the fused max-pool (see [`Conv::run_pooled`]) at most: a quarter of a 224x224
/// image's 56, so that 29 conv rows of 8 channels (104 KiB) stay in L2 and a band recomputes 1 conv row in 29.
const BAND: usize = 14;

/// Pooled rows per band at least, where an image's bands are spread over the pool (at most 1 conv row
/// recomputed in 9).
const MIN_BAND: usize = 4;

/// True for the convs this lowering runs: ungrouped, undilated, stride 2, at most 4 input channels (an
/// image's), output channels in whole panels of [`MR`].
pub(crate) fn applies(spec: &crate::layers::ConvSpec) -> bool {
    spec.stride == 2
        && spec.groups == 1
        && spec.dilation == 1
        && spec.in_channels <= 4
        && spec.kernel >= 2
        && spec.out_channels.is_multiple_of(MR)
}

/// One direct convolution, borrowed from its packed conv.
pub(crate) struct Conv<'a> {
    /// The weights in panels of [`MR`] output channels: step `t` (tap `(c, ky, kx)` in OIHW order) of
    /// channel `i` of panel `p` at `(p * depth + t) * MR + i`.
    pub w: &'a [f32],
    /// One per output channel.
    pub bias: &'a [f32],
    pub relu: bool,
    /// Input channels, height and width.
    pub chw: (usize, usize, usize),
    pub out_channels: usize,
    pub kernel: usize,
    pub padding: usize,
    /// Followed by the 3x3 stride-2 max-pool (padding 1), fused (see [`Conv::run`]): the output is the
    /// pooled map.
    pub pool: bool,
}

/// The geometry of one image's phase rows and output.
#[derive(Clone, Copy)]
struct Geometry {
    /// Padded input rows per channel.
    ph: usize,
    /// Floats per phase row: the output row's vectors plus the kernel's reach, covering the padded width, in
    /// whole vectors.
    pw: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
    /// 16-pixel vectors per output row.
    vecs: usize,
}

impl Geometry {
    fn phases_len(&self, c: usize) -> usize {
        c * self.ph * 2 * self.pw
    }
}

impl Conv<'_> {
    fn geometry(&self) -> Geometry {
        let (_, h, w) = self.chw;
        let (k, p) = (self.kernel, self.padding);
        let (oh, ow) = ((h + 2 * p - k) / 2 + 1, (w + 2 * p - k) / 2 + 1);
        let vecs = ow.div_ceil(16);
        Geometry {
            ph: h + 2 * p,
            pw: (16 * vecs + (k - 1) / 2)
                .max((w + 2 * p).div_ceil(2))
                .next_multiple_of(16),
            oh,
            ow,
            vecs,
        }
    }

    /// Offset of tap `t` (OIHW order within one output channel's weights) in the phase rows, from the
    /// phase-row position of its output vector.
    fn tap_offsets(&self, g: &Geometry) -> Vec<usize> {
        let (c, k) = (self.chw.0, self.kernel);
        let mut taps = Vec::with_capacity(c * k * k);
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    taps.push(((ci * g.ph + ky) * 2 + kx % 2) * g.pw + kx / 2);
                }
            }
        }
        taps
    }

    /// Convolves `n` images of `x` into `out` (`n * out_channels * oh * ow` floats), adding `residual` (of
    /// the output's shape) where given; at batch 1 the output's vectors are spread over the pool.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` is valid for the whole output's writes.
    pub(crate) unsafe fn run(&self, x: &[f32], n: usize, residual: Option<&[f32]>, out: *mut f32, threads: usize) {
        if self.pool {
            debug_assert!(residual.is_none(), "a pooled stem conv has no residual");
            return self.run_pooled(x, n, out, threads);
        }
        let (c, h, w) = self.chw;
        let g = self.geometry();
        let taps = self.tap_offsets(&g);
        let (in_img, out_img) = (c * h * w, self.out_channels * g.oh * g.ow);
        debug_assert_eq!(x.len(), n * in_img);
        let out = Out(out);
        let total = g.oh * g.vecs;
        let tiles = total.div_ceil(NV);
        let per_task = |parallel: bool| match parallel {
            true => tiles.div_ceil(TASKS_PER_THREAD * threads).clamp(1, TILES_PER_TASK),
            false => TILES_PER_TASK,
        };
        let image = |i: usize, phases: &mut [f32], parallel: bool| {
            // SAFETY: AVX-512F (this function's contract).
            unsafe { self.split(&x[i * in_img..][..in_img], &g, phases, parallel) };
            let phases: &[f32] = phases;
            let res = residual.map(|r| &r[i * out_img..][..out_img]);
            let dst = out.offset(i * out_img);
            let step = per_task(parallel);
            let task = |first: usize| {
                let last = (first + step).min(tiles);
                // SAFETY: each task writes its own vectors of every channel.
                unsafe { self.tiles(phases, &taps, &g, (first * NV, (last * NV).min(total)), res, &dst) };
            };
            match parallel {
                true => (0..tiles).into_par_iter().step_by(step).for_each(task),
                false => (0..tiles).step_by(step).for_each(task),
            }
        };
        each_image(n, threads, g.phases_len(c), image);
    }

    /// Writes one image's padded phase rows (`parallel`: over the pool): row `y` of channel `c`, phase `q`,
    /// column `j` holds the padded image's `(y, 2 * j + q)`, zero outside the image.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    unsafe fn split(&self, x: &[f32], g: &Geometry, phases: &mut [f32], parallel: bool) {
        let (_, h, w) = self.chw;
        let p = self.padding;
        let row = |(r, pair): (usize, &mut [f32])| {
            let (ci, y) = (r / g.ph, r % g.ph);
            let (even, odd) = pair.split_at_mut(g.pw);
            if y < p || y - p >= h {
                even.fill(0.0);
                odd.fill(0.0);
                return;
            }
            let src = &x[(ci * h + y - p) * w..][..w];
            // SAFETY: AVX-512F (this function's contract); the phase rows are whole vectors (`geometry`).
            unsafe { x86::split_row(src, p, even, odd) };
        };
        match parallel {
            true => phases
                .par_chunks_mut(2 * g.pw)
                .with_min_len(64)
                .enumerate()
                .for_each(row),
            false => phases.chunks_mut(2 * g.pw).enumerate().for_each(row),
        }
    }

    /// Output vectors `vecs.0..vecs.1` (in row order) of every output channel.
    ///
    /// # Safety
    /// AVX-512F; `dst` covers the image's output, and no other thread writes these vectors.
    unsafe fn tiles(
        &self,
        phases: &[f32],
        taps: &[usize],
        g: &Geometry,
        vecs: (usize, usize),
        residual: Option<&[f32]>,
        dst: &Out,
    ) {
        let panels = self.w.len() / (taps.len() * MR);
        // Panel by panel over the task's vectors: the panel's weights (8 x 147 floats for the 7x7) stay in L1
        // while the phase rows stream from L2 (measured: 0.80x the time of every panel per tile, whose
        // weights do not fit beside the rows).
        for panel in 0..panels {
            let to = Target {
                out: dst.0,
                channel: panel * MR,
                plane: g.oh * g.ow,
                row0: 0,
            };
            self.panel_vectors(phases, taps, g, panel, vecs, residual, to);
        }
    }

    /// Output vectors `vecs.0..vecs.1` (in row order) of panel `panel`'s [`MR`] output channels, written
    /// to `to`.
    ///
    /// # Safety
    /// AVX-512F; `to` covers these vectors of the panel's channels (and `residual`, where given, the whole
    /// output), and no other thread writes them.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel_vectors(
        &self,
        phases: &[f32],
        taps: &[usize],
        g: &Geometry,
        panel: usize,
        vecs: (usize, usize),
        residual: Option<&[f32]>,
        to: Target,
    ) {
        let depth = taps.len();
        let one = |v: usize, count: usize| {
            let mut at = [Vector::default(); NV];
            for (j, a) in at.iter_mut().take(count).enumerate() {
                let (oy, vx) = ((v + j) / g.vecs, (v + j) % g.vecs);
                let ox = 16 * vx;
                *a = Vector {
                    src: 2 * oy * 2 * g.pw + ox,
                    dst: (oy - to.row0) * g.ow + ox,
                    lanes: (g.ow - ox).min(16),
                };
            }
            let tile = Tile {
                phases: phases.as_ptr(),
                taps,
                w: self.w[panel * depth * MR..].as_ptr(),
                at,
                channel: to.channel,
                plane: to.plane,
                bias: &self.bias[panel * MR..][..MR],
                residual: residual.map(|r| r.as_ptr()),
                relu: self.relu,
                out: to.out,
            };
            match count {
                1 => x86::kernel::<1>(&tile),
                2 => x86::kernel::<2>(&tile),
                _ => x86::kernel::<NV>(&tile),
            }
        };
        let mut v = vecs.0;
        while v < vecs.1 {
            let count = (vecs.1 - v).min(NV);
            one(v, count);
            v += count;
        }
    }

    /// [`Conv::run`] with the max-pool fused: each task takes a band of pooled rows of one image and, panel
    /// by panel, computes the conv rows their windows cover into this thread's scratch (8 channels of ~30
    /// rows: in L2), then pools them into the output. The conv's map is never written out (3.2 MB per image
    /// for ResNet's stem) nor read back by a separate pool; a band recomputes the one conv row it shares
    /// with the band before. The values are the unfused conv's, bit for bit, and the max is exact: the
    /// output is the unfused pair's.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` is valid for the whole pooled output's writes.
    unsafe fn run_pooled(&self, x: &[f32], n: usize, out: *mut f32, threads: usize) {
        let (c, h, w) = self.chw;
        let g = self.geometry();
        let taps = self.tap_offsets(&g);
        let (ph, pw) = (pooled(g.oh), pooled(g.ow));
        let (in_img, out_img) = (c * h * w, self.out_channels * ph * pw);
        debug_assert_eq!(x.len(), n * in_img);
        let out = Out(out);
        // At batch 1 the bands go around the pool, two per thread (whole bands, so the shares are even).
        let band = |parallel: bool| match parallel {
            true => ph.div_ceil(2 * threads).clamp(MIN_BAND, BAND),
            false => BAND,
        };
        let image = |i: usize, phases: &mut [f32], parallel: bool| {
            // SAFETY: AVX-512F (this function's contract).
            unsafe { self.split(&x[i * in_img..][..in_img], &g, phases, parallel) };
            let phases: &[f32] = phases;
            let dst = out.offset(i * out_img);
            let band = band(parallel);
            let task = |b: usize| {
                let rows = (b * band, ((b + 1) * band).min(ph));
                // SAFETY: each task writes its own pooled rows of every channel.
                unsafe { self.band(phases, &taps, &g, rows, (ph, pw), &dst) };
            };
            match parallel {
                true => (0..ph.div_ceil(band)).into_par_iter().for_each(task),
                false => (0..ph.div_ceil(band)).for_each(task),
            }
        };
        each_image(n, threads, g.phases_len(c), image);
    }

    /// Pooled rows `rows.0..rows.1` of every output channel of one image (`pooled`: the pooled map's height
    /// and width), see [`Conv::run_pooled`].
    ///
    /// # Safety
    /// AVX-512F; `dst` covers the image's pooled output, and no other thread writes these rows.
    unsafe fn band(
        &self,
        phases: &[f32],
        taps: &[usize],
        g: &Geometry,
        (r0, r1): (usize, usize),
        (ph, pw): (usize, usize),
        dst: &Out,
    ) {
        // The conv rows the band's windows cover.
        let y0 = window_rows(r0, g.oh).0;
        let y1 = window_rows(r1 - 1, g.oh).1 + 1;
        let plane = (y1 - y0) * g.ow;
        let panels = self.w.len() / (taps.len() * MR);
        super::with_buffer(&BAND_ROWS, MR * plane + 2 * pw + 1, |scratch| {
            let (conv, rows) = scratch.split_at_mut(MR * plane);
            // `pool_row`'s row maxima: past the conv's width, below every value.
            rows.fill(f32::NEG_INFINITY);
            for panel in 0..panels {
                let to = Target {
                    out: conv.as_mut_ptr(),
                    channel: 0,
                    plane,
                    row0: y0,
                };
                // SAFETY: `to` holds the band's conv rows of the panel's channels (this function's contract).
                unsafe { self.panel_vectors(phases, taps, g, panel, (y0 * g.vecs, y1 * g.vecs), None, to) };
                for (i, src) in conv.chunks_exact(plane).enumerate() {
                    let channel = dst.0.add((panel * MR + i) * ph * pw);
                    for oy in r0..r1 {
                        let (first, last) = window_rows(oy, g.oh);
                        // SAFETY: row `oy` of this channel, within the pooled output; this task's alone.
                        let out_row = unsafe { std::slice::from_raw_parts_mut(channel.add(oy * pw), pw) };
                        pool_row(src, g.ow, (first - y0, last - y0), rows, out_row);
                    }
                }
            }
        })
    }
}

/// Runs `image(i, phases, parallel)` for each of `n` images, with this thread's buffer of `len` floats for its
/// phase rows: at batch 1 (or on one thread) in turn, each image spread over the pool where it has threads
/// (`parallel`); else the images over the pool, one per task.
fn each_image(n: usize, threads: usize, len: usize, image: impl Fn(usize, &mut [f32], bool) + Sync) {
    if n == 1 || threads == 1 {
        super::with_buffer(&PHASES, len, |phases| {
            (0..n).for_each(|i| image(i, phases, threads > 1))
        });
    } else {
        (0..n)
            .into_par_iter()
            .for_each(|i| super::with_buffer(&PHASES, len, |phases| image(i, phases, false)));
    }
}

/// Where [`Conv::panel_vectors`] writes: output channel `channel + i` (of the panel's `i`), output pixel `(oy,
/// ox)` at `out + (channel + i) * plane + (oy - row0) * ow + ox`: the output itself, or (pooled) the
/// thread's scratch for a band of rows from `row0` on.
#[derive(Clone, Copy)]
struct Target {
    out: *mut f32,
    channel: usize,
    plane: usize,
    row0: usize,
}

/// One output vector of a tile: where its first tap reads in the phase rows, where it writes within an
/// output plane, and how many of its 16 lanes are in the row.
#[derive(Clone, Copy, Default)]
struct Vector {
    src: usize,
    dst: usize,
    lanes: usize,
}

/// What [`x86::kernel`] computes: [`MR`] output channels from `channel` on, over the vectors `at`.
struct Tile<'a> {
    phases: *const f32,
    taps: &'a [usize],
    /// The panel's weights, [`MR`] per tap.
    w: *const f32,
    at: [Vector; NV],
    channel: usize,
    /// Floats per output channel.
    plane: usize,
    bias: &'a [f32],
    residual: Option<*const f32>,
    relu: bool,
    out: *mut f32,
}

mod x86 {
    use std::arch::x86_64::*;

    use super::{Tile, MR};

    /// Splits one input row `src`, padded by `p` zeros on each side (and as many more on the right as the
    /// phase rows hold), into its even and odd columns: `even[j]` is padded column `2j`, `odd[j]` column
    /// `2j + 1`. Per 16 of each, two masked loads (lanes outside the row read as zeros) and two permutes.
    ///
    /// # Safety
    /// AVX-512F; `even` and `odd` are equally long, in whole vectors.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_row(src: &[f32], p: usize, even: &mut [f32], odd: &mut [f32]) {
        let pick_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let pick_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let w = src.len() as isize;
        // The 16 input values from column `start` on, zero where outside the row.
        let load = |start: isize| {
            let (lo, hi) = ((-start).clamp(0, 16), (w - start).clamp(0, 16));
            if hi <= lo {
                return _mm512_setzero_ps();
            }
            let mask = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16;
            // SAFETY: only the lanes in the row are read (masked-off lanes do not fault).
            unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().wrapping_offset(start)) }
        };
        for (j, (e, o)) in even.chunks_exact_mut(16).zip(odd.chunks_exact_mut(16)).enumerate() {
            let start = 32 * j as isize - p as isize;
            let (a, b) = (load(start), load(start + 16));
            _mm512_storeu_ps(e.as_mut_ptr(), _mm512_permutex2var_ps(a, pick_even, b));
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_permutex2var_ps(a, pick_odd, b));
        }
    }

    /// The first `V` vectors of `t`.
    ///
    /// # Safety
    /// AVX-512F; the phase rows cover every tap's 16 floats from each vector's `src`; the output (and
    /// residual) cover each vector's `lanes` floats in all [`MR`] channels.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel<const V: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        let mut src = [t.phases; V];
        for (s, a) in src.iter_mut().zip(&t.at) {
            *s = t.phases.add(a.src);
        }
        let mut w = t.w;
        for &tap in t.taps {
            let mut x = [_mm512_setzero_ps(); V];
            for (x, s) in x.iter_mut().zip(&src) {
                *x = _mm512_loadu_ps(s.add(tap));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let wi = _mm512_set1_ps(*w.add(i));
                for (a, &x) in row.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(x, wi, *a);
                }
            }
            w = w.add(MR);
        }
        for (i, row) in acc.iter().enumerate() {
            let plane = (t.channel + i) * t.plane;
            let bias = _mm512_set1_ps(t.bias[i]);
            for (a, v) in row.iter().zip(&t.at) {
                let mask: __mmask16 = ((1u32 << v.lanes) - 1) as u16;
                let mut y = _mm512_add_ps(*a, bias);
                if let Some(r) = t.residual {
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, r.add(plane + v.dst)));
                }
                if t.relu {
                    y = _mm512_max_ps(y, _mm512_setzero_ps());
                }
                _mm512_mask_storeu_ps(t.out.add(plane + v.dst), mask, y);
            }
        }
    }
}

thread_local! {
    /// One image's phase rows, kept per thread so that steady-state inference does not allocate them.
    static PHASES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A band's conv rows of one panel and the pool's row maxima (see [`Conv::band`]), kept per thread.
    static BAND_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output pointer the tasks share (each writes its own vectors).
struct Out(*mut f32);
// SAFETY: only used for disjoint writes (see `Conv::run`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The output `at` floats on (a method, so that closures capture the whole `Out`, which is `Sync`).
    ///
    /// # Safety
    /// `at` is within the output.
    unsafe fn offset(&self, at: usize) -> Out {
        Out(self.0.add(at))
    }
}
