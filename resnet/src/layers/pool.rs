//! The pooling ops a ResNet needs, with PyTorch's exact boundary rules.

use candle_core::{Result, Tensor};

/// `nn.MaxPool2d(3, stride=2, padding=1)` on a post-ReLU (non-negative) tensor.
///
/// PyTorch pads with -inf; because every input here is >= 0 and each window holds at least one real
/// pixel, padding with zeros gives the same maximum.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
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
