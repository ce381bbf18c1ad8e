//! The pooling ops a ResNet needs, with PyTorch's exact boundary rules.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `nn.MaxPool2d(3, stride=2, padding=1)`: the stem's pool.
///
/// On an f32 CPU tensor outside autograd it runs as one pass over the input ([`MaxPool3x3S2`]); Candle's
/// own `max_pool2d` needs a padded copy first and took 10% of a ResNet-18 forward pass at batch 1.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && !x.track_op() {
        return x.contiguous()?.apply_op1_no_bwd(&MaxPool3x3S2);
    }
    // PyTorch pads with -inf. Every input here follows a ReLU (>= 0) and each window holds at least one
    // real pixel, so padding with zeros gives the same maximum.
    let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    x.max_pool2d_with_stride(3, 2)
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

/// `nn.AvgPool2d(k)`: `k x k` windows at stride `k`, floor mode (a ragged last row or column is dropped); the
/// identity for `k = 1`. CLIP's stem pool and anti-aliased strides.
pub fn avg_pool(x: &Tensor, k: usize) -> Result<Tensor> {
    match k {
        1 => Ok(x.clone()),
        _ => x.avg_pool2d(k),
    }
}

/// `x[:, :, ::stride, ::stride]`: a 1x1 max-pool with the given stride picks exactly those pixels.
pub fn subsample(x: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
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
fn pooled(side: usize) -> usize {
    (side + 2 - 3) / 2 + 1
}

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "zoo-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end)), &[n, c, h, w]) = (s, l.contiguous_offsets(), l.dims()) else {
            bail!("max-pool kernel: expected a contiguous 4-D f32 tensor of shape (N, C, H, W), got {:?}", l.dims())
        };
        if h == 0 || w == 0 {
            bail!("max-pool kernel: empty {h}x{w} input")
        }
        let x = &data[start..end];
        let (oh, ow) = (pooled(h), pooled(w));
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, src)| pool_plane(src, (h, w), dst, ow));
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// One (H, W) plane: the max of each output row's (up to) three input rows first, then of three
/// neighbouring columns in that row, so each input row is read once per output row it feeds.
fn pool_plane(src: &[f32], (h, w): (usize, usize), dst: &mut [f32], ow: usize) {
    let mut rows = vec![f32::NEG_INFINITY; w];
    for (oy, out_row) in dst.chunks_exact_mut(ow).enumerate() {
        let first = (2 * oy).saturating_sub(1);
        let last = (2 * oy + 1).min(h - 1);
        rows.copy_from_slice(&src[first * w..(first + 1) * w]);
        for y in first + 1..=last {
            for (m, &v) in rows.iter_mut().zip(&src[y * w..(y + 1) * w]) {
                *m = m.max(v);
            }
        }
        // Output column 0 sees columns 0..=1; column ox > 0 sees 2ox-1..=2ox+1, clipped at the right edge.
        out_row[0] = rows[..w.min(2)].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (ox, o) in out_row.iter_mut().enumerate().skip(1) {
            let mid = 2 * ox;
            *o = if mid + 1 < w {
                rows[mid - 1].max(rows[mid]).max(rows[mid + 1])
            } else {
                rows[mid - 1..w].iter().copied().fold(f32::NEG_INFINITY, f32::max)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let diff = (ours - reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{h}x{w}");
        }
        Ok(())
    }
}
