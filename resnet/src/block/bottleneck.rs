//! The bottleneck's residual function: 1x1 reduce, 3x3, 1x1 expand.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{AntiAlias, StridePlacement};
use crate::layers::{pool, ConvBn, ConvBnOptions, ConvSpec};

/// Channel plan of one bottleneck.
#[derive(Debug, Clone, Copy)]
pub struct BottleneckSpec {
    /// Channels coming in.
    pub in_channels: usize,
    /// Output channels / 4.
    pub planes: usize,
    /// The block's stride (1 or 2).
    pub stride: usize,
    /// Groups of the 3x3 conv (ResNeXt cardinality).
    pub groups: usize,
    /// Channels per group at planes = 64 (64 = ResNet, 128 = Wide ResNet, 4 = ResNeXt 32x4d).
    pub base_width: usize,
    /// Where the stride sits.
    pub stride_placement: StridePlacement,
    /// Dilation of the 3x3 conv (1 unless the stage trades its stride for dilation).
    pub dilation: usize,
    /// Whether an average pool takes the stride (CLIP) instead of a conv.
    pub anti_alias: AntiAlias,
}

impl BottleneckSpec {
    /// Channels inside the block: the 1x1 reduces to this, the 3x3 keeps it.
    pub fn width(&self) -> usize {
        self.planes * self.base_width / 64 * self.groups
    }
}

/// `F(x) = BN(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(x))))))))`; anti-aliased (CLIP), with an average pool
/// taking the stride before the last conv: `BN(conv1x1(avgpool(ReLU(BN(conv3x3(..))))))`.
#[derive(Debug, Clone)]
pub struct BottleneckBranch {
    /// 1x1 reduce.
    pub(crate) conv1: ConvBn,
    /// 3x3 (grouped for ResNeXt).
    pub(crate) conv2: ConvBn,
    /// 1x1 expand.
    pub(crate) conv3: ConvBn,
    /// Window (= stride) of the average pool between `conv2` and `conv3`; 1 when there is none.
    pub pool: usize,
}

impl BottleneckBranch {
    /// Loads `conv1..3`/`bn1..3` from `vb` (the block's prefix).
    pub fn load(spec: BottleneckSpec, vb: &VarBuilder, opts: ConvBnOptions) -> Result<Self> {
        let width = spec.width();
        let (s1, s3, pool) = match (spec.anti_alias, spec.stride_placement) {
            (AntiAlias::AvgPool, _) => (1, 1, spec.stride),
            (AntiAlias::Off, StridePlacement::ThreeByThree) => (1, spec.stride, 1),
            (AntiAlias::Off, StridePlacement::FirstOneByOne) => (spec.stride, 1, 1),
        };
        let c1 = ConvSpec::new(spec.in_channels, width, 1, s1);
        let c2 = ConvSpec::new(width, width, 3, s3)
            .with_groups(spec.groups)
            .with_dilation(spec.dilation);
        let c3 = ConvSpec::new(width, spec.planes * 4, 1, 1);
        Ok(Self {
            conv1: ConvBn::load(c1, vb.pp("conv1"), vb.pp("bn1"), opts)?,
            conv2: ConvBn::load(c2, vb.pp("conv2"), vb.pp("bn2"), opts)?,
            conv3: ConvBn::load(c3, vb.pp("conv3"), vb.pp("bn3"), opts)?,
            pool,
        })
    }

    /// `ReLU(F(x) + shortcut)`, the whole block, with the add and ReLU fused into `conv3`.
    /// Between the convs, an int8 network's activations stay bytes ([`ConvBn::forward_into`]), except
    /// where a pool sits between `conv2` and `conv3`.
    pub fn forward_block(&self, x: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.inner(x, train)?;
        self.conv3.forward_fused(&y, Some(shortcut), true, train)
    }

    /// [`BottleneckBranch::forward_block`] with the output as the bytes `next` reads where both are int8 convs
    /// on an int8 kernel (see [`ConvBn::forward_fused_into`]).
    pub fn forward_block_into(&self, x: &Tensor, shortcut: &Tensor, next: &ConvBn, train: bool) -> Result<Tensor> {
        let y = self.inner(x, train)?;
        self.conv3.forward_fused_into(&y, Some(shortcut), true, next, train)
    }

    /// `ReLU(conv3(conv2(y)) + shortcut)` (and the pool): the block after its first conv (whose output `y` is).
    pub fn forward_after_first(&self, y: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.after_conv1(y, train)?;
        self.conv3.forward_fused(&y, Some(shortcut), true, train)
    }

    /// `conv2(conv1(x))` (and the pool), as `conv3` reads it.
    fn inner(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward_into(x, true, &self.conv2, train)?;
        self.after_conv1(&y, train)
    }

    /// `conv2(y)` (and the pool), as `conv3` reads it.
    fn after_conv1(&self, y: &Tensor, train: bool) -> Result<Tensor> {
        match self.pool {
            1 => self.conv2.forward_into(y, true, &self.conv3, train),
            window => pool::avg_pool(&self.conv2.forward_fused(y, None, true, train)?, window),
        }
    }

    /// The conv+BN layers in order, with their checkpoint names.
    pub fn layers(&self) -> Vec<(&'static str, &ConvBn)> {
        vec![("conv1", &self.conv1), ("conv2", &self.conv2), ("conv3", &self.conv3)]
    }
}

impl ModuleT for BottleneckBranch {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward_fused(x, None, true, train)?;
        let y = pool::avg_pool(&self.conv2.forward_fused(&y, None, true, train)?, self.pool)?;
        self.conv3.forward_t(&y, train)
    }
}
