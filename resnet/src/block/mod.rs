//! The residual block, `y = ReLU(F(x) + shortcut(x))`.

mod basic;
mod bottleneck;

pub use basic::BasicBranch;
pub use bottleneck::{BottleneckBranch, BottleneckSpec};

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BlockKind, ResNetConfig};
use crate::layers::{ConvBn, ConvBnOptions};
use crate::shortcut::{Shortcut, ShortcutSpec};

/// The residual function `F`: the block's own stack of layers.
#[derive(Debug, Clone)]
pub enum ResidualFn {
    Basic(BasicBranch),
    Bottleneck(BottleneckBranch),
}

impl ResidualFn {
    /// The conv+BN layers in order, with their checkpoint names.
    pub fn layers(&self) -> Vec<(&'static str, &ConvBn)> {
        match self {
            ResidualFn::Basic(b) => b.layers(),
            ResidualFn::Bottleneck(b) => b.layers(),
        }
    }
}

impl ResidualFn {
    /// Window of the average pool that takes the stride before the last conv (CLIP's anti-aliasing); 1 when
    /// there is none.
    pub fn pool_before_last(&self) -> usize {
        match self {
            ResidualFn::Basic(_) => 1,
            ResidualFn::Bottleneck(b) => b.pool,
        }
    }

    /// `ReLU(F(x) + shortcut)`, with the add and the ReLU fused into the last convolution.
    pub fn forward_block(&self, x: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ResidualFn::Basic(b) => b.forward_block(x, shortcut, train),
            ResidualFn::Bottleneck(b) => b.forward_block(x, shortcut, train),
        }
    }
}

impl ModuleT for ResidualFn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ResidualFn::Basic(b) => b.forward_t(x, train),
            ResidualFn::Bottleneck(b) => b.forward_t(x, train),
        }
    }
}

/// One residual block: an "identity block" when `shortcut` is [`Shortcut::Identity`], a "conv block"
/// otherwise.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    pub residual: ResidualFn,
    pub shortcut: Shortcut,
}

impl ResidualBlock {
    /// Builds the block `vb` points at (e.g. `layer2.0`).
    pub fn load(
        cfg: &ResNetConfig,
        in_channels: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
        opts: ConvBnOptions,
    ) -> Result<Self> {
        let residual = match cfg.block {
            BlockKind::Basic => ResidualFn::Basic(BasicBranch::load(in_channels, planes, stride, &vb, opts)?),
            BlockKind::Bottleneck { groups, base_width } => {
                let spec = BottleneckSpec {
                    in_channels,
                    planes,
                    stride,
                    groups,
                    base_width,
                    stride_placement: cfg.stride_placement,
                    anti_alias: cfg.anti_alias,
                };
                ResidualFn::Bottleneck(BottleneckBranch::load(spec, &vb, opts)?)
            }
        };
        let out_channels = planes * cfg.block.expansion();
        let spec = ShortcutSpec { kind: cfg.shortcut, in_channels, out_channels, stride };
        let shortcut = Shortcut::load(spec, vb, opts)?;
        Ok(Self { residual, shortcut })
    }

    /// True when the shortcut is the identity: the block keeps the shape and can be stacked.
    pub fn is_identity_block(&self) -> bool {
        self.shortcut.is_identity()
    }

    pub fn num_params(&self) -> usize {
        self.residual.layers().iter().map(|(_, l)| l.num_params()).sum::<usize>() + self.shortcut.num_params()
    }
}

impl ModuleT for ResidualBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shortcut = self.shortcut.forward_t(x, train)?;
        self.residual.forward_block(x, &shortcut, train)
    }
}
