//! Winograd's minimal filtering F(2x2, 3x3) for 3x3 stride-1 convolutions with padding 1: each 2x2 block of
//! output pixels (a *tile*) costs 16 multiplications per (input, output) channel pair instead of the 36 of the
//! direct convolution, 2.25x fewer. Its larger sibling F(4x4, 3x3) ([`Tile::F4`], transforms in `f4`) runs on
//! the same chunks, products and layouts with 36 positions `ξ` per tile of 4x4: 4x fewer.
//!
//! For one input channel, a tile reads the 4x4 patch `d` of input pixels around it, and
//! `y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015)
//! where `g` is the 3x3 kernel and
//!
//! ```text
//!       | 1    0    0  |         | 1  0 -1  0 |
//!   G = | 1/2  1/2 1/2 |    Bᵀ = | 0  1  1  0 |    Aᵀ = | 1  1  1  0 |
//!       | 1/2 -1/2 1/2 |         | 0 -1  1  0 |         | 0  1 -1 -1 |
//!       | 0    0    1  |         | 0  1  0 -1 |
//! ```
//!
//! Summed over input channels, the 16 elementwise products become 16 independent matrix products, one per
//! position `ξ` of the 4x4 transformed tile: `M[ξ] = U[ξ] · V[ξ]`, with `U[ξ]` (out x in) the transformed
//! weights, and `V[ξ]` (in x tiles) the transformed input.
//! So the heavy part runs on the same register-blocked kernels as the direct convolution ([`super::avx512`],
//! [`super::avx2`]); only the transforms are new.
//!
//! One task takes a *chunk* of up to 48 tiles (anywhere in the batch: a chunk may span images) and a block of
//! output channels: it transforms the chunk's input straight into the kernel's packed strips (`V`, in L2),
//! multiplies, and transforms each 64-channel block of products (`M`, in L2) back into output pixels, with the
//! bias, the residual add and the ReLU applied as they are stored. Nothing the size of a map is written
//! besides the output.
//!
//! F(2x2, 3x3)'s transforms only add and subtract (and `G` halves, exactly), so its error is that of the direct
//! convolution's sums, rounded in another order (F(4x4, 3x3)'s scale, see `f4`): the golden tests hold within 1e-4
//! of PyTorch with either.
//!
//! The weights are held once, as the 3x3 kernels in the GEMM lowering's panels, and transformed as the conv
//! runs (a transformed copy held instead would take 16 values per 9, or 36: a ResNet-50's resident memory past
//! 1.25x its weights): once per call into a buffer the calling thread keeps, where the call has several chunks; else
//! (the late, small maps at batch 1) by each task for its own block of output channels, into scratch that
//! stays in L2 until the kernel reads it.

use rayon::prelude::*;

use super::MicroTile;

mod f4;

#[cfg(target_arch = "x86_64")]
pub(crate) use f4::g_line as g4_line;

/// Positions of F(2x2, 3x3)'s transformed tile (4x4).
const XI: usize = 16;

/// Which of Winograd's minimal filters a conv runs: the output tile's side, and with it the transformed tile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tile {
    /// F(2x2, 3x3): 2x2 output pixels from a 4x4 patch, 16 products per channel pair (this module's transforms).
    F2,
    /// F(4x4, 3x3): 4x4 output pixels from a 6x6 patch, 36 products per channel pair, 4x fewer multiply-adds
    /// than the direct convolution (`f4`'s transforms).
    F4,
}

impl Tile {
    /// Output pixels along a tile's side.
    fn side(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Positions `ξ` of the transformed tile: the matrix products per chunk.
    fn xi(self) -> usize {
        match self {
            Tile::F2 => XI,
            Tile::F4 => f4::XI,
        }
    }

    /// The tile a call on `n` images of `h x w` over `threads` threads runs: F(4x4, 3x3) where its chunks give
    /// every thread whole chunks of its own ([`F4_CHUNKS_PER_THREAD`] each), else F(2x2, 3x3). With fewer, each
    /// chunk's output channels would be cut over the threads, every cut transforming the chunk's input again, and
    /// the weights' transform (36 values per 9, each call) spread over few tiles: ResNet's 128-channel 3x3s at
    /// 28x28 and batch 1 (one chunk) took 1.15x F(2x2)'s time that way; its 64-channel ones at 56x56 and batch 1
    /// (four chunks, two per thread, uncut) take 0.79-0.87x.
    pub(crate) fn for_call(self, n: usize, (h, w): (usize, usize), threads: usize) -> Tile {
        let chunks = n * h.div_ceil(4) * w.div_ceil(4) / CHUNK;
        match self {
            Tile::F4 if chunks >= F4_CHUNKS_PER_THREAD * threads => Tile::F4,
            _ => Tile::F2,
        }
    }
}

/// Tiles per chunk: one AVX-512 strip, three AVX2 strips.
const CHUNK: usize = 48;

/// See [`Conv::spill`]: the AVX-512 kernel's narrow width.
const SPILL: usize = 4;

/// Chunks per thread below which each chunk's output channels are cut over the threads too (see [`Conv::run`]).
const SPLIT_BELOW: usize = 4;

/// Chunks per thread from which a call runs F(4x4, 3x3) (see [`Tile::for_call`]), whole chunks each.
const F4_CHUNKS_PER_THREAD: usize = 2;

/// Bytes of transformed weights a block of output channels may take (see [`Conv::block`]).
const U_BYTES: usize = 512 * 1024;

/// Chunks from which a call transforms the weights once for all its tasks (see [`Conv::run`]).
const SHARED_U: usize = 3;

/// Output channels whose products are transformed back together (the `M` block kept in L2), at most.
const BLOCK: usize = 64;

/// The distance between a panel's consecutive matrices `U[ξ]` in [`transform_panel`]'s output: `c` steps of
/// `mr` and a cache line, so that the 16 written together do not fall in one set of the L1 cache.
fn u_step(c: usize, mr: usize) -> usize {
    c * mr + 16
}

/// One weight panel's `XI` matrices `U[ξ] = (G g Gᵀ)[ξ]`: from `g`, the panel of `mr` output channels over
/// `c` input channels by 9 taps (step `(ci, tap)` of row `i` at `(ci * 9 + tap) * mr + i`), into `u`, `XI`
/// panels of `c` steps (`U[ξ]` step `ci` of row `i` at `ξ * u_step + ci * mr + i`), as the kernel reads them.
fn transform_panel(g: &[f32], c: usize, mr: usize, u: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if mr == 8 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (and so AVX2 and FMA).
        return unsafe { transform_panel_avx512(g, c, u) };
    }
    #[cfg(target_arch = "x86_64")]
    if mr == 8 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { transform_panel_avx2(g, (0, c), u) };
    }
    #[cfg(target_arch = "x86_64")]
    if mr == 6 && std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(g: &[f32], c: usize, u: &mut [f32]) {
            transform_rows::<6>(g, c, u)
        }
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2(g, c, u) };
    }
    match mr {
        8 => transform_rows::<8>(g, c, u),
        6 => transform_rows::<6>(g, c, u),
        _ => unreachable!("weight panels are 6 or 8 rows"),
    }
}

/// [`transform_panel`] for 8-row panels with AVX: one `ymm` per tap, `G`'s halves as `0.5 (g0 + g2) ± 0.5 g1`
/// (as [`transform_rows`] computes them), for input channels `from..c` of the panel's `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_panel_avx2(g: &[f32], (from, c): (usize, usize), u: &mut [f32]) {
    use std::arch::x86_64::*;
    const MR: usize = 8;
    debug_assert!(g.len() >= c * 9 * MR && u.len() >= XI * u_step(c, MR));
    let half = _mm256_set1_ps(0.5);
    // (a, b, d) -> (a, 0.5 (a + b + d), 0.5 (a - b + d), d)
    let spread = |a: __m256, b: __m256, d: __m256| {
        let (h, m) = (_mm256_mul_ps(half, _mm256_add_ps(a, d)), _mm256_mul_ps(half, b));
        [a, _mm256_add_ps(h, m), _mm256_sub_ps(h, m), d]
    };
    let (gp, up) = (g.as_ptr(), u.as_mut_ptr());
    for ci in from..c {
        let tap = |t: usize| _mm256_loadu_ps(gp.add((ci * 9 + t) * MR));
        let cols = [0, 1, 2].map(|s| spread(tap(s), tap(3 + s), tap(6 + s)));
        let [c0, c1, c2] = cols;
        for (r, ((a, b), d)) in c0.into_iter().zip(c1).zip(c2).enumerate() {
            for (s, x) in spread(a, b, d).into_iter().enumerate() {
                _mm256_storeu_ps(up.add((r * 4 + s) * u_step(c, MR) + ci * MR), x);
            }
        }
    }
}

/// [`transform_panel`] for 8-row panels on AVX-512: two input channels per `zmm` (their 8 rows side by side,
/// as each `U[ξ]` holds them), so half the operations and stores of [`transform_panel_avx2`], with the same
/// operations lane for lane (the same bits); an odd last channel goes to it. At batch 1 the transform is a
/// few percent of a ResNet-50's time, as each call transforms the weights for one image.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn transform_panel_avx512(g: &[f32], c: usize, u: &mut [f32]) {
    use std::arch::x86_64::*;
    const MR: usize = 8;
    debug_assert!(g.len() >= c * 9 * MR && u.len() >= XI * u_step(c, MR));
    let half = _mm512_set1_ps(0.5);
    // As in `transform_panel_avx2`: (a, b, d) -> (a, 0.5 (a + b + d), 0.5 (a - b + d), d).
    let spread = |a: __m512, b: __m512, d: __m512| {
        let (h, m) = (_mm512_mul_ps(half, _mm512_add_ps(a, d)), _mm512_mul_ps(half, b));
        [a, _mm512_add_ps(h, m), _mm512_sub_ps(h, m), d]
    };
    let (gp, up) = (g.as_ptr(), u.as_mut_ptr());
    let pairs = c / 2;
    const AHEAD: usize = 16;
    for ci in (0..2 * pairs).step_by(2) {
        // The kernels `AHEAD` channels on (nine lines a pair), fetched ahead: a pass at batch 1 reads each
        // conv's weights from memory once, and with the hardware prefetcher alone ResNet-50 layer3's 3x3s ran
        // 0.77 ms each in a pass against 0.64 with their weights in cache (0.72 with this).
        let next = gp.wrapping_add((ci + AHEAD) * 9 * MR);
        for l in 0..9 {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(16 * l).cast());
        }
        // Tap `t` of channels `ci` (low half) and `ci + 1` (high half).
        let tap = |t: usize| {
            let lo = _mm256_castps_pd(_mm256_loadu_ps(gp.add((ci * 9 + t) * MR)));
            let hi = _mm256_castps_pd(_mm256_loadu_ps(gp.add(((ci + 1) * 9 + t) * MR)));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(lo), hi))
        };
        let cols = [0, 1, 2].map(|s| spread(tap(s), tap(3 + s), tap(6 + s)));
        let [c0, c1, c2] = cols;
        for (r, ((a, b), d)) in c0.into_iter().zip(c1).zip(c2).enumerate() {
            for (s, x) in spread(a, b, d).into_iter().enumerate() {
                _mm512_storeu_ps(up.add((r * 4 + s) * u_step(c, MR) + ci * MR), x);
            }
        }
    }
    if c % 2 == 1 {
        transform_panel_avx2(g, (c - 1, c), u);
    }
}

/// `G x` for one line of three kernel taps `x` (a column of the kernel, or a row of `G g`), `W` lanes at once:
/// F(2x2, 3x3)'s `G`, its middle rows as `0.5 (a + d) ± 0.5 b` (rounded as the AVX versions round them).
/// F(4x4, 3x3)'s is [`g4_line`].
#[inline(always)]
pub(crate) fn g2_line<const W: usize>(a: [f32; W], b: [f32; W], d: [f32; W]) -> [[f32; W]; 4] {
    // Plain loops over the lanes (not `array::from_fn`), so that callers in kernels inline it whole.
    let (mut plus, mut minus) = ([0.0; W], [0.0; W]);
    for i in 0..W {
        let (h, m) = (0.5 * (a[i] + d[i]), 0.5 * b[i]);
        (plus[i], minus[i]) = (h + m, h - m);
    }
    [a, plus, minus, d]
}

/// [`transform_panel`] for `MR` rows, vectorised over the rows.
#[inline(always)]
fn transform_rows<const MR: usize>(g: &[f32], c: usize, u: &mut [f32]) {
    debug_assert!(g.len() >= c * 9 * MR && u.len() >= XI * u_step(c, MR));
    for (ci, kernel) in g.chunks_exact(9 * MR).take(c).enumerate() {
        let tap = |t: usize| -> [f32; MR] { std::array::from_fn(|i| kernel[t * MR + i]) };
        // t = G g (rows of the kernel combined), per column s.
        let cols = [0, 1, 2].map(|s| g2_line(tap(s), tap(3 + s), tap(6 + s)));
        // U = t Gᵀ: row r of t combined across its columns.
        for r in 0..4 {
            let row = g2_line(cols[0][r], cols[1][r], cols[2][r]);
            for (s, x) in row.iter().enumerate() {
                u[(r * 4 + s) * u_step(c, MR) + ci * MR..][..MR].copy_from_slice(x);
            }
        }
    }
}

/// One Winograd convolution's operands (see the module docs).
pub(crate) struct Conv<'a> {
    /// The 3x3 weights in the micro-kernel's panels (`mr` output channels over depth `(c, tap)`, as the GEMM
    /// lowering holds them).
    pub g: &'a [f32],
    /// The micro-kernel, its panel rows and strip width, and the most columns of a strip a full strip's tile
    /// takes ([`super::Extra`]; a chunk's spill of up to [`SPILL`] tiles rides on its last full strip).
    pub kernel: super::TileKernel,
    pub mr: usize,
    pub nr: usize,
    pub extra: usize,
    pub bias: &'a [f32],
    pub relu: bool,
    /// Input channels, height and width (the output has the same size).
    pub chw: (usize, usize, usize),
    pub out_channels: usize,
    /// The engine whose kernel this is: its transforms are AVX-512 (16 tiles per vector) on
    /// [`super::Engine::Avx512`], else the portable loops (compiled for AVX2 on [`super::Engine::Avx2Fma`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub engine: super::Engine,
    /// F(2x2, 3x3) or F(4x4, 3x3).
    pub tile: Tile,
}

/// Where a chunk's tiles are: tile `s` of the chunk is global tile `first + s` (`image * tiles + ty * tw + tx`).
#[derive(Clone, Copy)]
struct Chunk {
    first: usize,
    len: usize,
}

/// A segment, or two that one vector's halves take (see [`Conv::groups`]).
type Group = (Segment, Option<Segment>);

/// A run of a chunk's tiles along one tile row within one strip: image, tile row, first tile column, first
/// slot in the chunk, length.
#[derive(Clone, Copy)]
struct Segment {
    image: usize,
    ty: usize,
    tx: usize,
    slot: usize,
    len: usize,
}

impl Conv<'_> {
    /// Tiles across and down one image.
    fn tiles(&self) -> (usize, usize) {
        let (_, h, w) = self.chw;
        let side = self.tile.side();
        (h.div_ceil(side), w.div_ceil(side))
    }

    /// Chunk `k` of `chunks` over `total` tiles: `CHUNK` tiles each, what is left over (at most `SPILL`, or less
    /// than a chunk where the last is partial) spread over them, one more tile per chunk where there are enough
    /// chunks (a 56x56 map's 196 F(4x4) tiles: four chunks of 49). A chunk's tiles past its one strip then ride on
    /// that strip's tiles a column or two each ([`super::Extra`]), which the kernel takes without spilling its
    /// accumulators.
    fn chunk_at(k: usize, chunks: usize, total: usize) -> Chunk {
        match total >= chunks * CHUNK {
            // Whole chunks and `left` (at most `SPILL`) tiles over.
            true => Chunk {
                first: k * CHUNK + k * (total - chunks * CHUNK) / chunks,
                len: CHUNK + (k + 1) * (total - chunks * CHUNK) / chunks - k * (total - chunks * CHUNK) / chunks,
            },
            false => Chunk {
                first: k * CHUNK,
                len: CHUNK.min(total - k * CHUNK),
            },
        }
    }

    /// Strips per chunk.
    fn strips(&self) -> usize {
        (CHUNK + SPILL).div_ceil(self.nr)
    }

    /// Output channels per block: whole panels, at most [`BLOCK`], whose transformed weights (16 or 36 values per
    /// input channel each) fit [`U_BYTES`], so that a task that transforms them itself finds them in L2 beside
    /// the chunk's `V`.
    fn block(&self) -> usize {
        let (c, _, _) = self.chw;
        let fit = U_BYTES / (self.tile.xi() * c * 4);
        (fit.min(BLOCK) / self.mr).max(1) * self.mr
    }

    /// The distance in `V` (or `M`, with `rows` channels) between consecutive positions `ξ`: their strips, and
    /// a cache line more. The transforms read or write all 16 (or 36) at once; were they a multiple of 4 KiB apart
    /// (64 channels of two 48-float strips are 24 KiB) they would all fall in one set of the L1 cache.
    fn xi_step(&self, rows: usize) -> usize {
        self.strips() * rows * self.nr + 16
    }

    /// The chunk's runs of tiles, cut at tile rows and at strips.
    fn segments(&self, chunk: Chunk) -> impl Iterator<Item = Segment> + '_ {
        let (th, tw) = self.tiles();
        let per_image = th * tw;
        let mut slot = 0;
        std::iter::from_fn(move || {
            if slot >= chunk.len {
                return None;
            }
            let g = chunk.first + slot;
            let (image, t) = (g / per_image, g % per_image);
            let (ty, tx) = (t / tw, t % tw);
            let strip_end = (slot / self.nr + 1) * self.nr;
            let len = (tw - tx).min(chunk.len - slot).min(strip_end - slot);
            let s = Segment {
                image,
                ty,
                tx,
                slot,
                len,
            };
            slot += len;
            Some(s)
        })
    }

    /// `y = relu?(conv(x) + bias + residual?)` for `n` images `x` (N, C, H, W) into `out` (N, O, H, W),
    /// spread over the current rayon pool's `threads`.
    ///
    /// # Safety
    /// `out` holds `n * out_channels * h * w` floats that nothing else reads or writes meanwhile; the
    /// kernel runs on this CPU.
    pub(crate) unsafe fn run(&self, x: &[f32], n: usize, residual: Option<&[f32]>, out: *mut f32, threads: usize) {
        let (c, h, w) = self.chw;
        let (th, tw) = self.tiles();
        debug_assert_eq!(x.len(), n * c * h * w);
        let total = n * th * tw;
        // Chunks of `CHUNK` tiles, up to `SPILL` more spread over them (see `Conv::chunk_at`).
        let chunks = match total % CHUNK {
            r if r <= SPILL && total > CHUNK => total / CHUNK,
            _ => total.div_ceil(CHUNK),
        };
        // Too few chunks to keep every thread busy with its own few (a 14x14 map at batch 1 has 49 tiles, one
        // chunk; a 28x28 map four): each chunk's output channels are cut into `splits` blocks too (each transforms
        // the chunk's input for itself). The tasks go block by block, so that the runs of tasks rayon hands a
        // thread share one block of transformed weights: ResNet-50's 128-channel 3x3s at 28x28 read half of
        // their 1 MB each instead of all of it, 6-8 % faster at batch 1 on two threads than uncut.
        let panels = self.out_channels / self.mr;
        let split_below = match self.tile {
            Tile::F2 => SPLIT_BELOW,
            Tile::F4 => F4_CHUNKS_PER_THREAD,
        };
        let splits = match chunks >= split_below * threads {
            true => 1,
            false => threads.min(panels).max(1),
        };
        let step = panels.div_ceil(splits) * self.mr;
        let out = Out(out);
        // The weights stay held once, as 3x3 kernels. Where a panel meets several chunks, every panel's matrices
        // `U[ξ]` are transformed once per call (in parallel) into a buffer the calling thread keeps; else (one
        // or two chunks: the late, small maps at batch 1) each task transforms its block's panels itself, into
        // its L2-sized scratch, just before multiplying them.
        let per_panel = self.tile.xi() * u_step(c, self.mr);
        if chunks < SHARED_U {
            return self.tasks(x, None, (chunks, splits, step, total), residual, out, threads);
        }
        super::with_buffer(&U, panels * per_panel, |u| {
            let transform = |(p, up): (usize, &mut [f32])| self.transform(p, up);
            match threads {
                1 => u.chunks_exact_mut(per_panel).enumerate().for_each(transform),
                _ => u.par_chunks_exact_mut(per_panel).enumerate().for_each(transform),
            }
            self.tasks(x, Some(u), (chunks, splits, step, total), residual, out, threads)
        })
    }

    /// The chunks and their output-channel blocks, over the pool.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tasks(
        &self,
        x: &[f32],
        u: Option<&[f32]>,
        (chunks, splits, step, total): (usize, usize, usize, usize),
        residual: Option<&[f32]>,
        out: Out,
        threads: usize,
    ) {
        let task = |i: usize| {
            let (k, s) = (i % chunks, i / chunks);
            let chunk = Conv::chunk_at(k, chunks, total);
            let rows = (s * step, ((s + 1) * step).min(self.out_channels));
            if rows.0 < rows.1 {
                // SAFETY: tasks write disjoint (tile, channel) blocks of `out`.
                unsafe { self.chunk(x, u, chunk, rows, residual, out) }
            }
        };
        match threads {
            1 => (0..chunks * splits).for_each(task),
            _ => (0..chunks * splits).into_par_iter().for_each(task),
        }
    }

    /// One chunk, output channels `rows`: transform the input into packed strips, multiply, transform back.
    unsafe fn chunk(
        &self,
        x: &[f32],
        u: Option<&[f32]>,
        chunk: Chunk,
        rows: (usize, usize),
        residual: Option<&[f32]>,
        out: Out,
    ) {
        let (c, _, _) = self.chw;
        let xis = self.tile.xi();
        let v_len = xis * self.xi_step(c);
        let m_len = xis * self.xi_step(self.block());
        let per_panel = xis * u_step(c, self.mr);
        let u_len = if u.is_some() {
            0
        } else {
            self.block() / self.mr * per_panel
        };
        super::with_panel(v_len + m_len + u_len, |buf| {
            let (v, rest) = buf.split_at_mut(v_len);
            let (m, scratch) = rest.split_at_mut(m_len);
            for group in self.groups(chunk) {
                self.input_on_engine(x, group, v);
            }
            let block = self.block();
            for o0 in (rows.0..rows.1).step_by(block) {
                let o1 = (o0 + block).min(rows.1);
                let u = match u {
                    Some(u) => &u[o0 / self.mr * per_panel..],
                    None => {
                        let panels = (o1 - o0) / self.mr;
                        for (p, up) in scratch.chunks_exact_mut(per_panel).take(panels).enumerate() {
                            self.transform(o0 / self.mr + p, up);
                        }
                        &*scratch
                    }
                };
                self.multiply(v, chunk.len, (o0, o1), m, u);
                for group in self.groups(chunk) {
                    self.output_on_engine(m, group, (o0, o1), residual, out);
                }
            }
        })
    }

    /// Panel `p`'s matrices `U[ξ]` into `u` (see [`transform_panel`]), for this conv's tile.
    fn transform(&self, p: usize, u: &mut [f32]) {
        let (c, mr) = (self.chw.0, self.mr);
        let g = &self.g[p * c * 9 * mr..][..c * 9 * mr];
        match self.tile {
            Tile::F2 => transform_panel(g, c, mr, u),
            Tile::F4 => f4::transform_panel(g, c, mr, u),
        }
    }

    /// The chunk's segments as the transforms take them: one at a time, or, for F(4x4, 3x3)'s AVX-512 transforms,
    /// two consecutive ones of at most 8 tiles each together (a vector's two halves, see `f4::x86`).
    fn groups(&self, chunk: Chunk) -> impl Iterator<Item = Group> + '_ {
        let pairing = cfg!(target_arch = "x86_64") && self.engine == super::Engine::Avx512 && self.tile == Tile::F4;
        let mut segments = self.segments(chunk).peekable();
        std::iter::from_fn(move || {
            let a = segments.next()?;
            let b = match pairing {
                true => segments.next_if(|b| f4::pairs(&a, b)),
                false => None,
            };
            Some((a, b))
        })
    }

    /// The tile's input transform as the engine runs it: AVX-512's, or the portable loops compiled for AVX2.
    fn input_on_engine(&self, x: &[f32], (a, b): Group, v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(conv: &Conv, x: &[f32], seg: Segment, v: &mut [f32]) {
                conv.input_portable(x, seg, v)
            }
            // SAFETY: the engine runs on this CPU (`PackedConv::engine_for`), with these instructions; a pair comes
            // from `groups`.
            match (self.engine, self.tile) {
                (super::Engine::Avx512, Tile::F4) => return unsafe { f4::x86::input(self, x, (a, b), v) },
                (super::Engine::Avx512, Tile::F2) => {
                    return std::iter::once(a)
                        .chain(b)
                        .for_each(|seg| unsafe { x86::input(self, x, seg, v) });
                }
                (super::Engine::Avx2Fma, _) => {
                    return std::iter::once(a)
                        .chain(b)
                        .for_each(|seg| unsafe { avx2(self, x, seg, v) });
                }
                _ => {}
            }
        }
        std::iter::once(a)
            .chain(b)
            .for_each(|seg| self.input_portable(x, seg, v))
    }

    /// The tile's portable input transform.
    #[inline(always)]
    fn input_portable(&self, x: &[f32], seg: Segment, v: &mut [f32]) {
        match self.tile {
            Tile::F2 => self.input(x, seg, v),
            Tile::F4 => f4::input(self, x, seg, v),
        }
    }

    /// [`Conv::output`] as the engine runs it (see [`Conv::input_on_engine`]).
    unsafe fn output_on_engine(
        &self,
        m: &[f32],
        (a, b): Group,
        rows: (usize, usize),
        residual: Option<&[f32]>,
        out: Out,
    ) {
        let segs = std::iter::once(a).chain(b);
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(conv: &Conv, m: &[f32], seg: Segment, rows: (usize, usize), r: Option<&[f32]>, out: Out) {
                conv.output_portable(m, seg, rows, r, out)
            }
            match (self.engine, self.tile) {
                (super::Engine::Avx512, Tile::F4) => return f4::x86::output(self, m, (a, b), rows, residual, out.0),
                (super::Engine::Avx512, Tile::F2) => {
                    return segs.for_each(|seg| x86::output(self, m, seg, rows, residual, out.0));
                }
                (super::Engine::Avx2Fma, _) => return segs.for_each(|seg| avx2(self, m, seg, rows, residual, out)),
                _ => {}
            }
        }
        segs.for_each(|seg| self.output_portable(m, seg, rows, residual, out))
    }

    /// The tile's portable output transform.
    ///
    /// # Safety
    /// As [`Conv::output`].
    #[inline(always)]
    unsafe fn output_portable(
        &self,
        m: &[f32],
        seg: Segment,
        rows: (usize, usize),
        residual: Option<&[f32]>,
        out: Out,
    ) {
        match self.tile {
            Tile::F2 => self.output(m, seg, rows, residual, out),
            Tile::F4 => f4::output(self, m, seg, rows, residual, out),
        }
    }

    /// Index in `V` (or `M`, with `rows` for the channels) of slot `slot`'s value at position `xi`, channel `c`.
    fn at(&self, xi: usize, c: usize, slot: usize, rows: usize) -> usize {
        let (strip, lane) = (slot / self.nr, slot % self.nr);
        xi * self.xi_step(rows) + (strip * rows + c) * self.nr + lane
    }

    /// `V[ξ][c][slots] = (Bᵀ d B)[ξ]` for the segment's tiles, every input channel: per channel, the four
    /// input rows under the tile row are split into their odd and even columns (zero outside the image), so
    /// that the transform is a loop over tiles with contiguous loads and stores.
    #[inline(always)]
    fn input(&self, x: &[f32], seg: Segment, v: &mut [f32]) {
        let (c, h, w) = self.chw;
        let len = seg.len;
        // Input columns 2 tx - 1 .. 2 (tx + len) + 1: pairs (odd, even) of tile column tx + k, k = 0..=len.
        let first = 2 * seg.tx as isize - 1;
        let mut line = [0f32; 2 * (CHUNK + SPILL + 1)];
        let mut odd = [[0f32; CHUNK + SPILL + 1]; 4];
        let mut even = [[0f32; CHUNK + SPILL + 1]; 4];
        let (base, step) = (self.at(0, 0, seg.slot, c), self.xi_step(c));
        // The input columns that exist, as indices into `line`.
        let lo = (-first).max(0) as usize;
        let hi = ((w as isize - first).max(0) as usize).min(2 * (len + 1));
        for ci in 0..c {
            let plane = &x[(seg.image * c + ci) * h * w..][..h * w];
            for r in 0..4 {
                let y = 2 * seg.ty as isize - 1 + r as isize;
                let (o, e) = (&mut odd[r][..=len], &mut even[r][..=len]);
                if y < 0 || y >= h as isize || lo >= hi {
                    o.fill(0.0);
                    e.fill(0.0);
                    continue;
                }
                let row = &plane[y as usize * w..][..w];
                let line = &mut line[..2 * (len + 1)];
                line[..lo].fill(0.0);
                line[hi..].fill(0.0);
                let start = (first + lo as isize) as usize;
                line[lo..hi].copy_from_slice(&row[start..start + hi - lo]);
                for ((o, e), pair) in o.iter_mut().zip(e.iter_mut()).zip(line.chunks_exact(2)) {
                    *o = pair[0];
                    *e = pair[1];
                }
            }
            // Tile k's patch row r is (odd[r][k], even[r][k], odd[r][k + 1], even[r][k + 1]); computed into
            // `t` (fixed sizes, no bounds checks: the loop vectorises) and copied out.
            let mut t = [[0f32; CHUNK + SPILL]; XI];
            for k in 0..len {
                let mut hrow = [[0f32; 4]; 4];
                for (r, hr) in hrow.iter_mut().enumerate() {
                    let (a0, a1, a2, a3) = (odd[r][k], even[r][k], odd[r][k + 1], even[r][k + 1]);
                    *hr = [a0 - a2, a1 + a2, a2 - a1, a1 - a3];
                }
                for j in 0..4 {
                    let (h0, h1, h2, h3) = (hrow[0][j], hrow[1][j], hrow[2][j], hrow[3][j]);
                    t[j][k] = h0 - h2;
                    t[4 + j][k] = h1 + h2;
                    t[8 + j][k] = h2 - h1;
                    t[12 + j][k] = h1 - h3;
                }
            }
            for (xi, t) in t.iter().enumerate() {
                let at = base + xi * step + ci * self.nr;
                v[at..at + len].copy_from_slice(&t[..len]);
            }
        }
    }

    /// `M[ξ][o - o0][slots] = U[ξ][o] · V[ξ]` for output channels `o0..o1` (a block), by the micro-kernel: per
    /// `ξ`, depth blocks of `KC` steps, per strip every panel (`u`: the block's panels' transformed weights,
    /// from its first).
    unsafe fn multiply(&self, v: &[f32], len: usize, (o0, o1): (usize, usize), m: &mut [f32], u: &[f32]) {
        let (c, _, _) = self.chw;
        let (mr, nr) = (self.mr, self.nr);
        debug_assert!(len <= self.strips() * nr, "a chunk within its strips");
        let block = self.block();
        let panels = (o1 - o0).div_ceil(mr);
        // Panel `p`'s A for position `xi`, depth `k0` (wrapping: also names the one after the last).
        let xis = self.tile.xi();
        let panel = |p: usize, xi: usize, k0: usize| u.as_ptr().wrapping_add((p * xis + xi) * u_step(c, mr) + k0 * mr);
        for xi in 0..xis {
            for k0 in (0..c).step_by(super::KC) {
                let kb = super::KC.min(c - k0);
                // The last strip's few columns on the full strips' tiles, where the kernel takes them.
                let fused = super::Fused::of(len, nr, self.extra);
                for s in 0..fused.map_or(len.div_ceil(nr), |f| f.full) {
                    let cols = nr.min(len - s * nr);
                    let b = v.as_ptr().add(self.at(xi, k0, s * nr, c));
                    for p in 0..panels {
                        let o = o0 + p * mr;
                        let next_a = match p + 1 < panels {
                            true => panel(p + 1, xi, k0),
                            false => panel(0, xi, k0 + kb),
                        };
                        let t = MicroTile {
                            a: panel(p, xi, k0),
                            rows: mr.min(o1 - o),
                            b,
                            cols,
                            k: kb,
                            next_a,
                            c: m.as_mut_ptr().add(self.at(xi, o - o0, s * nr, block)),
                            ldc: nr,
                            first: k0 == 0,
                            epilogue: None,
                            fetch: super::Fetch::NONE,
                            extra: fused.map_or(super::Extra::NONE, |f| {
                                let b = v.as_ptr().add(self.at(xi, k0, f.full * nr, c));
                                let out = m.as_mut_ptr().add(self.at(xi, o - o0, f.full * nr, block));
                                f.extra(s, b, out, std::ptr::null())
                            }),
                        };
                        (self.kernel)(&t);
                    }
                }
            }
        }
    }

    /// Output pixels of the segment's tiles for channels `o0..o1`: `Aᵀ M A` plus the bias, the residual, the
    /// ReLU; the last tile row or column of an odd-sized map keeps only the pixels inside it.
    #[inline(always)]
    unsafe fn output(&self, m: &[f32], seg: Segment, (o0, o1): (usize, usize), residual: Option<&[f32]>, out: Out) {
        let (_, h, w) = self.chw;
        let block = self.block();
        let len = seg.len;
        let plane = h * w;
        // Whole tiles across (both columns inside the map), the rest (at most one) one pixel wide.
        let whole = len.min((w / 2).saturating_sub(seg.tx));
        let rows = if 2 * seg.ty + 1 < h { 2 } else { 1 };
        let (first, step) = (self.at(0, 0, seg.slot, block), self.xi_step(block));
        for o in o0..o1 {
            let base: [usize; XI] = std::array::from_fn(|xi| first + xi * step + (o - o0) * self.nr);
            let bias = self.bias[o];
            let mut y = [[0f32; CHUNK + SPILL]; 4];
            for k in 0..len {
                let mv: [f32; XI] = std::array::from_fn(|xi| m[base[xi] + k]);
                let s0: [f32; 4] = std::array::from_fn(|j| mv[j] + mv[4 + j] + mv[8 + j]);
                let s1: [f32; 4] = std::array::from_fn(|j| mv[4 + j] - mv[8 + j] - mv[12 + j]);
                y[0][k] = s0[0] + s0[1] + s0[2] + bias;
                y[1][k] = s0[1] - s0[2] - s0[3] + bias;
                y[2][k] = s1[0] + s1[1] + s1[2] + bias;
                y[3][k] = s1[1] - s1[2] - s1[3] + bias;
            }
            let image = (seg.image * self.out_channels + o) * plane;
            for i in 0..rows {
                let at = image + (2 * seg.ty + i) * w + 2 * seg.tx;
                let dst = out.0.add(at);
                let (left, right) = (&y[2 * i][..len], &y[2 * i + 1][..len]);
                let res = residual.map(|r| &r[at..]);
                store_pairs(dst, left, right, whole, res, self.relu);
                if whole < len {
                    // The map's last column: the tile's left pixel only.
                    let mut v = left[whole];
                    if let Some(r) = res {
                        v += r[2 * whole];
                    }
                    *dst.add(2 * whole) = if self.relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}

/// Stores `n` pairs of pixels (`left[k]`, `right[k]`) at `dst[2k]`, `dst[2k + 1]`, adding the residual read
/// at the same places and applying the ReLU.
///
/// # Safety
/// `dst` covers `2n` floats.
#[inline(always)]
unsafe fn store_pairs(dst: *mut f32, left: &[f32], right: &[f32], n: usize, res: Option<&[f32]>, relu: bool) {
    let dst = std::slice::from_raw_parts_mut(dst, 2 * n);
    let pairs = dst.chunks_exact_mut(2).zip(left.iter().zip(right));
    // NaN stays NaN without the ReLU (and becomes 0 with it, as in the other kernels).
    match (res, relu) {
        (Some(r), true) => pairs.zip(r.chunks_exact(2)).for_each(|((d, (&a, &b)), r)| {
            d[0] = (a + r[0]).max(0.0);
            d[1] = (b + r[1]).max(0.0);
        }),
        (Some(r), false) => pairs.zip(r.chunks_exact(2)).for_each(|((d, (&a, &b)), r)| {
            d[0] = a + r[0];
            d[1] = b + r[1];
        }),
        (None, true) => pairs.for_each(|(d, (&a, &b))| {
            d[0] = a.max(0.0);
            d[1] = b.max(0.0);
        }),
        (None, false) => pairs.for_each(|(d, (&a, &b))| {
            d[0] = a;
            d[1] = b;
        }),
    }
}

thread_local! {
    /// The transformed weights of the conv running (see [`Conv::run`]), kept per thread so that steady-state
    /// inference does not allocate them.
    static U: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `N` input rows from `top` on under a tile row of a map `h` rows high and `w` wide: each one's offset in a plane
/// (clamped into the map, so that a load from it under an empty mask stays in the plane) and whether it is inside.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn patch_rows<const N: usize>(top: isize, (h, w): (usize, usize)) -> [(isize, bool); N] {
    std::array::from_fn(|r| {
        let y = top + r as isize;
        (y.clamp(0, h as isize - 1) * w as isize, (0..h as isize).contains(&y))
    })
}

/// The output pointer the tasks share (each writes its own tiles and channels).
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: only used for disjoint writes (see `Conv::run`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// The transforms with AVX-512: 16 tiles per vector.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Conv, Segment, XI};

    /// Channels ahead whose rows (or residual) the transforms prefetch.
    const AHEAD: usize = 4;

    /// Lanes `l` of a 16-float load from column `start` of a row of `w` that lie inside it.
    #[inline(always)]
    pub(super) fn inside(start: isize, w: usize) -> __mmask16 {
        let lo = (-start).clamp(0, 16) as u32;
        let hi = (w as isize - start).clamp(0, 16) as u32;
        if hi <= lo {
            return 0;
        }
        let upto = if hi == 16 { 0xffff } else { (1u32 << hi) - 1 };
        (upto & !((1u32 << lo) - 1)) as __mmask16
    }

    /// Lanes below `n` (at most 16).
    #[inline(always)]
    pub(super) fn first(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// Stores 16 output pixels `y` at `out + at` through `mask`, after adding the residual at the same place and
    /// applying the ReLU.
    ///
    /// # Safety
    /// AVX-512F; the lanes `mask` selects at `at` are inside `out` (and `residual`).
    #[inline(always)]
    pub(super) unsafe fn store(
        mut y: __m512,
        (out, at): (*mut f32, usize),
        mask: __mmask16,
        residual: Option<&[f32]>,
        relu: bool,
    ) {
        // (`at` may lie before the lanes `mask` selects, even before `out`: wrapping pointers, only those lanes read.)
        if let Some(r) = residual {
            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, r.as_ptr().wrapping_add(at)));
        }
        if relu {
            y = _mm512_max_ps(y, _mm512_setzero_ps());
        }
        _mm512_mask_storeu_ps(out.wrapping_add(at), mask, y);
    }

    /// [`Conv::input`] 16 tiles at a time: per input row, two pairs of masked loads (zero outside the image),
    /// split into even and odd columns by two permutes each.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input(conv: &Conv, x: &[f32], seg: Segment, v: &mut [f32]) {
        let (c, h, w) = conv.chw;
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let vp = v.as_mut_ptr();
        debug_assert!(v.len() >= XI * c * conv.strips() * conv.nr);
        let (base, step) = (conv.at(0, 0, seg.slot, c), conv.xi_step(c));
        // The four input rows under the tile row (offsets in a plane); rows outside the image are loaded with
        // empty masks, which read nothing and give zeros.
        let ys = super::patch_rows::<4>(2 * seg.ty as isize - 1, (h, w));
        // Per block of 16 tiles: its first input column, the masks of each row's four loads, the store mask.
        let blocks = seg.len.div_ceil(16);
        let plan: [(isize, [[__mmask16; 4]; 4], __mmask16); 4] = std::array::from_fn(|b| {
            let start = 2 * (seg.tx + 16 * b) as isize - 1;
            let masks = [0, 16, 2, 18].map(|d| inside(start + d, w));
            let rows = ys.map(|(_, inside)| if inside { masks } else { [0; 4] });
            (start, rows, first(seg.len.saturating_sub(16 * b).min(16)))
        });
        debug_assert!(blocks <= plan.len());
        let first_col = (2 * seg.tx as isize - 1).max(0);
        let span = 2 * seg.len + 2;
        for ci in 0..c {
            let plane = x.as_ptr().add((seg.image * c + ci) * h * w);
            // The rows a channel `AHEAD` further reads: planes are `h * w` floats apart, too far for the hardware
            // prefetcher to follow from one channel to the next, and the maps of a batch are larger than L2.
            if ci + AHEAD < c {
                let ahead = plane.wrapping_add(AHEAD * h * w);
                for &(y, inside) in &ys {
                    if inside {
                        let row = ahead.wrapping_offset(y + first_col);
                        for line in (0..span).step_by(16) {
                            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(line).cast());
                        }
                    }
                }
            }
            for (blk, &(start, masks, m)) in plan.iter().enumerate().take(blocks) {
                let hr: [[__m512; 4]; 4] = std::array::from_fn(|r| {
                    let row = plane.wrapping_offset(ys[r].0 + start);
                    let load = |i: usize, d: isize| _mm512_maskz_loadu_ps(masks[r][i], row.wrapping_offset(d));
                    let (a, b, a2, b2) = (load(0, 0), load(1, 16), load(2, 2), load(3, 18));
                    let x0 = _mm512_permutex2var_ps(a, even, b);
                    let x1 = _mm512_permutex2var_ps(a, odd, b);
                    let x2 = _mm512_permutex2var_ps(a2, even, b2);
                    let x3 = _mm512_permutex2var_ps(a2, odd, b2);
                    [
                        _mm512_sub_ps(x0, x2),
                        _mm512_add_ps(x1, x2),
                        _mm512_sub_ps(x2, x1),
                        _mm512_sub_ps(x1, x3),
                    ]
                });
                let at = vp.add(base + ci * conv.nr + 16 * blk);
                let [r0, r1, r2, r3] = hr;
                for (j, (((h0, h1), h2), h3)) in r0.into_iter().zip(r1).zip(r2).zip(r3).enumerate() {
                    _mm512_mask_storeu_ps(at.add(j * step), m, _mm512_sub_ps(h0, h2));
                    _mm512_mask_storeu_ps(at.add((4 + j) * step), m, _mm512_add_ps(h1, h2));
                    _mm512_mask_storeu_ps(at.add((8 + j) * step), m, _mm512_sub_ps(h2, h1));
                    _mm512_mask_storeu_ps(at.add((12 + j) * step), m, _mm512_sub_ps(h1, h3));
                }
            }
        }
    }

    /// [`Conv::output`] 16 tiles at a time: the two pixels of each tile row interleaved by two permutes, the
    /// residual loaded and the output stored through masks that keep the pixels inside the map.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output(
        conv: &Conv,
        m: &[f32],
        seg: Segment,
        (o0, o1): (usize, usize),
        residual: Option<&[f32]>,
        out: *mut f32,
    ) {
        let (_, h, w) = conv.chw;
        let block = conv.block();
        let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let rows = if 2 * seg.ty + 1 < h { 2 } else { 1 };
        let mp = m.as_ptr();
        let (base, step) = (conv.at(0, 0, seg.slot, block), conv.xi_step(block));
        for o in o0..o1 {
            let at: [usize; XI] = std::array::from_fn(|xi| base + xi * step + (o - o0) * conv.nr);
            let bias = _mm512_set1_ps(conv.bias[o]);
            let image = (seg.image * conv.out_channels + o) * h * w;
            // The residual a channel `AHEAD` further adds (see `input`).
            if let Some(r) = residual.filter(|_| o + AHEAD < o1) {
                let ahead = r
                    .as_ptr()
                    .wrapping_add(image + AHEAD * h * w + 2 * seg.ty * w + 2 * seg.tx);
                for i in 0..rows {
                    for line in (0..2 * seg.len).step_by(16) {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(i * w + line).cast());
                    }
                }
            }
            for blk in (0..seg.len).step_by(16) {
                let n = (seg.len - blk).min(16);
                let mv: [__m512; XI] = std::array::from_fn(|xi| _mm512_loadu_ps(mp.add(at[xi] + blk)));
                let s0: [__m512; 4] =
                    std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(mv[j], mv[4 + j]), mv[8 + j]));
                let s1: [__m512; 4] =
                    std::array::from_fn(|j| _mm512_sub_ps(_mm512_sub_ps(mv[4 + j], mv[8 + j]), mv[12 + j]));
                let pair = |s: &[__m512; 4]| {
                    let left = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], bias));
                    let right = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), _mm512_sub_ps(s[3], bias));
                    (left, right)
                };
                let ys = [pair(&s0), pair(&s1)];
                // Output columns from 2 (tx + blk): 2n of them, those inside the map.
                let col = 2 * (seg.tx + blk);
                let valid = (2 * n).min(w - col);
                let masks = [first(valid), first(valid.saturating_sub(16))];
                for (i, &(left, right)) in ys.iter().enumerate().take(rows) {
                    let at = image + (2 * seg.ty + i) * w + col;
                    let halves = [
                        _mm512_permutex2var_ps(left, lo_idx, right),
                        _mm512_permutex2var_ps(left, hi_idx, right),
                    ];
                    for (half, (y, mask)) in halves.into_iter().zip(masks).enumerate() {
                        if mask != 0 {
                            store(y, (out, at + 16 * half), mask, residual, conv.relu);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 transform (two channels per vector) gives the AVX2 one's bits, for even and odd channel
    /// counts.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_panel_transform_matches_avx2_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for c in [1usize, 2, 7, 64] {
            let g: Vec<f32> = (0..c * 9 * 8).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let (mut want, mut got) = (vec![f32::NAN; XI * u_step(c, 8)], vec![f32::NAN; XI * u_step(c, 8)]);
            // SAFETY: the CPU has AVX-512F (so AVX2 and FMA).
            unsafe {
                transform_panel_avx2(&g, (0, c), &mut want);
                transform_panel_avx512(&g, c, &mut got);
            }
            for (i, (w, x)) in want.iter().zip(&got).enumerate() {
                assert!(
                    w.to_bits() == x.to_bits() || (w.is_nan() && x.is_nan()),
                    "c {c} at {i}: {x} vs {w}"
                );
            }
        }
    }

    /// F(4x4, 3x3) runs where a call has two chunks per thread (ResNet's 56x56 maps from batch 1, its 28x28 ones
    /// at batch 8 on two threads), F(2x2, 3x3) stays F(2x2, 3x3).
    #[test]
    fn f4_runs_where_every_thread_has_chunks_of_its_own() {
        assert_eq!(Tile::F4.for_call(1, (56, 56), 2), Tile::F4);
        assert_eq!(Tile::F4.for_call(8, (28, 28), 2), Tile::F4);
        assert_eq!(Tile::F4.for_call(1, (28, 28), 2), Tile::F2);
        assert_eq!(Tile::F4.for_call(1, (56, 56), 8), Tile::F2);
        assert_eq!(Tile::F2.for_call(8, (56, 56), 1), Tile::F2);
    }

    /// A panel's transformed weights are `G g Gᵀ`, computed here as the matrix products in f64.
    #[test]
    fn panel_transform_is_g_g_gt() {
        let gm = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        assert_transform_is_g_g_gt(&gm, transform_panel);
    }

    /// `transform` (a tile's weight transform) gives `G g Gᵀ` for the rows of `G` in `gm` (one per side of the
    /// transformed tile), computed here as the matrix products in f64, for both panel heights and a few depths.
    pub(super) fn assert_transform_is_g_g_gt(gm: &[[f64; 3]], transform: fn(&[f32], usize, usize, &mut [f32])) {
        let side = gm.len();
        for (mr, c) in [6usize, 8].into_iter().flat_map(|mr| [1usize, 4, 5].map(|c| (mr, c))) {
            let g: Vec<f32> = (0..c * 9 * mr).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let mut u = vec![0f32; side * side * u_step(c, mr)];
            transform(&g, c, mr, &mut u);
            for ci in 0..c {
                for i in 0..mr {
                    let k = |r: usize, s: usize| f64::from(g[(ci * 9 + r * 3 + s) * mr + i]);
                    for xi in 0..side * side {
                        let got = u[xi * u_step(c, mr) + ci * mr + i];
                        let (r, s) = (xi / side, xi % side);
                        let want: f64 = (0..3)
                            .flat_map(|a| (0..3).map(move |b| (a, b)))
                            .map(|(a, b)| gm[r][a] * k(a, b) * gm[s][b])
                            .sum();
                        assert!(
                            (f64::from(got) - want).abs() < 1e-6,
                            "mr {mr} c {ci} row {i} xi {xi}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
