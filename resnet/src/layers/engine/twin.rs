//! A second product on the first one's packed input: the 1x1 projection shortcut of a residual block, computed
//! from the strips its block's first conv packs.
//!
//! Where a block's first conv and its projection shortcut read the same pixels (ResNet-18/34's stride-2 3x3 with
//! padding 1 and the stride-2 1x1 beside it: the 1x1 reads at output `(y, x)` the pixel `(2 y, 2 x)`, which is
//! the 3x3's centre tap), the 1x1's operand B is a subset of the 3x3's: its row `c` is the 3x3's row
//! `c * taps + tap`. Packed on its own, that B is gathered from the image a second time (a stride-2 gather: two
//! loads and a permute per 16 values), for only `C_in` multiply-adds per value, the shallowest product in the
//! network. Here, as the first conv packs each depth block, the rows of that tap are copied out of its strips
//! (from L1, a copy per value) into strips of their own, and once the first conv's column block is done the
//! projection's tiles multiply them by its weights, in the same depth blocks and with the same kernel as it
//! would run alone, so that its output is the unshared one's to the bit.

use super::{Epilogue, MicroTile, KC};

/// The second product of a [`super::Gemm`] (see the module documentation): `C' = W' B'` plus bias, where row `c` of
/// `B'` is row `c * taps + tap` of the main product's B.
#[derive(Clone, Copy)]
pub(crate) struct Twin {
    /// Its weights as f32 panels of the main product's kernel (`mr` rows; panel `p` at `a + p * k * mr`), from the
    /// tile's first row.
    pub a: *const f32,
    /// Its output rows in this tile.
    pub m: usize,
    /// Its depth: the input channels.
    pub k: usize,
    /// The main product's kernel tap whose rows it reads, of `taps` per channel.
    pub tap: usize,
    pub taps: usize,
    /// Its output at the tile's first row and the main product's first column, with its row stride.
    pub c: *mut f32,
    pub ldc: usize,
    /// Bias (at the tile's first row), residual and ReLU, as the main product's.
    pub epilogue: Epilogue,
}

impl Twin {
    /// Floats of its packed B for a column block of `cols` (a whole number of strips).
    pub(crate) fn len(&self, cols: usize) -> usize {
        self.k * cols
    }

    /// Copies, from the main product's strips of depth rows `k0 .. k0 + kb` (`strips` strips of `nr` columns,
    /// strip `s` at `s * kb * nr`), the rows of this one's tap into its own strips (`mine`: a column block of
    /// `strips * nr` columns, in depth blocks of [`KC`] rows: block `b` at `b * KC * strips * nr`, its strip `s` at
    /// `s * rows * nr`).
    ///
    /// # Safety
    /// `main` and `mine` hold what those layouts reach.
    pub(crate) unsafe fn take(
        &self,
        (k0, kb): (usize, usize),
        (strips, nr): (usize, usize),
        main: *const f32,
        mine: *mut f32,
    ) {
        // The first row at or past `k0` of this tap.
        let first = k0 + (self.tap + self.taps - k0 % self.taps) % self.taps;
        for r in (first..k0 + kb).step_by(self.taps) {
            let c = r / self.taps;
            let (block, row) = (c / KC, c % KC);
            let rows = KC.min(self.k - block * KC);
            let dst = mine.add(block * KC * strips * nr + row * nr);
            let src = main.add((r - k0) * nr);
            for s in 0..strips {
                std::ptr::copy_nonoverlapping(src.add(s * kb * nr), dst.add(s * rows * nr), nr);
            }
        }
    }

    /// Multiplies its strips (`mine`, as [`Twin::take`] fills them, for output columns `j0 .. j0 + cols` of the
    /// tile) by its weights with `kernel`, whose tile is `mr` x `nr` and takes up to `extra` columns of a next
    /// strip ([`super::Extra`]), and stores the result through the epilogue.
    ///
    /// # Safety
    /// As [`Twin::take`]; every row of `mine` for this column block was taken; `c` covers the tile's rows and
    /// columns; `kernel` runs on this CPU.
    pub(crate) unsafe fn multiply(
        &self,
        mine: *const f32,
        (j0, cols): (usize, usize),
        super::MicroKernel {
            tile: kernel,
            mr,
            nr,
            extra,
        }: super::MicroKernel,
    ) {
        let (strips, panels) = (cols.div_ceil(nr), self.m.div_ceil(mr));
        // The last strip's few columns on the full strips, as `blocked` multiplies them (the same sums).
        let fused = super::Fused::of(cols, nr, extra);
        let tile_strips = fused.map_or(strips, |f| f.full);
        let a = |p: usize, block: usize| self.a.wrapping_add(p * self.k * mr + block * KC * mr);
        let blocks = self.k.div_ceil(KC);
        for block in 0..blocks {
            let rows = KC.min(self.k - block * KC);
            let last = block + 1 == blocks;
            for s in 0..tile_strips {
                for p in 0..panels {
                    let next = match p + 1 < panels {
                        true => a(p + 1, block),
                        false => a(0, block),
                    };
                    let i0 = p * mr;
                    kernel(&MicroTile {
                        a: a(p, block),
                        rows: mr.min(self.m - i0),
                        b: mine.add(block * KC * strips * nr + s * rows * nr),
                        cols: nr.min(cols - s * nr),
                        k: rows,
                        next_a: next,
                        c: self.c.add(i0 * self.ldc + j0 + s * nr),
                        ldc: self.ldc,
                        first: block == 0,
                        epilogue: last.then(|| Epilogue {
                            bias: self.epilogue.bias.add(i0),
                            residual: self.epilogue.residual.map(|(r, ld)| (r.add(i0 * ld + j0 + s * nr), ld)),
                            relu: self.epilogue.relu,
                        }),
                        fetch: super::Fetch::NONE,
                        extra: fused.map_or(super::Extra::NONE, |f| {
                            let at = j0 + f.full * nr;
                            let r = self
                                .epilogue
                                .residual
                                .map_or(std::ptr::null(), |(r, ld)| r.add(i0 * ld + at));
                            let b = mine.add(block * KC * strips * nr + f.full * rows * nr);
                            f.extra(s, b, self.c.add(i0 * self.ldc + at), r)
                        }),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::{Device, Result, Tensor};
    use proptest::prelude::*;

    use super::super::tests::{max_err, naive, uniform};
    use super::super::{Engine, Lowering};
    use crate::layers::conv::ConvSpec;
    use crate::layers::cpu_conv::PackedConv;

    /// A conv `(o1, k, pad, stride)` and the 1x1 `o2`-channel projection of the same stride beside it, on `n`
    /// images of `c` x `h` x `w` on a pool of `threads`: on every micro-kernel engine this CPU runs, where they
    /// share their input ([`PackedConv::shares_input`], which `shares` says they should), each output is the one
    /// its conv gives alone, bit for bit, and the definition's (f64 sums); where they cannot, `forward_shared`
    /// says so.
    #[allow(clippy::too_many_arguments)]
    fn check(
        n: usize,
        c: usize,
        (o1, k, pad, stride): (usize, usize, usize, usize),
        o2: usize,
        (h, w): (usize, usize),
        relu: bool,
        threads: usize,
        seed: u64,
    ) -> Result<bool> {
        let dev = Device::Cpu;
        let mut s1 = ConvSpec::new(c, o1, k, stride);
        s1.padding = pad;
        let s2 = ConvSpec::new(c, o2, 1, stride);
        let mut next = uniform(seed);
        let mut values = |len: usize| (0..len).map(|_| next()).collect::<Vec<f32>>();
        let (x, w1, w2, b1, b2) = (
            values(n * c * h * w),
            values(o1 * c * k * k),
            values(o2 * c),
            values(o1),
            values(o2),
        );
        let want1 = naive(&x, (n, c, h, w), &w1, &b1, &s1, None, relu);
        let want2 = naive(&x, (n, c, h, w), &w2, &b2, &s2, None, false);
        let xt = Tensor::from_vec(x, (n, c, h, w), &dev)?;
        let (b1, b2) = (Tensor::new(b1, &dev)?, Tensor::new(b2, &dev)?);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(candle_core::Error::wrap)?;
        let mut shared = false;
        for engine in [Engine::Avx512, Engine::Avx2Fma]
            .into_iter()
            .filter(|e| e.is_supported())
        {
            let main = Arc::new(PackedConv::from_vec_lowered(
                w1.clone(),
                Some(&b1),
                s1,
                engine,
                Lowering::Gemm,
            )?);
            let twin = Arc::new(PackedConv::from_vec(w2.clone(), Some(&b2), s2, engine)?);
            // Whether the pair shares depends on the pool it runs in (its thread count): asked there.
            let (got, alone, shares) = pool.install(|| -> Result<_> {
                let got = main.forward_shared(&xt, &twin, relu)?;
                let alone = (main.forward(&xt, None, relu)?, twin.forward(&xt, None, false)?);
                Ok((got, alone, main.shares_input(&twin, (n, c, h, w))))
            })?;
            let what =
                format!("{engine:?}: n{n} c{c} {o1}x{k}x{k} p{pad} s{stride} + {o2}x1x1, {h}x{w}, {threads} threads");
            assert_eq!(got.is_some(), shares, "{what}");
            let Some((y, t)) = got else { continue };
            shared = true;
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            let (y, t) = (flat(&y)?, flat(&t)?);
            assert_eq!(y, flat(&alone.0)?, "{what}: the conv differs from its run alone");
            assert_eq!(t, flat(&alone.1)?, "{what}: the projection differs from its run alone");
            let tol = |depth: usize| 1e-5 * depth as f32 + 1e-5;
            assert!(
                max_err(&y, &want1) <= tol(c * k * k),
                "{what}: the conv against the definition"
            );
            assert!(
                max_err(&t, &want2) <= tol(c),
                "{what}: the projection against the definition"
            );
        }
        Ok(shared)
    }

    /// ResNet-18's strided 3x3 and its projection at batch 1 and 8 (layer2.0's channels at a quarter, over maps of
    /// its sizes), with batches that split images over the threads, images over threads with a product over the
    /// batch for their last columns, and one image's rows over the threads; depths over several `KC` blocks on
    /// both sides; kernels 5 and 1 (the "stride on the first 1x1" bottleneck); and convs that cannot share.
    #[test]
    fn shared_convs_are_the_convs_alone() -> Result<()> {
        let shares = |ok: Result<bool>, want: bool| assert_eq!(ok.unwrap(), want && Engine::Avx2Fma.is_supported());
        shares(check(1, 16, (32, 3, 1, 2), 32, (56, 56), true, 2, 1), true);
        shares(check(8, 16, (32, 3, 1, 2), 32, (28, 28), true, 2, 2), true);
        shares(check(2, 16, (48, 3, 1, 2), 24, (28, 28), false, 2, 3), true);
        shares(check(1, 24, (48, 3, 1, 2), 96, (14, 14), true, 2, 4), true);
        shares(check(3, 8, (24, 3, 1, 2), 24, (15, 17), true, 7, 5), true);
        shares(check(2, 150, (16, 3, 1, 2), 16, (13, 40), true, 2, 6), true);
        shares(check(2, 12, (16, 5, 2, 2), 8, (19, 21), true, 3, 7), true);
        shares(check(2, 20, (24, 1, 0, 2), 48, (14, 14), true, 2, 8), true);
        shares(check(1, 20, (24, 3, 1, 1), 48, (9, 11), true, 1, 9), true);
        // Maps of another size (no padding), a 3x3 without its centre at the 1x1's pixel (padding 0 but
        // the same size is impossible; stride 3 is no implicit GEMM), output channels off the panels.
        shares(check(1, 8, (16, 3, 0, 2), 16, (12, 12), true, 2, 10), false);
        shares(check(1, 8, (16, 3, 1, 3), 16, (12, 12), true, 2, 11), false);
        shares(check(1, 8, (12, 3, 1, 2), 16, (12, 12), true, 2, 12), false);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Random shapes: where the pair shares its input, each output is its conv's alone and the definition's.
        #[test]
        fn random_shared_convs_are_the_convs_alone(
            n in 1usize..5,
            c in 1usize..40,
            o1 in prop::sample::select(vec![24usize, 48]),
            o2 in prop::sample::select(vec![24usize, 72]),
            k in prop::sample::select(vec![1usize, 3, 3, 5]),
            stride in 1usize..3,
            h in 1usize..30,
            w in 1usize..60,
            relu: bool,
            threads in 1usize..4,
            seed: u64,
        ) {
            let pad = k / 2;
            prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
            check(n, c, (o1, k, pad, stride), o2, (h, w), relu, threads, seed).unwrap();
        }
    }
}
