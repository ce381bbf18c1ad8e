//! The classifier's fully connected layer on the CPU, `y = x W^T + b`, in one pass over the weights shared by
//! the thread pool.
//!
//! For a batch of a few images this product is bound by memory, not arithmetic: ResNet-50's `fc` reads 8 MB of
//! weights to do 2 M multiply-adds per image. Candle's matmul (the `gemm` crate) runs it on one thread, so at
//! batch 1 the weights streamed in at one core's pace (~1 ms in the forward pass, where ONNX Runtime's `Gemm`
//! took ~0.35 ms). Here the output features are cut into blocks spread over the pool; each block's four weight
//! rows at a time are multiplied by every image (two images per pass over them, so that the rows are read from
//! memory once and from L1 after), with the bias added as each logit is stored. The weights are read in place,
//! as the checkpoint holds them: no second copy.
//!
//! Only for inference (no input tracks a gradient) of f32 on our micro-kernels' CPUs (AVX2 and FMA);
//! [`forward`] gives `None` otherwise, and the caller multiplies with Candle, which is also the reference the
//! tests hold this against.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::Engine;

/// Output features per task: at least this many, so that a task streams ~0.5 MB of ResNet-50's weights.
const MIN_ROWS: usize = 64;

/// `x W^T + b` for `x` (N, K), `w` (M, K) and `b` (M) on the CPU as described in the module documentation, or
/// `None` where this path does not apply (another device or dtype, a gradient to track, the portable
/// engine, a CPU without AVX2/FMA), and the caller should use Candle's product.
pub(crate) fn forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    let inference = !x.track_op() && !w.track_op() && !b.is_some_and(Tensor::track_op);
    let cpu_f32 = [Some(x), Some(w), b]
        .into_iter()
        .flatten()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !inference || !cpu_f32 || x.rank() != 2 || !supported() {
        return Ok(None);
    }
    let x = x.contiguous()?;
    Ok(Some(x.apply_op1_no_bwd(&Linear { w, b })?))
}

/// True when this CPU runs the kernel and the convolutions are not on the portable engine.
fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Engine::current() != Engine::Portable
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = Engine::current();
        false
    }
}

/// The op: the input is its operand, the weight and bias are read from their tensors.
struct Linear<'a> {
    w: &'a Tensor,
    b: Option<&'a Tensor>,
}

/// A tensor's contiguous f32 CPU data.
fn data<'s>(storage: &'s Storage, layout: &Layout, what: &str) -> Result<&'s [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(d)), Some((start, end))) => Ok(&d[start..end]),
        _ => bail!("linear: the {what} is not a contiguous f32 CPU tensor"),
    }
}

impl CustomOp1 for Linear<'_> {
    fn name(&self) -> &'static str {
        "zoo-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(xs), Some((start, end))) = (s, l.contiguous_offsets()) else {
            bail!("linear: the input is not a contiguous f32 CPU tensor")
        };
        let x = &xs[start..end];
        let (n, k) = l.shape().dims2()?;
        let (m, kw) = self.w.dims2()?;
        if kw != k || self.b.is_some_and(|b| b.dims() != [m]) {
            bail!(
                "linear: input {:?}, weight {:?} and bias {:?} do not fit",
                l.dims(),
                self.w.dims(),
                self.b.map(Tensor::dims)
            )
        }
        let w_guard = self.w.storage_and_layout();
        let w = data(&w_guard.0, w_guard.1, "weight")?;
        let b_guard = self.b.map(Tensor::storage_and_layout);
        let b = match &b_guard {
            Some(g) => Some(data(&g.0, g.1, "bias")?),
            None => None,
        };
        let mut out = vec![0f32; n * m];
        // Two tasks per thread (so that a thread that starts late still gets a share), whole passes of rows.
        let rows = m.div_ceil(rayon::current_num_threads() * 2).max(MIN_ROWS).div_ceil(4) * 4;
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..m.div_ceil(rows)).into_par_iter().for_each(|t| {
            let (r0, r1) = (t * rows, ((t + 1) * rows).min(m));
            // SAFETY: tasks write disjoint columns `r0..r1` of the (n, m) output; `supported()` checked the CPU.
            unsafe { block(x, (n, k), &w[r0 * k..r1 * k], b.map(|b| &b[r0..r1]), out_ptr.at(r0), m) };
        });
        Ok((CpuStorage::F32(out), Shape::from((n, m))))
    }
}

/// The output, shared by the tasks, which write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
impl SendPtr {
    /// The output from element `i` on.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

// SAFETY: only used to hand disjoint output columns to the pool's tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// The logits of weight rows `w` (R, K) for every image of `x` (N, K): `out[i * ldo + r] = b[r] + x_i . w_r`.
///
/// # Safety
/// `out` covers `n` rows of `ldo` floats, of which this call writes the first `R`; on x86-64 the CPU has AVX2
/// and FMA.
unsafe fn block(x: &[f32], (n, k): (usize, usize), w: &[f32], b: Option<&[f32]>, out: *mut f32, ldo: usize) {
    #[cfg(target_arch = "x86_64")]
    x86::block(x, (n, k), w, b, out, ldo);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, n, k, w, b, out, ldo);
        unreachable!("the linear kernel runs on x86-64 only (`supported`)")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Weight rows per pass.
    const R: usize = 4;
    /// Images per pass.
    const B: usize = 2;

    /// See [`super::block`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(
        x: &[f32],
        (n, k): (usize, usize),
        w: &[f32],
        b: Option<&[f32]>,
        out: *mut f32,
        ldo: usize,
    ) {
        let rows = w.len() / k.max(1);
        for r0 in (0..rows).step_by(R) {
            for i0 in (0..n).step_by(B) {
                match (rows - r0 >= R, n - i0 >= B) {
                    (true, true) => pass::<R, B>(x, i0, k, w, r0, b, out, ldo),
                    (true, false) => pass::<R, 1>(x, i0, k, w, r0, b, out, ldo),
                    (false, true) => (r0..rows).for_each(|r| pass::<1, B>(x, i0, k, w, r, b, out, ldo)),
                    (false, false) => (r0..rows).for_each(|r| pass::<1, 1>(x, i0, k, w, r, b, out, ldo)),
                }
            }
        }
    }

    /// Rows `r0 .. r0 + RR` by images `i0 .. i0 + BB`: one 8-lane sum per pair, 8 depth steps per load, then
    /// the depth's last `k % 8` steps one at a time.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn pass<const RR: usize, const BB: usize>(
        x: &[f32],
        i0: usize,
        k: usize,
        w: &[f32],
        r0: usize,
        b: Option<&[f32]>,
        out: *mut f32,
        ldo: usize,
    ) {
        let (xp, wp) = (x.as_ptr().add(i0 * k), w.as_ptr().add(r0 * k));
        let mut acc = [[_mm256_setzero_ps(); BB]; RR];
        let full = k / 8 * 8;
        for kk in (0..full).step_by(8) {
            let xs: [__m256; BB] = std::array::from_fn(|i| _mm256_loadu_ps(xp.add(i * k + kk)));
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(wp.add(r * k + kk));
                for (a, xv) in row.iter_mut().zip(&xs) {
                    *a = _mm256_fmadd_ps(wv, *xv, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (i, a) in row.iter().enumerate() {
                let mut sum = hsum(*a);
                for kk in full..k {
                    sum += *wp.add(r * k + kk) * *xp.add(i * k + kk);
                }
                *out.add((i0 + i) * ldo + r0 + r) = sum + b.map_or(0.0, |b| b[r0 + r]);
            }
        }
    }

    /// The sum of a vector's 8 lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The product against a naive f64 one over shapes that do and do not fill the kernel's blocks (rows
    /// past a multiple of 4, an odd image, depths that are not a multiple of 8, one output), with and without
    /// a bias, on the pool and on one thread.
    #[test]
    fn linear_matches_a_naive_product() -> Result<()> {
        if !supported() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(candle_core::Error::wrap)?;
        for (n, k, m) in [
            (1, 2048, 1000),
            (8, 2048, 1000),
            (3, 7, 5),
            (2, 8, 1),
            (5, 33, 130),
            (1, 1, 3),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, m, &dev)?;
            let (xv, wv, bv) = (x.to_vec2::<f32>()?, w.to_vec2::<f32>()?, b.to_vec1::<f32>()?);
            for bias in [true, false] {
                // Each logit, and the sum of its terms' magnitudes (which bounds f32's rounding error).
                let want: Vec<Vec<(f64, f64)>> = (0..n)
                    .map(|i| {
                        (0..m)
                            .map(|o| {
                                let terms = (0..k).map(|j| f64::from(xv[i][j]) * f64::from(wv[o][j]));
                                let (dot, size) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                                let b = if bias { f64::from(bv[o]) } else { 0.0 };
                                (dot + b, size + b.abs())
                            })
                            .collect()
                    })
                    .collect();
                for single in [false, true] {
                    let run = || forward(&x, &w, bias.then_some(&b));
                    let got = match single {
                        false => run()?,
                        true => one.install(run)?,
                    };
                    let got = got.expect("the fast path applies").to_vec2::<f32>()?;
                    for (g, (w, size)) in got.iter().flatten().zip(want.iter().flatten()) {
                        let err = (f64::from(*g) - w).abs();
                        assert!(err <= 1e-6 * size, "n {n} k {k} m {m} bias {bias}: {g} vs {w}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Where a gradient is tracked (a trainable weight, as when fine-tuning the head), the path steps aside, so
    /// that Candle's differentiable product runs.
    #[test]
    fn linear_leaves_training_to_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 16), &dev)?;
        let w = Var::randn(0f32, 1.0, (4, 16), &dev)?;
        assert!(forward(&x, w.as_tensor(), None)?.is_none());
        let w = w.as_tensor().detach();
        assert_eq!(forward(&x, &w, None)?.is_some(), supported());
        Ok(())
    }
}
