//! Implicit GEMM: a convolution's B packed straight from its input image, without the unfolded (im2col)
//! copy in between.
//!
//! Row `(ci, i, j)` of B (input channel `ci`, kernel tap `(i, j)`; or `(i, j, ci)`, see
//! [`Implicit::tap_major`]) at column `oy * ow + ox` is the pixel `(ci, oy * stride + i - pad, ox * stride + j -
//! pad)`, or the padding value. A packer fills a strip 16 columns (one vector) at a time: the vector's
//! columns are cut into runs that lie in one output row, and for each tap a run is one masked load at a
//! fixed offset from the channel's first pixel (stride 2: a load twice as wide whose even elements are
//! kept), lanes in the padding keeping the padding value. Those offsets and masks depend on the column
//! block and the tap, not on the channel, so a [`Gather`] works them out once per column block and every
//! channel reuses them. The f32 packers ([`strips`] for the AVX-512 kernel, [`strips_avx2`] for the AVX2 one,
//! [`pairs`] for the bf16 dot-product kernel) are here; the int8 one is `int8::strips_image`.

// Off x86-64 the engine plans no gathers (the packers that read them are x86-only).
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

/// A stride-1 or stride-2 convolution's input image (C, H, W), read as the GEMM operand B (see the module
/// documentation).
#[derive(Clone, Copy)]
pub(crate) struct Implicit<T> {
    pub x: *const T,
    pub chw: (usize, usize, usize),
    pub kernel: usize,
    /// 1 or 2.
    pub stride: usize,
    /// The rows are in (tap, channel) order (row `t * C + ci`; int8 only, C a multiple of 4, so that a
    /// depth quad is four channels at one tap); else im2col's (channel, tap).
    pub tap_major: bool,
    pub pad: usize,
    pub ow: usize,
    /// The output column (`oy * ow + ox`) of the GEMM's column 0.
    pub first_col: usize,
}

impl Implicit<f32> {
    /// The image's size in bytes.
    pub(crate) fn bytes(&self) -> usize {
        4 * self.chw.0 * self.chw.1 * self.chw.2
    }

    /// The input that depth rows `k0 .. k0 + kb` of B read at output columns `col0 .. col0 + n` (relative to
    /// [`Implicit::first_col`]), as a region to fetch ahead: a plane per input channel, in it the run of whole
    /// image rows those output rows' taps reach, or, where the kernel is narrower than the stride (a stride-2
    /// 1x1), a run per output row of just the rows it reads. `None` in (tap, channel) order.
    pub(crate) fn span(&self, (k0, kb): (usize, usize), col0: usize, n: usize) -> Option<super::Region> {
        let (c, h, w) = self.chw;
        let (taps, st) = (self.kernel * self.kernel, self.stride);
        if self.tap_major || kb == 0 || n == 0 || h == 0 || w == 0 {
            return None;
        }
        let (c0, c1) = (k0 / taps, ((k0 + kb - 1) / taps + 1).min(c));
        let (oy0, oy1) = (
            (self.first_col + col0) / self.ow,
            (self.first_col + col0 + n - 1) / self.ow,
        );
        let planes = c1.saturating_sub(c0);
        if self.kernel < st && self.pad == 0 {
            // Rows `oy * st .. oy * st + kernel` of each output row `oy`, all inside the image.
            return Some(super::Region {
                at: self.x.wrapping_add(c0 * h * w + oy0 * st * w),
                planes,
                plane_ld: h * w,
                runs: oy1 - oy0 + 1,
                run_ld: st * w,
                cols: self.kernel * w,
            });
        }
        let y0 = (oy0 * st).saturating_sub(self.pad).min(h - 1);
        let y1 = (oy1 * st + self.kernel - 1).saturating_sub(self.pad).min(h - 1);
        let at = self.x.wrapping_add(c0 * h * w + y0 * w);
        Some(super::Region::rows(at, h * w, planes, (y1 + 1 - y0.min(y1 + 1)) * w))
    }
}

/// One masked load of a [`Gather`]: the lanes it fills, the same lanes as even elements of a load twice as
/// wide (stride 2), and the offset from the channel's first pixel that lane 0 would read (lane `l` reads
/// `stride * l` past it).
#[derive(Clone, Copy)]
pub(crate) struct Load {
    pub mask: u16,
    pub even: u32,
    pub off: isize,
}

/// The loads that gather one column block of B, per (16-column vector, tap): see the module documentation.
#[derive(Default)]
pub(crate) struct Gather {
    taps: usize,
    /// The loads of vector `u` and tap `t`: `loads[start[u * taps + t]..start[u * taps + t + 1]]`.
    start: Vec<usize>,
    loads: Vec<Load>,
}

impl Gather {
    /// The loads for output columns `col0 .. col0 + n` of `img`, in `vectors` vectors of 16 (those past `n`
    /// load nothing).
    pub(crate) fn new<T>(img: &Implicit<T>, col0: usize, n: usize, vectors: usize) -> Gather {
        let mut g = Gather::default();
        g.plan(img, col0, n, vectors);
        g
    }

    /// [`Gather::new`] into this one's buffers.
    pub(crate) fn plan<T>(&mut self, img: &Implicit<T>, col0: usize, n: usize, vectors: usize) {
        let (_, h, w) = img.chw;
        let (ow, st, pad) = (img.ow, img.stride as isize, img.pad as isize);
        debug_assert!((1..=2).contains(&st));
        self.taps = img.kernel * img.kernel;
        self.start.clear();
        self.loads.clear();
        for u in 0..vectors {
            let cols = n.saturating_sub(16 * u).min(16);
            // Runs of lanes within one output row: (first lane, lanes, oy, ox of the first lane).
            let mut runs = [(0usize, 0usize, 0usize, 0usize); 16];
            let mut count = 0;
            let mut l = 0;
            while l < cols {
                let col = col0 + 16 * u + l;
                let (oy, ox) = (col / ow, col % ow);
                let len = (ow - ox).min(cols - l);
                runs[count] = (l, len, oy, ox);
                count += 1;
                l += len;
            }
            for t in 0..self.taps {
                self.start.push(self.loads.len());
                let (i, j) = ((t / img.kernel) as isize, (t % img.kernel) as isize);
                for &(l, len, oy, ox) in &runs[..count] {
                    let y = oy as isize * st + i - pad;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    // Lanes `l + d` whose input column `shift + st * d` lies in `[0, w)`.
                    let shift = ox as isize * st + j - pad;
                    let lo = ((-shift).max(0) + st - 1) / st;
                    let hi = match w as isize - shift {
                        room if room > 0 => ((room - 1) / st + 1).min(len as isize),
                        _ => 0,
                    };
                    if hi > lo {
                        let mask = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) << l;
                        self.loads.push(Load {
                            mask: mask as u16,
                            even: spread(mask as u16),
                            off: y * w as isize + shift - st * l as isize,
                        });
                    }
                }
            }
        }
        self.start.push(self.loads.len());
    }

    /// The loads of vector `u` (columns `16 u ..` of the block) at tap `t`.
    #[inline(always)]
    pub(crate) fn at(&self, u: usize, t: usize) -> &[Load] {
        let i = u * self.taps + t;
        &self.loads[self.start[i]..self.start[i + 1]]
    }
}

/// Bit `b` of `m` moved to bit `2 b`: a lane mask as the mask of the even elements of a vector twice as long.
fn spread(m: u16) -> u32 {
    let mut x = u32::from(m);
    x = (x | (x << 8)) & 0x00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f;
    x = (x | (x << 2)) & 0x3333_3333;
    (x | (x << 1)) & 0x5555_5555
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{pairs, strips, strips_avx2};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{spread, Gather, Implicit, Load};

    /// 16 columns of one row of B: the channel's pixels (`x` at its first) the loads pick, 0 elsewhere.
    #[inline(always)]
    unsafe fn row(x: *const f32, loads: &[Load], stride: usize, evens: __m512i) -> __m512 {
        let mut v = _mm512_setzero_ps();
        for ld in loads {
            let at = x.wrapping_offset(ld.off);
            v = match stride {
                1 => _mm512_mask_loadu_ps(v, ld.mask, at),
                // Lane `l` is element `2 l` of the 32 from `at`: load the valid lanes' elements, keep the evens.
                _ => {
                    let lo = _mm512_maskz_loadu_ps(ld.even as u16, at);
                    let hi = _mm512_maskz_loadu_ps((ld.even >> 16) as u16, at.wrapping_add(16));
                    _mm512_mask_mov_ps(v, ld.mask, _mm512_permutex2var_ps(lo, evens, hi))
                }
            };
        }
        v
    }

    /// Lanes `8 half .. 8 half + 8` of what [`row`] gives (16 columns of one row of B), with AVX2: each load of
    /// the plan is one or (stride 2) two masked 8-float loads, blended in under its lanes.
    #[inline(always)]
    unsafe fn row8(x: *const f32, loads: &[Load], stride: usize, half: usize) -> __m256 {
        let mut v = _mm256_setzero_ps();
        for ld in loads {
            let mask = (ld.mask >> (8 * half)) as u8;
            if mask == 0 {
                continue;
            }
            // Lane `8 half` reads `stride * 8 half` past lane 0's offset.
            let at = x.wrapping_offset(ld.off).wrapping_add(stride * 8 * half);
            let lanes = lane_mask(mask);
            let got = match stride {
                1 => _mm256_maskload_ps(at, lanes),
                // Lane `l` is element `2 l` of the 16 from `at`: the valid lanes' elements, then the evens of
                // each load side by side (`shufps` keeps 0 and 2 of every four; `vpermpd` orders the pairs).
                _ => {
                    let lo = _mm256_maskload_ps(at, lane_mask(spread(u16::from(mask & 0xf)) as u8));
                    let hi = _mm256_maskload_ps(at.wrapping_add(8), lane_mask(spread(u16::from(mask >> 4)) as u8));
                    let evens = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi));
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(evens))
                }
            };
            v = _mm256_blendv_ps(v, got, _mm256_castsi256_ps(lanes));
        }
        v
    }

    /// Bit `l` of `m` as lane `l` of a `vmaskmovps` mask (all ones or zero).
    #[inline(always)]
    unsafe fn lane_mask(m: u8) -> __m256i {
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(i32::from(m)), bits), bits)
    }

    /// [`strips`] with AVX2 (the AVX2 engine's 16-column strips: `nr` a multiple of 16).
    ///
    /// # Safety
    /// AVX2 and FMA; as [`strips`] (`out` 32-byte aligned).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn strips_avx2(
        img: &Implicit<f32>,
        gather: &Gather,
        (k0, kb): (usize, usize),
        n: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        each_vector(img, gather, (k0, kb), n, nr, out, |x, loads, dst| {
            for half in 0..2 {
                _mm256_store_ps(dst.add(8 * half), row8(x, loads, img.stride, half));
            }
        });
    }

    /// The indices of the even elements of two vectors, for `vpermt2ps`.
    #[inline(always)]
    unsafe fn evens() -> __m512i {
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0)
    }

    /// The (channel, tap) of B's depth row `r` in im2col's order.
    #[inline(always)]
    fn channel_tap(r: usize, taps: usize) -> (usize, usize) {
        (r / taps, r % taps)
    }

    /// Packs depth rows `k0 .. k0 + kb` of B, columns `0 .. n` of `gather`'s block, from the f32 image
    /// `img` into strips `nr` columns wide, as `pack::strips` packs them from the unfolded B: strip `s` at
    /// `s * kb * nr`, row `r` of it at `r * nr`; zero in the padding and past `n`.
    ///
    /// # Safety
    /// AVX-512F; `img.x` holds the whole image (rows in (channel, tap) order); `gather` was planned for
    /// `img` with at least `ceil(n / nr) * nr / 16` vectors; `out` holds `ceil(n / nr) * kb * nr` floats,
    /// 64-byte aligned.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn strips(
        img: &Implicit<f32>,
        gather: &Gather,
        (k0, kb): (usize, usize),
        n: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        let evens = evens();
        each_vector(img, gather, (k0, kb), n, nr, out, |x, loads, dst| {
            _mm512_store_ps(dst, row(x, loads, img.stride, evens));
        });
    }

    /// The loop of the f32 packers: for each strip, depth row and 16-column vector, `put(x, loads, dst)` writes
    /// at `dst` the 16 floats that `loads` gather from the channel whose first pixel is `x`.
    ///
    /// # Safety
    /// As [`strips`]; `put` writes 16 floats at `dst`.
    #[inline(always)]
    unsafe fn each_vector(
        img: &Implicit<f32>,
        gather: &Gather,
        (k0, kb): (usize, usize),
        n: usize,
        nr: usize,
        out: &mut [f32],
        put: impl Fn(*const f32, &[Load], *mut f32),
    ) {
        let (c, h, w) = img.chw;
        let taps = img.kernel * img.kernel;
        debug_assert!(!img.tap_major && k0 + kb <= c * taps && nr.is_multiple_of(16));
        debug_assert!(out.len() >= n.div_ceil(nr) * kb * nr);
        let vecs = nr / 16;
        for s in 0..n.div_ceil(nr) {
            let strip = out.as_mut_ptr().add(s * kb * nr);
            let (mut ci, mut t) = channel_tap(k0, taps);
            for r in 0..kb {
                let x = img.x.wrapping_add(ci * h * w);
                for v in 0..vecs {
                    put(x, gather.at(s * vecs + v, t), strip.add(r * nr + 16 * v));
                }
                t += 1;
                if t == taps {
                    (ci, t) = (ci + 1, 0);
                }
            }
        }
    }

    /// [`strips`] as bf16 pairs for the dot-product kernel (the layout of `avx512_bf16::strips`): lane
    /// `p * nr + j` of a strip holds rows `k0 + 2 p` and `k0 + 2 p + 1` (0 past `k0 + kb`), `pairs` (at least
    /// `ceil(kb / 2)`) pair rows per strip, the rows past them zero.
    ///
    /// # Safety
    /// As [`strips`], with AVX512-BF16 and BW; `out` holds `ceil(n / nr) * pairs * nr` lanes, 64-byte aligned.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(crate) unsafe fn pairs(
        img: &Implicit<f32>,
        gather: &Gather,
        (k0, kb): (usize, usize),
        n: usize,
        nr: usize,
        pairs: usize,
        out: &mut [u32],
    ) {
        let (c, h, w) = img.chw;
        let taps = img.kernel * img.kernel;
        let kp = kb.div_ceil(2);
        debug_assert!(!img.tap_major && k0 + kb <= c * taps && nr.is_multiple_of(16) && pairs >= kp);
        debug_assert!(out.len() >= n.div_ceil(nr) * pairs * nr);
        let (vecs, evens) = (nr / 16, evens());
        for s in 0..n.div_ceil(nr) {
            let strip = out.as_mut_ptr().add(s * pairs * nr);
            let (mut ci, mut t) = channel_tap(k0, taps);
            for p in 0..kp {
                let x0 = img.x.wrapping_add(ci * h * w);
                let t0 = t;
                t += 1;
                if t == taps {
                    (ci, t) = (ci + 1, 0);
                }
                let (x1, t1) = (img.x.wrapping_add(ci * h * w), t);
                let second = 2 * p + 1 < kb;
                for v in 0..vecs {
                    let u = s * vecs + v;
                    let lo = row(x0, gather.at(u, t0), img.stride, evens);
                    let hi = match second {
                        true => row(x1, gather.at(u, t1), img.stride, evens),
                        false => _mm512_setzero_ps(),
                    };
                    super::super::avx512_bf16::store_pair(lo, hi, strip.add(p * nr + 16 * v));
                }
                t += 1;
                if t == taps {
                    (ci, t) = (ci + 1, 0);
                }
            }
            std::ptr::write_bytes(strip.add(kp * nr), 0, (pairs - kp) * nr);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod tests {
    use super::{Gather, Implicit};

    fn has(feature: &str) -> bool {
        match feature {
            "avx2" => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            _ => std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    /// The shapes the packers are checked on: (channels, height, width, kernel, pad, stride), covering kernels
    /// 1-7, both strides, maps narrower than a vector and maps whose rows a vector crosses several times.
    pub(crate) const SHAPES: [(usize, usize, usize, usize, usize, usize); 12] = [
        (3, 9, 11, 3, 1, 1),
        (2, 5, 3, 3, 1, 1),
        (5, 4, 1, 3, 1, 1),
        (1, 12, 13, 7, 3, 1),
        (3, 6, 7, 1, 0, 1),
        (2, 8, 8, 5, 2, 1),
        (4, 7, 7, 3, 0, 1),
        (3, 9, 11, 3, 1, 2),
        (2, 5, 3, 3, 1, 2),
        (3, 23, 21, 7, 3, 2),
        (4, 14, 14, 1, 0, 2),
        (2, 13, 40, 3, 1, 2),
    ];

    /// The image `x` of `shape` (as in [`SHAPES`]) as a conv of `ow` output columns reads it, from column
    /// `first_col` on.
    fn image(
        x: *const f32,
        (c, h, w, kernel, pad, stride): (usize, usize, usize, usize, usize, usize),
        ow: usize,
        first_col: usize,
    ) -> Implicit<f32> {
        Implicit {
            x,
            chw: (c, h, w),
            kernel,
            stride,
            tap_major: false,
            pad,
            ow,
            first_col,
        }
    }

    /// The naive unfolding of `x` (im2col): row (ci, i, j), column (oy, ox), 0 in the padding; and `ow`.
    fn unfold(x: &[f32], (c, h, w, kernel, pad, st): (usize, usize, usize, usize, usize, usize)) -> (Vec<f32>, usize) {
        let (oh, ow) = ((h + 2 * pad - kernel) / st + 1, (w + 2 * pad - kernel) / st + 1);
        let (k, p) = (c * kernel * kernel, oh * ow);
        let mut b = vec![0.0; k * p];
        for r in 0..k {
            let (ci, tap) = (r / (kernel * kernel), r % (kernel * kernel));
            let (i, j) = (tap / kernel, tap % kernel);
            for col in 0..p {
                let y = (col / ow * st + i) as isize - pad as isize;
                let xx = (col % ow * st + j) as isize - pad as isize;
                if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                    b[r * p + col] = x[ci * h * w + y as usize * w + xx as usize];
                }
            }
        }
        (b, ow)
    }

    /// f32 strips from the image (AVX-512 and AVX2) equal `pack::strips` of the naive unfolding, and bf16 pairs
    /// equal `avx512_bf16::strips` of it: every depth block (odd starts and lengths included), blocks of
    /// columns starting mid-row, partial last strips.
    #[test]
    fn image_strips_match_the_unfolded_ones() {
        if !has("avx2") {
            return;
        }
        let bf16 = crate::layers::engine::avx512_bf16::is_supported();
        for shape in SHAPES {
            let (c, h, w, kernel, pad, st) = shape;
            let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37).sin() + 1.5).collect();
            let (b, ow) = unfold(&x, shape);
            let k = c * kernel * kernel;
            let p = b.len() / k;
            let img = image(x.as_ptr(), shape, ow, 0);
            for nr in [48usize, 32, 16] {
                for col0 in [0, 1, p / 2] {
                    let n = p - col0;
                    let gather = Gather::new(&img, col0, n, n.div_ceil(nr) * nr / 16);
                    for (k0, kb) in [(0, k), (1, k - 1), (0, k.div_ceil(2)), (k / 3, k - k / 3 - k / 4)] {
                        if kb == 0 {
                            continue;
                        }
                        let what = format!("c{c} {h}x{w} k{kernel}/{st} pad{pad} nr{nr} from {col0} rows {k0}+{kb}");
                        let len = n.div_ceil(nr) * kb * nr;
                        let (mut want, mut got) = (vec![f32::NAN; len + 16], vec![f32::NAN; len + 16]);
                        let (a, g) = (want.as_ptr().align_offset(64), got.as_ptr().align_offset(64));
                        unsafe {
                            let from = b.as_ptr().add(k0 * p + col0);
                            crate::layers::engine::pack::strips(from, p, kb, n, nr, &mut want[a..]);
                        }
                        if has("avx512f") {
                            unsafe { super::strips(&img, &gather, (k0, kb), n, nr, &mut got[g..]) };
                            assert_eq!(&got[g..g + len], &want[a..a + len], "f32 {what}");
                        }
                        got.fill(f32::NAN);
                        unsafe { super::strips_avx2(&img, &gather, (k0, kb), n, nr, &mut got[g..]) };
                        assert_eq!(&got[g..g + len], &want[a..a + len], "f32 AVX2 {what}");
                        if !bf16 {
                            continue;
                        }
                        let pairs = kb.div_ceil(2) + 1;
                        let len = n.div_ceil(nr) * pairs * nr;
                        let (mut want, mut got) = (vec![0x5555_5555u32; len + 16], vec![0x5555_5555u32; len + 16]);
                        let (a, g) = (want.as_ptr().align_offset(64), got.as_ptr().align_offset(64));
                        unsafe {
                            let from = b.as_ptr().add(k0 * p + col0);
                            crate::layers::engine::avx512_bf16::strips(from, p, kb, n, nr, pairs, &mut want[a..]);
                            super::pairs(&img, &gather, (k0, kb), n, nr, pairs, &mut got[g..]);
                        }
                        assert_eq!(&got[g..g + len], &want[a..a + len], "bf16 {what}");
                    }
                }
            }
        }
    }

    /// `Implicit::span` holds every pixel that the depth rows and columns asked for read (by the definition,
    /// as `unfold` reads them), with `first_col` set: its planes are consecutive channels, its runs whole image
    /// rows; and a strided 1x1's runs are just the rows it reads.
    #[test]
    fn spans_hold_every_pixel_a_block_reads() {
        for (c, h, w, kernel, pad, st) in SHAPES {
            let (oh, ow) = ((h + 2 * pad - kernel) / st + 1, (w + 2 * pad - kernel) / st + 1);
            let (k, p, taps) = (c * kernel * kernel, oh * ow, kernel * kernel);
            for first_col in [0, p / 3] {
                let img = image(
                    std::ptr::null::<f32>().wrapping_add(64),
                    (c, h, w, kernel, pad, st),
                    ow,
                    first_col,
                );
                let cols = p - first_col;
                for (col0, n) in [(0, cols), (1, cols / 2), (cols / 2, cols - cols / 2), (cols - 1, 1)] {
                    for (k0, kb) in [(0, k), (1, k - 1), (k / 2, k.div_ceil(4)), (k - 1, 1)] {
                        if n == 0 || kb == 0 {
                            continue;
                        }
                        let what =
                            format!("c{c} {h}x{w} k{kernel}/{st} first {first_col} cols {col0}+{n} rows {k0}+{kb}");
                        let r = img.span((k0, kb), col0, n).expect("channel-major");
                        let start = (r.at as usize - img.x as usize) / 4;
                        let (c0, y0w) = (start / (h * w), start % (h * w));
                        assert_eq!(r.plane_ld, h * w, "{what}");
                        assert_eq!((y0w % w, r.cols % w, r.run_ld % w), (0, 0, 0), "{what}: not whole rows");
                        let end = y0w + (r.runs - 1) * r.run_ld + r.cols;
                        assert!(c0 + r.planes <= c && end <= h * w, "{what}: past the image");
                        // Which pixels of a plane the region holds.
                        let held = |pixel: usize| match pixel.checked_sub(y0w) {
                            None => false,
                            Some(off) if r.runs == 1 => off < r.cols,
                            Some(off) => off / r.run_ld < r.runs && off % r.run_ld < r.cols,
                        };
                        let mut read = 0;
                        for row in k0..k0 + kb {
                            let (ci, tap) = (row / taps, row % taps);
                            let (i, j) = (tap / kernel, tap % kernel);
                            for col in first_col + col0..first_col + col0 + n {
                                let y = (col / ow * st + i) as isize - pad as isize;
                                let x = (col % ow * st + j) as isize - pad as isize;
                                if !(0..h as isize).contains(&y) || !(0..w as isize).contains(&x) {
                                    continue;
                                }
                                let pixel = y as usize * w + x as usize;
                                assert!(
                                    ci >= c0 && ci - c0 < r.planes && held(pixel),
                                    "{what}: pixel ({ci}, {y}, {x}) outside the span"
                                );
                                read += 1;
                            }
                        }
                        // A strided 1x1 holds no row it does not read.
                        if kernel < st && read > 0 {
                            assert_eq!(r.cols, w, "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn spread_moves_each_bit_to_twice_its_place() {
        for m in [0u16, 1, 0x8000, 0xffff, 0x1234, 0xa5a5] {
            let naive = (0..16)
                .filter(|b| m >> b & 1 == 1)
                .fold(0u32, |acc, b| acc | 1 << (2 * b));
            assert_eq!(super::spread(m), naive, "{m:#x}");
        }
    }
}
