//! The pooling ops a ResNet needs, with PyTorch's exact boundary rules.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::take_strided;

/// `nn.MaxPool2d(3, stride=2, padding=1)`: the stem's pool, padding as -inf like PyTorch's.
///
/// On an f32 CPU tensor outside autograd it runs as one pass over the input (`MaxPool3x3S2`); Candle's
/// own `max_pool2d` needs a padded copy first and took 10% of a ResNet-18 forward pass at batch 1. A tensor
/// that tracks gradients takes [`max_pool_3x3_s2_differentiable`] (Candle has no backward for a pool whose
/// kernel differs from its stride).
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        return max_pool_3x3_s2_differentiable(x);
    }
    if matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::U8) {
        return x.contiguous()?.apply_op1_no_bwd(&MaxPool3x3S2);
    }
    pad_neg_inf(x)?.max_pool2d_with_stride(3, 2)
}

/// One -inf row and column on each side of the spatial dimensions.
fn pad_neg_inf(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let side = Tensor::full(f32::NEG_INFINITY, (n, c, h, 1), x.device())?.to_dtype(x.dtype())?;
    let x = Tensor::cat(&[&side, x, &side], 3)?;
    let row = Tensor::full(f32::NEG_INFINITY, (n, c, 1, w + 2), x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[&row, &x, &row], 2)
}

/// `nn.MaxPool2d(3, stride=2, padding=1)` as the maximum of nine strided views of the -inf-padded input,
/// from ops whose gradients Candle knows (on ties Candle splits the gradient where PyTorch picks one input).
pub fn max_pool_3x3_s2_differentiable(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let xp = pad_neg_inf(x)?;
    let mut out: Option<Tensor> = None;
    for i in 0..3 {
        let rows = take_strided(&xp, 2, i, oh, 2)?;
        for j in 0..3 {
            let tap = take_strided(&rows, 3, j, ow, 2)?;
            out = Some(match out {
                None => tap,
                Some(m) => m.maximum(&tap)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("max-pool: no taps".into()))
}

/// `nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)` (timm's avg-down shortcut).
///
/// On an odd side the last window hangs over the edge and averages only the pixels inside. Repeating the
/// last row/column fills the overhang with copies of those pixels, which leaves their mean unchanged.
pub fn avg_pool_2x2_ceil(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = x.pad_with_same(2, 0, h % 2)?.pad_with_same(3, 0, w % 2)?;
    x.avg_pool2d(2)
}

/// timm's `AvgPool2dSame(2, stride=1)`: one zero row and column appended at the bottom and right, then the
/// mean of every 2x2 window (the zeros counted), so the output keeps the input's size.
pub fn avg_pool_2x2_same(x: &Tensor) -> Result<Tensor> {
    let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
    let (_, _, h, w) = x.dims4()?;
    let rows = (x.narrow(2, 0, h - 1)? + x.narrow(2, 1, h - 1)?)?;
    let sum = (rows.narrow(3, 0, w - 1)? + rows.narrow(3, 1, w - 1)?)?;
    sum * 0.25
}

/// `nn.AvgPool2d(k)`: `k x k` windows at stride `k`, floor mode (a ragged last row or column is dropped); the
/// identity for `k = 1`. CLIP's stem pool and anti-aliased strides.
pub fn avg_pool(x: &Tensor, k: usize) -> Result<Tensor> {
    match k {
        1 => Ok(x.clone()),
        _ => x.avg_pool2d(k),
    }
}

/// `x[:, :, ::stride, ::stride]` (option A's subsampling): a 1x1 max-pool with the given stride picks exactly
/// those pixels; a tensor that tracks gradients takes strided views instead.
pub fn subsample(x: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
    }
    if x.track_op() {
        let (_, _, h, w) = x.dims4()?;
        let rows = take_strided(x, 2, 0, h.div_ceil(stride), stride)?;
        return take_strided(&rows, 3, 0, w.div_ceil(stride), stride);
    }
    x.max_pool2d_with_stride(1, stride)
}

/// Mean over the spatial dimensions: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}

/// 3x3 / stride 2 / padding 1 max-pool of a contiguous f32 NCHW tensor, padding treated as -inf (any
/// input sign), planes spread over the thread pool.
struct MaxPool3x3S2;

/// Output side of a 3-wide, stride-2, padding-1 window.
pub(crate) fn pooled(side: usize) -> usize {
    (side + 2 - 3) / 2 + 1
}

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "zoo-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((start, end)), &[n, c, h, w]) = (l.contiguous_offsets(), l.dims()) else {
            bail!(
                "max-pool kernel: expected a contiguous 4-D tensor of shape (N, C, H, W), got {:?}",
                l.dims()
            )
        };
        if h == 0 || w == 0 {
            bail!("max-pool kernel: empty {h}x{w} input")
        }
        let (oh, ow) = (pooled(h), pooled(w));
        let shape = Shape::from((n, c, oh, ow));
        // u8: an int8 network's quantized activations. Quantizing is monotonic, so the max of the bytes is
        // the byte of the max: the same bytes as quantizing the f32 pool's output.
        Ok(match s {
            CpuStorage::F32(data) => (CpuStorage::F32(pool_planes(&data[start..end], (h, w), (oh, ow))), shape),
            CpuStorage::U8(data) => (CpuStorage::U8(pool_planes(&data[start..end], (h, w), (oh, ow))), shape),
            _ => bail!("max-pool kernel: expects f32 or u8"),
        })
    }
}

/// What the max-pool kernel pools: a value below every input for the border (PyTorch pads with -inf) and
/// the maximum of two.
pub(crate) trait Pooled: Copy + Send + Sync {
    const LOWEST: Self;
    fn max(self, other: Self) -> Self;
}

impl Pooled for f32 {
    const LOWEST: Self = f32::NEG_INFINITY;
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
}

impl Pooled for u8 {
    const LOWEST: Self = 0;
    fn max(self, other: Self) -> Self {
        Ord::max(self, other)
    }
}

/// Every (H, W) plane of `x`, pooled in parallel.
fn pool_planes<T: Pooled>(x: &[T], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<T> {
    let len = x.len() / (h * w) * oh * ow;
    let mut out = Vec::with_capacity(len);
    // SAFETY: `pool_plane` writes every element of its output plane (each row, every column) before anything
    // reads it, and the planes cover `out`.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(len)
    };
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, src)| pool_plane(src, (h, w), dst, ow));
    out
}

/// One (H, W) plane: the max of each output row's (up to) three input rows first, then of three
/// neighbouring columns in that row, so each input row is read once per output row it feeds.
fn pool_plane<T: Pooled>(src: &[T], (h, w): (usize, usize), dst: &mut [T], ow: usize) {
    let mut rows = vec![T::LOWEST; 2 * ow + 1];
    for (oy, out_row) in dst.chunks_exact_mut(ow).enumerate() {
        let (first, last) = window_rows(oy, h);
        pool_row(src, w, (first, last), &mut rows, out_row);
    }
}

/// The input rows, first and last, of output row `oy`'s window in a map `h` rows high.
pub(crate) fn window_rows(oy: usize, h: usize) -> (usize, usize) {
    ((2 * oy).saturating_sub(1), (2 * oy + 1).min(h - 1))
}

/// One output row from input rows `first..=last` of `src` (rows `w` wide; the rows of its window, see
/// [`window_rows`]): their maximum into `rows` (`2 * out_row.len() + 1` long, past `w` left at the lowest
/// value, so that every output column's window is whole), then the max of three neighbouring columns.
pub(crate) fn pool_row<T: Pooled>(
    src: &[T],
    w: usize,
    (first, last): (usize, usize),
    rows: &mut [T],
    out_row: &mut [T],
) {
    rows[..w].copy_from_slice(&src[first * w..(first + 1) * w]);
    for y in first + 1..=last {
        for (m, &v) in rows[..w].iter_mut().zip(&src[y * w..(y + 1) * w]) {
            *m = Pooled::max(*m, v);
        }
    }
    // Output column 0 sees columns 0..=1; column ox > 0 sees 2ox-1..=2ox+1 (past the right edge: -inf).
    // As pairs (2ox, 2ox+1): column ox is the max of its pair and the odd half of the pair before, a loop
    // the compiler vectorizes.
    let (pairs, _) = rows.as_chunks::<2>();
    out_row[0] = Pooled::max(pairs[0][0], pairs[0][1]);
    for (o, (p, q)) in out_row[1..].iter_mut().zip(pairs.iter().zip(&pairs[1..])) {
        *o = Pooled::max(Pooled::max(q[0], q[1]), p[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes pool to the bytes of the f32 pool of the same values (zero included, at the border too), so an
    /// int8 network may pool its quantized activations.
    #[test]
    fn bytes_pool_as_their_values() -> Result<()> {
        for (h, w) in [(1, 1), (2, 3), (7, 7), (8, 5), (112, 112), (15, 16)] {
            let n = 2 * 3 * h * w;
            let bytes: Vec<u8> = (0..n)
                .map(|i| ((i * 97 + i / 7) % 256) as u8 & if i % 5 == 0 { 0 } else { 255 })
                .collect();
            let x = Tensor::from_vec(bytes, (2, 3, h, w), &Device::Cpu)?;
            let ours = max_pool_3x3_s2(&x)?;
            assert_eq!(ours.dtype(), DType::U8);
            let reference = max_pool_3x3_s2(&x.to_dtype(DType::F32)?)?;
            assert_eq!(
                ours.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                reference.flatten_all()?.to_vec1::<f32>()?,
                "{h}x{w}"
            );
        }
        Ok(())
    }

    /// The kernel against Candle's `max_pool2d` on an explicitly -inf-padded copy, on odd and even sides
    /// and inputs of both signs.
    #[test]
    fn kernel_matches_candle_reference() -> Result<()> {
        for (h, w) in [(1, 1), (2, 3), (7, 7), (8, 5), (112, 112), (15, 16)] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu)?;
            let ours = max_pool_3x3_s2(&x)?;
            let neg = Tensor::full(f32::NEG_INFINITY, (2, 3, h, 1), &Device::Cpu)?;
            let padded = Tensor::cat(&[&neg, &x, &neg], 3)?;
            let neg = Tensor::full(f32::NEG_INFINITY, (2, 3, 1, w + 2), &Device::Cpu)?;
            let padded = Tensor::cat(&[&neg, &padded, &neg], 2)?;
            let reference = padded.max_pool2d_with_stride(3, 2)?;
            assert_eq!(ours.dims(), reference.dims(), "{h}x{w}");
            let diff = (ours - &reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{h}x{w}");
            // The differentiable construction and Candle's op on the padded copy agree too, and all three
            // pad with -inf: a negative input keeps its maximum at the border.
            let var = candle_core::Var::from_tensor(&x)?;
            let tracked = max_pool_3x3_s2(var.as_tensor())?;
            let diff = (tracked.detach() - &reference)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{h}x{w} differentiable");
            let grads = tracked.sum_all()?.backward()?;
            assert!(grads.get(var.as_tensor()).is_some());
            let s = subsample(var.as_tensor(), 2)?;
            let t = subsample(&x, 2)?;
            assert_eq!(s.dims(), t.dims());
            let diff = (s.detach() - t)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{h}x{w} subsample");
        }
        let neg = (Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu)? * -3.0)?;
        let gpu_path = pad_neg_inf(&neg)?.max_pool2d_with_stride(3, 2)?;
        assert_eq!(gpu_path.flatten_all()?.to_vec1::<f32>()?, [-3.0; 4]);
        Ok(())
    }

    /// timm's `AvgPool2dSame(2, 1)`: zero padding at the bottom and right, counted in the mean.
    #[test]
    fn avg_pool_same_counts_its_zero_padding() -> Result<()> {
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let y = avg_pool_2x2_same(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, [2.5, 1.5, 1.75, 1.0]);
        Ok(())
    }
}
