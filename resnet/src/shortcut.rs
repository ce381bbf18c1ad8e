//! The shortcut path of a residual block: `y = F(x) + shortcut(x)`.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::ShortcutKind;
use crate::layers::{pool, ConvBn, ConvBnOptions, ConvSpec};

/// The shortcut of one block.
///
/// [`Shortcut::Identity`] makes an "identity block": the input is added unchanged, and the gradient flows
/// back through this path untouched. Every other variant makes a "conv block", whose shortcut has to
/// change the shape of `x` to match `F(x)`.
#[derive(Debug, Clone)]
pub enum Shortcut {
    /// `x` itself: shapes already match.
    Identity,
    /// Option A: take every `stride`-th pixel, then zero-pad the channels. No parameters.
    ZeroPad(ZeroPad),
    /// Option B: a strided 1x1 conv + BN (`downsample.0`, `downsample.1`).
    Projection(ConvBn),
    /// timm "d": 2x2 average pool when strided, then a 1x1 conv + BN (`downsample.1`, `downsample.2`).
    AvgDown(AvgDown),
    /// CLIP: `stride x stride` average pool, then a 1x1 conv + BN (`downsample.0`, `downsample.1`).
    PooledProjection(PooledProjection),
}

/// Option A's subsample-and-pad.
#[derive(Debug, Clone, Copy)]
pub struct ZeroPad {
    /// The subsampling stride.
    pub stride: usize,
    /// Zero channels put before the input's channels.
    pub pad_before: usize,
    /// Zero channels put after them.
    pub pad_after: usize,
}

/// An average-pooled projection.
#[derive(Debug, Clone)]
pub struct AvgDown {
    /// The pool before the projection.
    pub pool: AvgDownPool,
    /// The stride-1 1x1 conv + BN.
    pub proj: ConvBn,
}

/// The average pool of an [`AvgDown`] shortcut (timm's `downsample_avg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvgDownPool {
    /// No pool: the block keeps the resolution.
    None,
    /// `AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)`: the block halves the resolution.
    Stride2,
    /// timm's `AvgPool2dSame(2, stride=1)` in a dilated stage: zero padding on the bottom and right, then
    /// a 2x2 average (the padding counted), so the resolution is kept.
    Same,
}

/// CLIP's anti-aliased projection: `nn.AvgPool2d(stride)` (floor mode) then a stride-1 1x1 conv and BN.
#[derive(Debug, Clone)]
pub struct PooledProjection {
    /// Pool window and stride; 1 = no pool.
    pub stride: usize,
    /// The 1x1 conv + BN.
    pub proj: ConvBn,
}

/// Where a shortcut sits and what it must produce.
#[derive(Debug, Clone, Copy)]
pub struct ShortcutSpec {
    /// Which kind the network uses when shapes change.
    pub kind: ShortcutKind,
    /// Channels in.
    pub in_channels: usize,
    /// Channels out (the residual function's output).
    pub out_channels: usize,
    /// The block's stride.
    pub stride: usize,
    /// The stage's dilation (1 unless it trades its stride for dilation).
    pub dilation: usize,
}

impl Shortcut {
    /// Builds the shortcut; `vb` is the block's own prefix (e.g. `layer2.0`).
    pub fn load(spec: ShortcutSpec, vb: VarBuilder, opts: ConvBnOptions) -> Result<Self> {
        let (cin, cout, stride, dilation) = (spec.in_channels, spec.out_channels, spec.stride, spec.dilation);
        if stride == 1 && cin == cout {
            return Ok(Shortcut::Identity);
        }
        let vb = vb.pp("downsample");
        Ok(match spec.kind {
            ShortcutKind::ZeroPad => {
                if cout < cin {
                    candle_core::bail!("an option-A shortcut cannot shrink {cin} channels to {cout}")
                }
                let extra = cout - cin;
                Shortcut::ZeroPad(ZeroPad {
                    stride,
                    pad_before: extra / 2,
                    pad_after: extra - extra / 2,
                })
            }
            ShortcutKind::Projection => {
                let spec = ConvSpec::new(cin, cout, 1, stride);
                Shortcut::Projection(ConvBn::load(spec, vb.pp("0"), vb.pp("1"), opts)?)
            }
            ShortcutKind::AvgDownProjection => {
                let spec = ConvSpec::new(cin, cout, 1, 1);
                let proj = ConvBn::load(spec, vb.pp("1"), vb.pp("2"), opts)?;
                let pool = match (stride, dilation) {
                    (1, 1) => AvgDownPool::None,
                    (1, _) => AvgDownPool::Same,
                    _ => AvgDownPool::Stride2,
                };
                Shortcut::AvgDown(AvgDown { pool, proj })
            }
            ShortcutKind::AvgPoolProjection => {
                let spec = ConvSpec::new(cin, cout, 1, 1);
                let proj = ConvBn::load(spec, vb.pp("0"), vb.pp("1"), opts)?;
                Shortcut::PooledProjection(PooledProjection { stride, proj })
            }
        })
    }

    /// True for the identity shortcut (an "identity block").
    pub fn is_identity(&self) -> bool {
        matches!(self, Shortcut::Identity)
    }

    /// Learnable parameters.
    pub fn num_params(&self) -> usize {
        match self {
            Shortcut::Identity | Shortcut::ZeroPad(_) => 0,
            Shortcut::Projection(p) => p.num_params(),
            Shortcut::AvgDown(a) => a.proj.num_params(),
            Shortcut::PooledProjection(p) => p.proj.num_params(),
        }
    }

    /// Short name used in per-layer reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Shortcut::Identity => "identity",
            Shortcut::ZeroPad(_) => "zero-pad (option A)",
            Shortcut::Projection(_) => "1x1 conv + BN (option B)",
            Shortcut::AvgDown(_) => "avg-pool + 1x1 conv + BN",
            Shortcut::PooledProjection(_) => "avg-pool(stride) + 1x1 conv + BN (CLIP)",
        }
    }
}

impl ModuleT for Shortcut {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Shortcut::Identity => Ok(x.clone()),
            Shortcut::ZeroPad(z) => pool::subsample(x, z.stride)?.pad_with_zeros(1, z.pad_before, z.pad_after),
            Shortcut::Projection(p) => p.forward_t(x, train),
            Shortcut::AvgDown(a) => {
                let x = match a.pool {
                    AvgDownPool::None => x.clone(),
                    AvgDownPool::Stride2 => pool::avg_pool_2x2_ceil(x)?,
                    AvgDownPool::Same => pool::avg_pool_2x2_same(x)?,
                };
                a.proj.forward_t(&x, train)
            }
            Shortcut::PooledProjection(p) => p.proj.forward_t(&pool::avg_pool(x, p.stride)?, train),
        }
    }
}
