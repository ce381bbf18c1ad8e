//! The residual block, `y = ReLU(F(x) + shortcut(x))`.

mod basic;
mod bottleneck;

pub use basic::BasicBranch;
pub use bottleneck::{BottleneckBranch, BottleneckSpec};

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BlockKind, ResNetConfig, StageGeometry};
use crate::layers::{ConvBn, ConvBnOptions};
use crate::shortcut::{Shortcut, ShortcutSpec};

/// The residual function `F`: the block's own stack of layers.
#[derive(Debug, Clone)]
pub enum ResidualFn {
    /// Two 3x3 convs.
    Basic(BasicBranch),
    /// 1x1 reduce, 3x3, 1x1 expand.
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

    /// The first convolution, the one that reads the block's input.
    pub fn first_conv(&self) -> &ConvBn {
        match self {
            ResidualFn::Basic(b) => &b.conv1,
            ResidualFn::Bottleneck(b) => &b.conv1,
        }
    }

    /// `ReLU(F(x) + shortcut)` given the output `y` of the first convolution (with its ReLU).
    pub fn forward_after_first(&self, y: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ResidualFn::Basic(b) => b.forward_after_first(y, shortcut, train),
            ResidualFn::Bottleneck(b) => b.forward_after_first(y, shortcut, train),
        }
    }

    /// `ReLU(F(x) + shortcut)`, with the add and the ReLU fused into the last convolution.
    pub fn forward_block(&self, x: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ResidualFn::Basic(b) => b.forward_block(x, shortcut, train),
            ResidualFn::Bottleneck(b) => b.forward_block(x, shortcut, train),
        }
    }

    /// [`ResidualFn::forward_block`] with the output as the bytes `next` reads where both are int8 convs on an
    /// int8 kernel (see [`ConvBn::forward_fused_into`]).
    pub fn forward_block_into(&self, x: &Tensor, shortcut: &Tensor, next: &ConvBn, train: bool) -> Result<Tensor> {
        match self {
            ResidualFn::Basic(b) => b.forward_block_into(x, shortcut, next, train),
            ResidualFn::Bottleneck(b) => b.forward_block_into(x, shortcut, next, train),
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

/// Whether a block adds its shortcut: the residual network, or its "plain" twin with the same layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wiring {
    /// `y = ReLU(F(x))`: every shortcut removed (He et al.'s plain baseline).
    Plain,
    /// `y = ReLU(F(x) + shortcut(x))`.
    Residual,
}

impl Wiring {
    /// `plain` or `residual`.
    pub fn name(self) -> &'static str {
        match self {
            Wiring::Plain => "plain",
            Wiring::Residual => "residual",
        }
    }
}

/// One residual block: an "identity block" when `shortcut` is [`Shortcut::Identity`], a "conv block"
/// otherwise.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    /// `F`, the block's own layers.
    pub(crate) residual: ResidualFn,
    /// The path that carries `x` (and, backwards, the gradient) around `F`.
    pub(crate) shortcut: Shortcut,
}

impl ResidualBlock {
    /// Builds the block `vb` points at (e.g. `layer2.0`).
    /// `geometry` gives the block's stride and the dilations of its 3x3 convs (see [`StageGeometry`]).
    pub fn load(
        cfg: &ResNetConfig,
        in_channels: usize,
        planes: usize,
        geometry: StageGeometry,
        vb: VarBuilder,
        opts: ConvBnOptions,
    ) -> Result<Self> {
        let stride = geometry.stride;
        let residual = match cfg.block {
            BlockKind::Basic => ResidualFn::Basic(BasicBranch::load(in_channels, planes, geometry, &vb, opts)?),
            BlockKind::Bottleneck { groups, base_width } => {
                let spec = BottleneckSpec {
                    in_channels,
                    planes,
                    stride,
                    groups,
                    base_width,
                    stride_placement: cfg.stride_placement,
                    dilation: geometry.first_dilation,
                    anti_alias: cfg.anti_alias,
                };
                ResidualFn::Bottleneck(BottleneckBranch::load(spec, &vb, opts)?)
            }
        };
        let out_channels = planes * cfg.block.expansion();
        let spec = ShortcutSpec {
            kind: cfg.shortcut,
            in_channels,
            out_channels,
            stride,
            dilation: geometry.dilation,
        };
        let shortcut = Shortcut::load(spec, vb, opts)?;
        Ok(Self { residual, shortcut })
    }

    /// True when the shortcut is the identity: the block keeps the shape and can be stacked.
    pub fn is_identity_block(&self) -> bool {
        self.shortcut.is_identity()
    }

    /// The residual function `F`.
    pub fn residual(&self) -> &ResidualFn {
        &self.residual
    }

    /// The shortcut.
    pub fn shortcut(&self) -> &Shortcut {
        &self.shortcut
    }

    /// Learnable parameters as the checkpoint stores them.
    pub fn num_params(&self) -> usize {
        self.residual
            .layers()
            .iter()
            .map(|(_, l)| l.num_params())
            .sum::<usize>()
            + self.shortcut.num_params()
    }

    /// The block's conv+BN layers with their names relative to the block: `F`'s, then a projecting
    /// shortcut's (`downsample.0`, or `downsample.1` after an avg-down pool).
    pub fn conv_layers(&self) -> Vec<(&'static str, &ConvBn)> {
        let mut out = self.residual.layers();
        match &self.shortcut {
            Shortcut::Projection(p) => out.push(("downsample.0", p)),
            Shortcut::AvgDown(a) => out.push(("downsample.1", &a.proj)),
            Shortcut::PooledProjection(p) => out.push(("downsample.0", &p.proj)),
            Shortcut::Identity | Shortcut::ZeroPad(_) => {}
        }
        out
    }

    /// Whether `x`, the block's input, can reach it as bytes: its first conv and a projection shortcut (the
    /// only readers of `x`) are int8 convs on an int8 kernel that quantize their inputs alike (as they do
    /// after calibration on the same tensor), so one set of bytes serves both (see
    /// [`ResidualBlock::forward_into`]).
    pub fn takes_bytes(&self) -> bool {
        let first = self.residual.first_conv().conv();
        match &self.shortcut {
            Shortcut::Projection(p) => {
                first.is_int8() && p.conv().is_int8() && first.int8_quant() == p.conv().int8_quant()
            }
            _ => false,
        }
    }

    /// The block in eval mode with its output handed to `next`: where `next` [takes
    /// bytes](ResidualBlock::takes_bytes), the last conv writes its output (after the residual add and the
    /// ReLU) as the bytes `next`'s convs read, and no f32 copy (a quarter of the memory traffic); else the f32
    /// output.
    pub fn forward_into(&self, x: &Tensor, next: &ResidualBlock) -> Result<Tensor> {
        if !next.takes_bytes() {
            return self.forward_t(x, false);
        }
        let shortcut = self.shortcut.forward_t(x, false)?;
        self.residual
            .forward_block_into(x, &shortcut, next.residual.first_conv(), false)
    }

    /// `(first conv's output, shortcut)` computed on one packed input, where the block's first conv and its
    /// projection shortcut can share it (ResNet-18/34's stride-2 3x3 and the 1x1 beside it, which reads its
    /// centre tap; see [`crate::layers::Conv::forward_shared`]); else `None`. In inference on the CPU kernel.
    pub fn shared_first(&self, x: &Tensor, train: bool) -> Result<Option<(Tensor, Tensor)>> {
        match &self.shortcut {
            Shortcut::Projection(p) => self.residual.first_conv().forward_shared(x, p, true, train),
            _ => Ok(None),
        }
    }

    /// The block wired as `wiring`: with its shortcut, or without it (the plain twin).
    pub fn forward_wired(&self, x: &Tensor, train: bool, wiring: Wiring) -> Result<Tensor> {
        match wiring {
            Wiring::Residual => {
                if let Some((y, shortcut)) = self.shared_first(x, train)? {
                    return self.residual.forward_after_first(&y, &shortcut, train);
                }
                let shortcut = self.shortcut.forward_t(x, train)?;
                self.residual.forward_block(x, &shortcut, train)
            }
            Wiring::Plain => self.residual.forward_t(x, train)?.relu(),
        }
    }
}

impl ModuleT for ResidualBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_wired(x, train, Wiring::Residual)
    }
}
