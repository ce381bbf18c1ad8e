//! Winograd's F(2x2, 3x3) and F(4x4, 3x3) on the channel-blocked layout, NCHW16c, on AVX-512: the stride-1 3x3s
//! of a network that runs its blocks on that layout, with the multiply-adds the lowering saves (2.25x and 4x
//! fewer than the direct convolution, `nchw16c`), as `winograd` does on NCHW.
//!
//! One task takes a chunk of up to [`CHUNK`] output tiles (`M x M` pixels each, `M` 2 or 4) anywhere in the batch
//! (a chunk may span images, so that small maps still fill the kernel's tiles). The
//! input transform reads each tile's `A x A` patch (`A = M + 2`, zeros outside the map) as 16-channel lines and
//! computes `Bᵀ d B` with the channels in the lanes, vector by vector, no shuffles: `A²` lines per tile and block
//! of input channels, stored as `A²` little NCHW16c maps `V[ξ]` of the chunk's tiles. The `A²` products
//! `M[ξ] = U[ξ] V[ξ]` are 1x1 convs on those maps, on `nchw16c`'s kernel. The output transform reads each tile's
//! `A²` lines per output block, computes `Aᵀ m A`, adds the bias and the residual, applies the ReLU and stores
//! the tile's pixels that fall in the map. The weights stay held once, as the 3x3 panels `nchw16c` reads; `U = G
//! g Gᵀ` is computed per call, 16 output channels per vector, into a buffer the calling thread keeps.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::nchw16c::{Conv16, Out, LANES, OB, PX};
use super::winograd::{g2_line, g4_line};
use crate::layers::ConvSpec;

/// Tiles per chunk at most: `V` and `M` of a 128-channel F(4x4) chunk take 1.7 MiB, in a 2 MiB L2.
const CHUNK: usize = 48;

/// Tiles per chunk at most where the conv has at most 64 channels on either side (measured on ResNet-50's layer1
/// 3x3, 56x56: 0.90-0.95x the time of chunks of 48 at batch 8, two runs; 96 no better for the wider ones).
const CHUNK_NARROW: usize = 24;

/// Chunks per thread at least, where the batch's tiles would make fewer (small maps, batch 1).
const CHUNKS_PER_THREAD: usize = 2;

/// Grows `v` to at least `len` values (zeros), never shrinking it: a thread's buffers keep the largest size a call
/// has needed, rather than being cut and filled again by the calls of every pass.
fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

thread_local! {
    /// The transformed weights of the call running, kept per thread so that steady-state inference does not
    /// allocate them.
    static U: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A task's transformed input and products.
    static VM: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One stride-1 3x3 conv (padding 1) on NCHW16c by Winograd's F(M x M, 3x3), borrowed from its packed conv.
pub(crate) struct Winograd16<'a> {
    /// The 3x3 weights as `nchw16c`'s panels: step `c * 9 + tap` of block `b` at `(b * 9 C + c * 9 + tap) * 16`.
    pub g: &'a [f32],
    /// One per output channel.
    pub bias: &'a [f32],
    pub in_channels: usize,
    pub out_channels: usize,
    /// The map's height and width (the output's too).
    pub hw: (usize, usize),
    pub relu: bool,
    /// The output tile's side: 2 or 4.
    pub m: usize,
}

/// True for the convs this lowering runs: 3x3, stride 1, padding 1, ungrouped, undilated, whole blocks of 16
/// channels on both sides.
pub(crate) fn applies(spec: &ConvSpec) -> bool {
    spec.kernel == 3
        && spec.stride == 1
        && spec.padding == 1
        && spec.dilation == 1
        && spec.groups == 1
        && spec.in_channels.is_multiple_of(LANES)
        && spec.out_channels.is_multiple_of(LANES)
}

impl Winograd16<'_> {
    /// `A`: the input patch's side.
    fn a(&self) -> usize {
        self.m + 2
    }

    /// The conv of `n` images `x` (NCHW16c), `residual` (the output's shape) added before the ReLU, into `out`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x`, `residual` and `out` hold `n` images of the map's size in NCHW16c (`out` valid
    /// for writes, read by no one while this runs); `g` and `bias` are the conv's.
    pub unsafe fn run(&self, x: &[f32], n: usize, residual: Option<&[f32]>, out: *mut f32, threads: usize) {
        let (c, o) = (self.in_channels, self.out_channels);
        let (h, w) = self.hw;
        let (a, m) = (self.a(), self.m);
        let total = n * h.div_ceil(m) * w.div_ceil(m);
        // Chunks of whole register tiles where they are cut smaller than CHUNK for the threads' sake.
        let most = if c.max(o) <= 64 { CHUNK_NARROW } else { CHUNK };
        let per = total
            .div_ceil(CHUNKS_PER_THREAD * threads)
            .div_ceil(PX)
            .saturating_mul(PX)
            .clamp(1, most);
        let chunks = total.div_ceil(per);
        // Where the chunks are too few for the threads (batch 1, small maps), the output blocks are cut over the
        // tasks too (each transforms its chunk's input itself), so that each part of `U` is read by its own tasks.
        let groups = (o / LANES).div_ceil(OB);
        let parts = match chunks >= CHUNKS_PER_THREAD * threads {
            true => 1,
            false => groups.min((CHUNKS_PER_THREAD * threads).div_ceil(chunks)),
        };
        let per_part = groups.div_ceil(parts);
        let u_len = a * a * o * c;
        let vm_len = a * a * (c + o) * per;
        let zeros = vec![0f32; o];
        let mut u = U.with(|b| std::mem::take(&mut *b.borrow_mut()));
        grow(&mut u, u_len);
        self.transform_weights(&mut u[..u_len], threads);
        let dst = Out(out);
        let task = |k: usize| {
            let (part, k) = (k / chunks, k % chunks);
            let g = (part * per_part, ((part + 1) * per_part).min(groups));
            let (t0, t1) = (k * per, ((k + 1) * per).min(total));
            let mut vm = VM.with(|b| std::mem::take(&mut *b.borrow_mut()));
            grow(&mut vm, vm_len);
            let (v, mm) = vm.split_at_mut(a * a * c * per);
            // SAFETY: the caller's contract; each task writes its own tiles.
            unsafe {
                let (x, res) = (x.as_ptr(), residual.map(|r| r.as_ptr()));
                match m {
                    2 => self.chunk::<2, 4>(x, res, dst.at(0), (t0, t1), g, (&u, v, mm), &zeros),
                    _ => self.chunk::<4, 6>(x, res, dst.at(0), (t0, t1), g, (&u, v, mm), &zeros),
                }
            }
            VM.with(|b| *b.borrow_mut() = vm);
        };
        match threads {
            1 => (0..parts * chunks).for_each(task),
            _ => (0..parts * chunks).into_par_iter().with_max_len(1).for_each(task),
        }
        U.with(|b| *b.borrow_mut() = u);
    }

    /// `U[ξ] = (G g Gᵀ)[ξ]` for every channel pair, as 1x1 panels per `ξ`: step `c` of block `b` of `U[ξ]` at
    /// `((ξ * O/16 + b) * C + c) * 16`.
    fn transform_weights(&self, u: &mut [f32], threads: usize) {
        let (c, blocks) = (self.in_channels, self.out_channels / LANES);
        debug_assert_eq!(u.len(), self.a() * self.a() * blocks * c * LANES);
        let dst = Out(u.as_mut_ptr());
        // One output block's panels per task (its 16 channels in the lanes), written where they go.
        let block = |b: usize| {
            // SAFETY: AVX-512F (the caller's contract); the block's panels are within `g`, and its panels of `U`
            // within `u` and written by this task alone.
            unsafe {
                transform_block(
                    &self.g[b * 9 * c * LANES..(b + 1) * 9 * c * LANES],
                    (b, blocks),
                    c,
                    self.m,
                    dst.at(0),
                )
            }
        };
        match threads {
            1 => (0..blocks).for_each(block),
            _ => (0..blocks).into_par_iter().for_each(block),
        }
    }

    /// One chunk: tiles `t0..t1` of the batch, output blocks of groups `g0..g1` (of [`OB`]), F(M x M, 3x3) with
    /// patches of `A = M + 2`.
    // The transforms index a tile's rows and columns as the formulas do.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn chunk<const M: usize, const A: usize>(
        &self,
        x: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        (t0, t1): (usize, usize),
        (g0, g1): (usize, usize),
        (u, v, mm): (&[f32], &mut [f32], &mut [f32]),
        zeros: &[f32],
    ) {
        let (c, o) = (self.in_channels, self.out_channels);
        let (h, w) = self.hw;
        let (th, tw) = (h.div_ceil(M), w.div_ceil(M));
        let (len, per) = (t1 - t0, v.len() / (A * A * c));
        let plane = h * w * LANES;
        let (in_img, out_img) = (c * h * w, o * h * w);
        // Tile `t` of the chunk: its image and its row and column of tiles.
        let place = |t: usize| {
            let g = t0 + t;
            let (i, k) = (g / (th * tw), g % (th * tw));
            (i, k / tw, k % tw)
        };
        let zero = _mm512_setzero_ps();
        // Input transform: V[ξ] is an NCHW16c map of `per` pixels (the chunk's tiles), C channels.
        for cb in 0..c / LANES {
            for t in 0..len {
                let (i, ty, tx) = place(t);
                let xb = x.add(i * in_img + cb * plane);
                let (y0, x0) = ((M * ty) as isize - 1, (M * tx) as isize - 1);
                let line = |dy: usize, dx: usize| {
                    let (y, xx) = (y0 + dy as isize, x0 + dx as isize);
                    match y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                        true => _mm512_loadu_ps(xb.add((y as usize * w + xx as usize) * LANES)),
                        false => zero,
                    }
                };
                // Down each column of the patch, then across each row of the result.
                let cols: [[__m512; A]; A] = std::array::from_fn(|i| bt::<A>(std::array::from_fn(|j| line(j, i))));
                for (r, _) in cols[0].iter().enumerate() {
                    let across = bt::<A>(std::array::from_fn(|i| cols[i][r]));
                    for (s, &val) in across.iter().enumerate() {
                        let xi = r * A + s;
                        _mm512_storeu_ps(v.as_mut_ptr().add(((xi * (c / LANES) + cb) * per + t) * LANES), val);
                    }
                }
            }
        }
        // The products, on the direct kernel as 1x1 convs over the chunk's tiles.
        for xi in 0..A * A {
            let conv = Conv16 {
                w: &u[xi * o * c..(xi + 1) * o * c],
                bias: zeros,
                spec: ConvSpec::new(c, o, 1, 1),
                hw: (1, per),
                relu: false,
            };
            conv.pixels(
                v.as_ptr().add(xi * c * per),
                None,
                mm.as_mut_ptr().add(xi * o * per),
                (0, len),
                (g0, g1),
            );
        }
        // Output transform, bias, residual, ReLU.
        for ob in g0 * OB..(g1 * OB).min(o / LANES) {
            let bias = _mm512_loadu_ps(self.bias.as_ptr().add(ob * LANES));
            for t in 0..len {
                let (i, ty, tx) = place(t);
                let mv = |xi: usize| _mm512_loadu_ps(mm.as_ptr().add(((xi * (o / LANES) + ob) * per + t) * LANES));
                let downs: [[__m512; M]; A] =
                    std::array::from_fn(|s| at::<A, M>(std::array::from_fn(|r| mv(r * A + s))));
                for dy in 0..M {
                    let y = M * ty + dy;
                    if y >= h {
                        break;
                    }
                    let row = at::<A, M>(std::array::from_fn(|s| downs[s][dy]));
                    for (dx, &val) in row.iter().enumerate() {
                        let xx = M * tx + dx;
                        if xx >= w {
                            break;
                        }
                        let pos = i * out_img + ob * plane + (y * w + xx) * LANES;
                        let mut sum = _mm512_add_ps(val, bias);
                        if let Some(r) = res {
                            sum = _mm512_add_ps(sum, _mm512_loadu_ps(r.add(pos)));
                        }
                        if self.relu {
                            sum = _mm512_max_ps(sum, zero);
                        }
                        _mm512_storeu_ps(out.add(pos), sum);
                    }
                }
            }
        }
    }
}

/// Output block `b` (of `blocks`)'s `U` for every input channel, its 16 channels in the lanes, into `u`: `G g Gᵀ`
/// by the NCHW lowering's line transforms ([`g2_line`], [`g4_line`]), so each lane's `U` has the bits NCHW's has.
#[target_feature(enable = "avx512f")]
unsafe fn transform_block(g: &[f32], (b, blocks): (usize, usize), c: usize, m: usize, u: *mut f32) {
    match m {
        2 => transform_lines::<4>(g, (b, blocks), c, u),
        _ => transform_lines::<6>(g, (b, blocks), c, u),
    }
}

/// `G` times one line of three taps (16 lanes each): F(2x2)'s (`A` = 4) or F(4x4)'s (`A` = 6) `A` values.
#[inline(always)]
fn line<const A: usize>(x0: [f32; LANES], x1: [f32; LANES], x2: [f32; LANES]) -> [[f32; LANES]; A] {
    let mut r = [[0.0; LANES]; A];
    match A {
        4 => r.copy_from_slice(&g2_line(x0, x1, x2)),
        _ => r.copy_from_slice(&g4_line(x0, x1, x2)),
    }
    r
}

/// [`transform_block`] for a patch of side `A` (4: F(2x2), 6: F(4x4)).
// `U`'s positions are indexed as the formula's rows and columns.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn transform_lines<const A: usize>(g: &[f32], (b, blocks): (usize, usize), c: usize, u: *mut f32) {
    debug_assert!(g.len() >= c * 9 * LANES);
    for ci in 0..c {
        let tap = |t: usize| -> [f32; LANES] {
            let mut lanes = [0f32; LANES];
            lanes.copy_from_slice(&g[(ci * 9 + t) * LANES..][..LANES]);
            lanes
        };
        // `G g`, column by column of the kernel; then each of its rows times `Gᵀ`.
        let cols = [
            line::<A>(tap(0), tap(3), tap(6)),
            line::<A>(tap(1), tap(4), tap(7)),
            line::<A>(tap(2), tap(5), tap(8)),
        ];
        for r in 0..A {
            let row = line::<A>(cols[0][r], cols[1][r], cols[2][r]);
            for (s, x) in row.iter().enumerate() {
                let at = u.add((((r * A + s) * blocks + b) * c + ci) * LANES);
                at.cast::<[f32; LANES]>().write_unaligned(*x);
            }
        }
    }
}

/// `Bᵀ d` along one direction: F(2x2)'s (`A` = 4) or F(4x4)'s (`A` = 6).
#[inline(always)]
unsafe fn bt<const A: usize>(d: [__m512; A]) -> [__m512; A] {
    let (add, sub, mul) = (_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);
    let mut r = [_mm512_setzero_ps(); A];
    if A == 4 {
        r[0] = sub(d[0], d[2]);
        r[1] = add(d[1], d[2]);
        r[2] = sub(d[2], d[1]);
        r[3] = sub(d[1], d[3]);
    } else {
        let (two, four, five) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(5.0));
        let (s12, d12, d31, d42) = (add(d[1], d[2]), sub(d[1], d[2]), sub(d[3], d[1]), sub(d[4], d[2]));
        r[0] = add(sub(mul(four, d[0]), mul(five, d[2])), d[4]);
        r[1] = sub(add(d[4], d[3]), mul(four, s12));
        r[2] = add(sub(d[4], d[3]), mul(four, d12));
        r[3] = add(d42, mul(two, d31));
        r[4] = sub(d42, mul(two, d31));
        r[5] = add(sub(mul(four, d[1]), mul(five, d[3])), d[5]);
    }
    r
}

/// `Aᵀ m` along one direction: `A` values to `M`.
#[inline(always)]
unsafe fn at<const A: usize, const M: usize>(m: [__m512; A]) -> [__m512; M] {
    let (add, sub, mul) = (_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);
    let mut r = [_mm512_setzero_ps(); M];
    if A == 4 {
        r[0] = add(add(m[0], m[1]), m[2]);
        r[1] = sub(sub(m[1], m[2]), m[3]);
    } else {
        let (s12, d12, s34, d34) = (add(m[1], m[2]), sub(m[1], m[2]), add(m[3], m[4]), sub(m[3], m[4]));
        r[0] = add(add(m[0], s12), s34);
        r[1] = add(d12, mul(_mm512_set1_ps(2.0), d34));
        r[2] = add(s12, mul(_mm512_set1_ps(4.0), s34));
        r[3] = add(add(d12, mul(_mm512_set1_ps(8.0), d34)), m[5]);
    }
    r
}
