//! The basic block's residual function: two 3x3 convolutions.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::StageGeometry;
use crate::layers::{ConvBn, ConvBnOptions, ConvSpec};

/// `F(x) = BN(conv3x3(ReLU(BN(conv3x3(x)))))`; the first conv carries the stride.
#[derive(Debug, Clone)]
pub struct BasicBranch {
    /// The first 3x3 conv + BN (+ReLU), carrying the stride.
    pub(crate) conv1: ConvBn,
    /// The second 3x3 conv + BN.
    pub(crate) conv2: ConvBn,
}

impl BasicBranch {
    /// Loads `conv1`/`bn1` (strided, at the first dilation) and `conv2`/`bn2` (at the block's dilation).
    pub fn load(
        in_channels: usize,
        planes: usize,
        g: StageGeometry,
        vb: &VarBuilder,
        opts: ConvBnOptions,
    ) -> Result<Self> {
        let spec1 = ConvSpec::new(in_channels, planes, 3, g.stride).with_dilation(g.first_dilation);
        let spec2 = ConvSpec::new(planes, planes, 3, 1).with_dilation(g.dilation);
        let conv1 = ConvBn::load(spec1, vb.pp("conv1"), vb.pp("bn1"), opts)?;
        let conv2 = ConvBn::load(spec2, vb.pp("conv2"), vb.pp("bn2"), opts)?;
        Ok(Self { conv1, conv2 })
    }

    /// `ReLU(F(x) + shortcut)`, the whole block, with the add and ReLU fused into `conv2`.
    /// Between the convs, an int8 network's activations stay bytes ([`ConvBn::forward_into`]).
    pub fn forward_block(&self, x: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward_into(x, true, &self.conv2, train)?;
        self.conv2.forward_fused(&y, Some(shortcut), true, train)
    }

    /// [`BasicBranch::forward_block`] with the output as the bytes `next` reads where both are int8 convs on
    /// an int8 kernel (see [`ConvBn::forward_fused_into`]).
    pub fn forward_block_into(&self, x: &Tensor, shortcut: &Tensor, next: &ConvBn, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward_into(x, true, &self.conv2, train)?;
        self.conv2.forward_fused_into(&y, Some(shortcut), true, next, train)
    }

    /// `ReLU(conv2(y) + shortcut)`: the block after its first conv (whose output `y` is).
    pub fn forward_after_first(&self, y: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        self.conv2.forward_fused(y, Some(shortcut), true, train)
    }

    /// The conv+BN layers in order, with their checkpoint names.
    pub fn layers(&self) -> Vec<(&'static str, &ConvBn)> {
        vec![("conv1", &self.conv1), ("conv2", &self.conv2)]
    }
}

impl ModuleT for BasicBranch {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward_fused(x, None, true, train)?;
        self.conv2.forward_t(&y, train)
    }
}
