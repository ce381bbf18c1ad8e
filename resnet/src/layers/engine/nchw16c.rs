//! Convolutions on the channel-blocked layout, NCHW16c ([`crate::layers::blocked`]), on AVX-512: a direct
//! convolution, any kernel, stride, padding and dilation (ungrouped, whole blocks of 16 channels on both sides).
//!
//! In NCHW16c a pixel's 16 channels of a block are one 64-byte line, so the conv needs no packed operand: a
//! register tile is [`OB`] blocks of 16 output channels (one vector each) by up to [`PX`] output pixels (in
//! raster order, across rows), and per input channel and kernel tap it loads the `OB` vectors of that channel's
//! weights and broadcasts the input's value under each pixel straight from its line, `OB * PX` multiply-adds for
//! `OB + PX` loads. A tap that falls in the padding reads a line of zeros instead. A 1x1's sums stay in registers
//! over the whole depth; then bias, residual and ReLU are applied and each output line is stored once. A kernel of
//! several taps runs its depth in blocks whose weights stay in L1 while the block sweeps the task's pixels (see
//! [`depth_blocks`]), adding each block's sums to the output's and applying the rest on the last. A 1x1
//! reads its input as one sequential stream per 16 channels (NCHW's operand is one stream per channel, which our
//! GEMM packs first); a 3x3's nine taps of a tile fall in three neighbouring runs of lines.
//!
//! The weights are panels of 16 output channels over the depth in OIHW's order (the micro-kernels' panel
//! layout with 16 rows): step `k = c * taps + tap` of block `b` at `(b * depth + k) * 16`. Each output's sum
//! runs over the input's blocks, then the taps, then the 16 channels of a block. Tasks are runs of an image's
//! output pixels (whole images where the batch fills the threads), handed to rayon's pool; within one, each group
//! of `OB` output blocks sweeps the task's pixels.

use rayon::prelude::*;

use crate::layers::ConvSpec;

/// Channels per block of the layout: one AVX-512 vector of f32.
pub(crate) const LANES: usize = 16;

/// Output channel blocks per register tile.
pub(crate) const OB: usize = 4;

/// Pixels per register tile (`OB * PX` = 24 accumulators).
pub(crate) const PX: usize = 6;

/// Tasks per thread at least, where the batch has fewer images than this many per thread (runs of pixels).
const TASKS_PER_THREAD: usize = 4;

/// Register tiles of pixels per task at least before the output blocks are cut over the tasks too.
const MIN_TILES: usize = 8;

/// Bytes of weights a depth block of one register tile's output blocks may take (see [`depth_blocks`]): two thirds
/// of a 48 KiB L1 data cache, the rest for the input's lines and the output's.
const DEPTH_BYTES: usize = 32 * 1024;

/// Input blocks per depth block for a tile of `out_blocks` output blocks and `taps` kernel taps (`None`: the whole
/// depth at once). A kernel with several taps takes as many as keep their weights ([`DEPTH_BYTES`]) in L1 while
/// the depth block sweeps a run's pixels, at least one; else each tile would read its weights from L2 again (a
/// 512-channel 3x3's are 1.2 MB per four output blocks): ResNet-50's layer4 3x3s took 1.14-1.32x NCHW's time at
/// batch 8 that way, 1.01-1.09x in blocks (batch 1: 1.06-1.25x, 0.90-0.98x; 72 and 144 KiB blocks in between).
/// A 1x1 runs its whole depth at once: in blocks of 32 or 64 KiB of weights, ResNet-50's deep 1x1s and Winograd's
/// products (1x1s over a chunk's tiles) ran no faster (0.9-1.1x, mixed), and the partial sums cost an extra pass
/// over the output.
pub(crate) fn depth_blocks(out_blocks: usize, taps: usize) -> Option<usize> {
    (taps > 1).then(|| (DEPTH_BYTES / (out_blocks * taps * LANES * LANES * 4)).max(1))
}

/// True for the convs this kernel runs: ungrouped, input and output channels in whole blocks of [`LANES`].
pub(crate) fn applies(spec: &ConvSpec) -> bool {
    spec.groups == 1
        && spec.stride >= 1
        && spec.dilation >= 1
        && spec.in_channels.is_multiple_of(LANES)
        && spec.out_channels.is_multiple_of(LANES)
}

/// A line of zeros: what a tap in the padding reads.
static ZEROS: [f32; LANES] = [0.0; LANES];

/// One conv on NCHW16c, borrowed from its packed conv.
pub(crate) struct Conv16<'a> {
    /// Panels of [`LANES`] output channels over the depth (see the module's docs).
    pub w: &'a [f32],
    /// One per output channel.
    pub bias: &'a [f32],
    pub spec: ConvSpec,
    /// The input map's height and width.
    pub hw: (usize, usize),
    pub relu: bool,
}

/// A raw pointer handed to a call's tasks, each of which writes its own part of the buffer (the output's pixels,
/// Winograd's transformed weights).
#[derive(Clone, Copy)]
pub(crate) struct Out(pub(crate) *mut f32);
// SAFETY: the tasks write disjoint parts of the buffer.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// `count` floats on (a method, so that closures capture the whole `Out`).
    pub(crate) fn at(self, count: usize) -> *mut f32 {
        self.0.wrapping_add(count)
    }
}

impl Conv16<'_> {
    /// The output map's height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (self.spec.output_size(self.hw.0), self.spec.output_size(self.hw.1))
    }

    /// The conv of `n` images `x` (NCHW16c), `residual` (the output's shape) added before the ReLU, into `out`
    /// (NCHW16c, `n * out_channels * oh * ow` floats), over `threads` threads of rayon's pool.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds `n` images of the input's shape, `residual` (if any) and `out` `n` of the
    /// output's; `out` is valid for writes and read by no one while this runs.
    pub unsafe fn run(&self, x: &[f32], n: usize, residual: Option<&[f32]>, out: *mut f32, threads: usize) {
        let (h, w) = self.hw;
        let (oh, ow) = self.out_hw();
        let s = &self.spec;
        let (in_img, out_img) = (s.in_channels * h * w, s.out_channels * oh * ow);
        debug_assert!(x.len() >= n * in_img && residual.is_none_or(|r| r.len() >= n * out_img));
        debug_assert_eq!(self.w.len(), s.out_channels * s.depth());
        let pixels = oh * ow;
        let wanted = threads * TASKS_PER_THREAD;
        let groups = (s.out_channels / LANES).div_ceil(OB);
        // Where the batch's pixels make too few register tiles for the threads (batch 1, small maps), the output
        // blocks are cut as well, so that each part of the weights is read by its own tasks, not by every one.
        let parts = match n * pixels.div_ceil(PX) >= wanted * MIN_TILES {
            true => 1,
            false => groups.min(wanted),
        };
        // Runs of whole register tiles, at least `wanted` tasks over the batch and the parts.
        let step = match n * parts >= wanted {
            true => pixels,
            false => (n * parts * pixels)
                .div_ceil(wanted)
                .div_ceil(PX)
                .max(1)
                .saturating_mul(PX)
                .min(pixels),
        };
        let per_image = pixels.div_ceil(step);
        let per_part = groups.div_ceil(parts);
        let dst = Out(out);
        let task = |t: usize| {
            let (part, t) = (t / (n * per_image), t % (n * per_image));
            let (i, from) = (t / per_image, t % per_image * step);
            let to = (from + step).min(pixels);
            let g = (part * per_part, ((part + 1) * per_part).min(groups));
            // SAFETY: the caller's contract; each task writes output groups `g` at pixels `from..to` of image `i`
            // alone.
            unsafe {
                self.pixels(
                    x.as_ptr().add(i * in_img),
                    residual.map(|r| r.as_ptr().add(i * out_img)),
                    dst.at(i * out_img),
                    (from, to),
                    g,
                )
            }
        };
        let tasks = parts * n * per_image;
        match threads {
            1 => (0..tasks).for_each(task),
            _ => (0..tasks).into_par_iter().with_max_len(1).for_each(task),
        }
    }

    /// Output pixels `from..to` of one image, output blocks `OB * g0..OB * g1` (`groups`, in groups of [`OB`]).
    ///
    /// # Safety
    /// As [`Conv16::run`], for one image's `x`, `res` and `out`.
    pub(crate) unsafe fn pixels(
        &self,
        x: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        range: (usize, usize),
        groups: (usize, usize),
    ) {
        x86::sweep(self, x, res, out, range, groups)
    }
}

mod x86 {
    use std::arch::x86_64::*;

    use super::{depth_blocks, Conv16, LANES, OB, PX, ZEROS};

    /// Pixels `from..to`: each group `g0..g1` of up to [`OB`] output blocks over the run, [`PX`] pixels at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sweep(
        cv: &Conv16,
        x: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        (from, to): (usize, usize),
        (g0, g1): (usize, usize),
    ) {
        let blocks = cv.spec.out_channels / LANES;
        for b0 in (g0 * OB..(g1 * OB).min(blocks)).step_by(OB) {
            match blocks - b0 {
                1 => run::<1>(cv, x, res, out, b0, (from, to)),
                2 => run::<2>(cv, x, res, out, b0, (from, to)),
                3 => run::<3>(cv, x, res, out, b0, (from, to)),
                _ => run::<OB>(cv, x, res, out, b0, (from, to)),
            }
        }
    }

    /// Output blocks `b0..b0 + B` over pixels `from..to`.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const B: usize>(
        cv: &Conv16,
        x: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        b0: usize,
        range: (usize, usize),
    ) {
        // The kernel's size as a constant where it is ResNet's (the weights' steps then constant too).
        match (cv.spec.kernel, cv.spec.padding) {
            (1, 0) => tiles::<B, 1>(cv, x, res, out, b0, range),
            (3, _) => tiles::<B, 3>(cv, x, res, out, b0, range),
            _ => tiles::<B, 0>(cv, x, res, out, b0, range),
        }
    }

    /// [`run`] for a kernel of `K x K` (`0`: the spec's): the depth in blocks of [`depth_blocks`] input blocks, each
    /// swept over the run's pixels, [`PX`] at a time, the sums of a block added to the output's partial ones.
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles<const B: usize, const K: usize>(
        cv: &Conv16,
        x: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        b0: usize,
        (from, to): (usize, usize),
    ) {
        let k = if K > 0 { K } else { cv.spec.kernel };
        let blocks = cv.spec.in_channels / LANES;
        let step = depth_blocks(B, k * k).unwrap_or(blocks).max(1);
        // At least one pass, so that a conv of no input channels still stores its bias.
        for c0 in (0..blocks.max(1)).step_by(step) {
            let depth = (c0, (c0 + step).min(blocks));
            let mut p0 = from;
            while p0 + PX <= to {
                tile::<B, PX, K>(cv, x, res, out, (b0, p0), depth);
                p0 += PX;
            }
            match to - p0 {
                0 => {}
                1 => tile::<B, 1, K>(cv, x, res, out, (b0, p0), depth),
                2 => tile::<B, 2, K>(cv, x, res, out, (b0, p0), depth),
                3 => tile::<B, 3, K>(cv, x, res, out, (b0, p0), depth),
                4 => tile::<B, 4, K>(cv, x, res, out, (b0, p0), depth),
                _ => tile::<B, 5, K>(cv, x, res, out, (b0, p0), depth),
            }
        }
    }

    /// One register tile: output blocks `b0..b0 + B` at output pixels `p0..p0 + P` (raster order), a `K x K`
    /// kernel (`0`: the spec's; `1` only without padding), the sums over input blocks `c0..c1`: added to what the
    /// output holds unless `c0` is the first, stored as they are unless `c1` is the last, where bias, residual and
    /// ReLU are applied first.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const B: usize, const P: usize, const K: usize>(
        cv: &Conv16,
        x: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        (b0, p0): (usize, usize),
        (c0, c1): (usize, usize),
    ) {
        let s = &cv.spec;
        let k = if K > 0 { K } else { s.kernel };
        let depth = s.in_channels * k * k;
        let (h, w) = cv.hw;
        let (oh, ow) = cv.out_hw();
        let (plane_in, plane_out) = (h * w * LANES, oh * ow * LANES);
        // The input position under each output pixel's first tap (may be in the padding); one division per tile.
        let (mut oy, mut ox) = (p0 / ow, p0 % ow);
        let origin: [(isize, isize); P] = std::array::from_fn(|_| {
            let here = (
                (oy * s.stride) as isize - s.padding as isize,
                (ox * s.stride) as isize - s.padding as isize,
            );
            ox += 1;
            if ox == ow {
                (oy, ox) = (oy + 1, 0);
            }
            here
        });
        let at = |b: usize, p: usize| (b0 + b) * plane_out + (p0 + p) * LANES;
        let mut acc = [[_mm512_setzero_ps(); P]; B];
        if c0 > 0 {
            for (b, row) in acc.iter_mut().enumerate() {
                for (p, sum) in row.iter_mut().enumerate() {
                    *sum = _mm512_loadu_ps(out.add(at(b, p)));
                }
            }
        }
        let weights = cv.w.as_ptr().add(b0 * depth * LANES);
        // A block's last conv: the next tile's residual and output lines fetched while this one's depth runs (at
        // batch 8 ResNet-50 layer1's 64 -> 256 1x1 reads and writes 25 MB each; as for our GEMM's tiles, the
        // hardware prefetcher alone left it 1.08-1.15x NCHW's time, against 0.94-1.00x with them).
        if let (Some(r), true) = (res, c1 == s.in_channels / LANES) {
            for b in 0..B {
                for p in 0..P {
                    let ahead = at(b, p + PX);
                    _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(ahead).cast());
                    _mm_prefetch::<_MM_HINT_T0>(out.wrapping_add(ahead).cast());
                }
            }
        }
        for cb in c0..c1 {
            let xb = x.add(cb * plane_in);
            for tap in 0..k * k {
                let (ky, kx) = ((tap / k * s.dilation) as isize, (tap % k * s.dilation) as isize);
                // Each pixel's line for this tap: in the map, or the zero line (a 1x1 without padding: always in).
                let line: [*const f32; P] = std::array::from_fn(|p| {
                    let (iy, ix) = (origin[p].0 + ky, origin[p].1 + kx);
                    match K == 1 || (iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w) {
                        true => xb.add((iy as usize * w + ix as usize) * LANES),
                        false => ZEROS.as_ptr(),
                    }
                });
                let wt = weights.add((cb * LANES * k * k + tap) * LANES);
                for i in 0..LANES {
                    // Step `(cb * 16 + i) * taps + tap` of each block's panel.
                    let wv: [__m512; B] =
                        std::array::from_fn(|b| _mm512_loadu_ps(wt.add((b * depth + i * k * k) * LANES)));
                    for (p, &l) in line.iter().enumerate() {
                        let xv = _mm512_set1_ps(*l.add(i));
                        for (row, &wb) in acc.iter_mut().zip(&wv) {
                            row[p] = _mm512_fmadd_ps(wb, xv, row[p]);
                        }
                    }
                }
            }
        }
        if c1 < s.in_channels / LANES {
            for (b, row) in acc.iter().enumerate() {
                for (p, &sum) in row.iter().enumerate() {
                    _mm512_storeu_ps(out.add(at(b, p)), sum);
                }
            }
            return;
        }
        let zero = _mm512_setzero_ps();
        for (b, row) in acc.iter().enumerate() {
            let bias = _mm512_loadu_ps(cv.bias.as_ptr().add((b0 + b) * LANES));
            for (p, &sum) in row.iter().enumerate() {
                let at = at(b, p);
                let mut y = _mm512_add_ps(sum, bias);
                if let Some(r) = res {
                    y = _mm512_add_ps(y, _mm512_loadu_ps(r.add(at)));
                }
                if cv.relu {
                    y = _mm512_max_ps(y, zero);
                }
                _mm512_storeu_ps(out.add(at), y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::layers::engine::tests::naive;

    /// NCHW -> NCHW16c, by the definition.
    fn blocked(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    out[((i * c / LANES + ch / LANES) * hw + p) * LANES + ch % LANES] = x[(i * c + ch) * hw + p];
                }
            }
        }
        out
    }

    /// OIHW weights -> panels of 16 output channels over the depth.
    fn panels(w: &[f32], o: usize, depth: usize) -> Vec<f32> {
        let mut out = vec![0.0; o * depth];
        for oc in 0..o {
            for k in 0..depth {
                out[((oc / LANES) * depth + k) * LANES + oc % LANES] = w[oc * depth + k];
            }
        }
        out
    }

    /// Values that are exact in f32 sums of a few thousand terms: small integers divided by 8.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s % 17) as f32 - 8.0) / 8.0
            })
            .collect()
    }

    /// One case: the kernel (or Winograd's F(m x m, 3x3) on the layout, `winograd16`) against a naive f64 conv on
    /// NCHW, both compared in NCHW16c (Winograd within its rounding, the direct kernel within f32's).
    fn check(n: usize, spec: ConvSpec, (h, w): (usize, usize), residual: bool, relu: bool, threads: usize) {
        check_with(None, n, spec, (h, w), residual, relu, threads)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_with(
        winograd: Option<usize>,
        n: usize,
        spec: ConvSpec,
        (h, w): (usize, usize),
        residual: bool,
        relu: bool,
        threads: usize,
    ) {
        let (c, o) = (spec.in_channels, spec.out_channels);
        let (oh, ow) = (spec.output_size(h), spec.output_size(w));
        let x = values(n * c * h * w, 1 + (n * c * h) as u64);
        let wt = values(o * spec.depth(), 2 + o as u64);
        let bias = values(o, 3);
        let r = values(n * o * oh * ow, 4);
        let want = naive(&x, (n, c, h, w), &wt, &bias, &spec, residual.then_some(&r[..]), relu);
        let (xb, wp, rb, want) = (
            blocked(&x, n, c, h * w),
            panels(&wt, o, spec.depth()),
            blocked(&r, n, o, oh * ow),
            blocked(&want, n, o, oh * ow),
        );
        let mut got = vec![f32::NAN; want.len()];
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let res = residual.then_some(&rb[..]);
        // SAFETY: AVX-512F checked by the caller; the buffers have the shapes `run` needs.
        pool.install(|| unsafe {
            match winograd {
                None => Conv16 {
                    w: &wp,
                    bias: &bias,
                    spec,
                    hw: (h, w),
                    relu,
                }
                .run(&xb, n, res, got.as_mut_ptr(), threads),
                Some(m) => crate::layers::engine::winograd16::Winograd16 {
                    g: &wp,
                    bias: &bias,
                    in_channels: c,
                    out_channels: o,
                    hw: (h, w),
                    relu,
                    m,
                }
                .run(&xb, n, res, got.as_mut_ptr(), threads),
            }
        });
        // Winograd's transforms round (F(4x4)'s scale by up to 8 and sixths): within 1e-5 of the sums' scale.
        let tol = match winograd {
            None => 1e-5,
            Some(_) => 1e-5 * (c as f32).sqrt() * 4.0,
        };
        for (at, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - e).abs() <= tol * e.abs().max(1.0),
                "{winograd:?} {n} x {spec:?} on {h}x{w}, residual {residual}, relu {relu}, {threads} threads: at {at} got {g}, want {e}"
            );
        }
    }

    /// A spec with padding and dilation.
    fn spec(c: usize, o: usize, k: usize, stride: usize, padding: usize, dilation: usize) -> ConvSpec {
        let mut s = ConvSpec::new(c, o, k, stride).with_dilation(dilation);
        s.padding = padding;
        s
    }

    #[test]
    fn resnet_shapes_match_the_naive_conv() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        // ResNet-50's convs, scaled down in size: reduce, expand with the residual, the strided projection, the
        // 3x3 (stride 1 and 2, and dilated as at output stride 8).
        check(2, spec(256, 64, 1, 1, 0, 1), (14, 14), false, true, 2);
        check(2, spec(64, 256, 1, 1, 0, 1), (14, 14), true, true, 2);
        check(1, spec(256, 512, 1, 2, 0, 1), (14, 14), false, false, 2);
        check(1, spec(1024, 256, 1, 1, 0, 1), (7, 7), false, true, 3);
        check(2, spec(64, 64, 3, 1, 1, 1), (14, 14), false, true, 2);
        check(1, spec(128, 128, 3, 2, 1, 1), (15, 15), false, true, 2);
        check(1, spec(64, 64, 3, 1, 2, 2), (9, 9), true, true, 2);
        check(8, spec(32, 48, 1, 1, 0, 1), (5, 5), true, true, 2);
    }

    /// Winograd's F(2x2) and F(4x4) on the layout, ResNet's stride-1 3x3s scaled down: maps that are and are not
    /// whole tiles, chunks over images and threads, the residual.
    #[test]
    fn winograd_matches_the_naive_conv() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for m in [2, 4] {
            check_with(Some(m), 2, spec(64, 64, 3, 1, 1, 1), (14, 14), false, true, 2);
            check_with(Some(m), 1, spec(128, 128, 3, 1, 1, 1), (7, 7), true, true, 2);
            check_with(Some(m), 3, spec(32, 48, 3, 1, 1, 1), (9, 13), true, false, 3);
            check_with(Some(m), 1, spec(16, 16, 3, 1, 1, 1), (1, 1), false, true, 1);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random channel blocks (every tail of the 4-block groups; for 2x2 and 3x3 kernels, depths of one to
        /// three blocks), kernels, strides, padding (up to past the kernel's reach) and dilation, map sizes (every
        /// tail of the 6-pixel tiles, tiles across rows), residual and ReLU, batches, and threads (whole images or
        /// runs of pixels).
        #[test]
        fn matches_the_naive_conv(
            n in 1usize..4,
            cb in 1usize..4,
            ob in 1usize..10,
            k in 1usize..4,
            stride in 1usize..3,
            padding in 0usize..3,
            dilation in 1usize..3,
            h in 1usize..12,
            w in 1usize..12,
            residual: bool,
            relu: bool,
            threads in 1usize..5,
        ) {
            let s = spec(cb * LANES, ob * LANES, k, stride, padding, dilation);
            let reach = (k - 1) * dilation + 1;
            if std::arch::is_x86_feature_detected!("avx512f") && h + 2 * padding >= reach && w + 2 * padding >= reach {
                check(n, s, (h, w), residual, relu, threads);
            }
        }

        /// Winograd on the layout over random channel blocks, map sizes (tiles cut at the edges), batches,
        /// threads (chunks over images), residual and ReLU.
        #[test]
        fn winograd_matches_over_random_shapes(
            m in prop::sample::select(vec![2usize, 4]),
            n in 1usize..4,
            cb in 1usize..4,
            ob in 1usize..6,
            h in 1usize..15,
            w in 1usize..15,
            residual: bool,
            relu: bool,
            threads in 1usize..5,
        ) {
            if std::arch::is_x86_feature_detected!("avx512f") {
                check_with(Some(m), n, spec(cb * LANES, ob * LANES, 3, 1, 1, 1), (h, w), residual, relu, threads);
            }
        }
    }
}
