//! A stage: residual blocks at one resolution (`layer1` .. `layer4`).

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::block::ResidualBlock;
use crate::config::{ResNetConfig, StageGeometry};
use crate::layers::ConvBnOptions;

/// A conv block that sets the stage's shape, then identity blocks.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The blocks in order: the conv block first.
    pub(crate) blocks: Vec<ResidualBlock>,
}

impl Stage {
    /// Builds stage `index` (0-based) from `vb` = `layer{index+1}`.
    pub fn load(
        cfg: &ResNetConfig,
        index: usize,
        in_channels: usize,
        vb: VarBuilder,
        opts: ConvBnOptions,
    ) -> Result<Self> {
        let planes = cfg.channels[index];
        let out_channels = planes * cfg.block.expansion();
        let g = cfg.stage_geometry()[index];
        let mut blocks = Vec::with_capacity(cfg.depths[index]);
        for b in 0..cfg.depths[index] {
            // The conv block sets the stage's shape; identity blocks keep it, at the stage's dilation.
            let (cin, geometry) = match b {
                0 => (in_channels, g),
                _ => (
                    out_channels,
                    StageGeometry {
                        stride: 1,
                        first_dilation: g.dilation,
                        dilation: g.dilation,
                    },
                ),
            };
            blocks.push(ResidualBlock::load(cfg, cin, planes, geometry, vb.pp(b), opts)?);
        }
        Ok(Self { blocks })
    }

    /// The blocks in order: the conv block that sets the stage's shape, then identity blocks.
    pub fn blocks(&self) -> &[ResidualBlock] {
        &self.blocks
    }

    /// Learnable parameters.
    pub fn num_params(&self) -> usize {
        self.blocks.iter().map(ResidualBlock::num_params).sum()
    }
}

impl ModuleT for Stage {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        Ok(x)
    }
}
