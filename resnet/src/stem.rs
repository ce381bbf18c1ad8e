//! The layers before the first stage.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::block::ResidualBlock;
use crate::config::StemKind;
use crate::layers::{pool, ConvBn, ConvBnOptions, ConvSpec};

/// The stem's convolutions, named as in torchvision (`conv1`, `bn1`), timm's deep stem
/// (`conv1.0`/`conv1.1`, `conv1.3`/`conv1.4`, `conv1.6` with `bn1`) or CLIP (`conv1`/`bn1` .. `conv3`/`bn3`),
/// each followed by a ReLU, then at most one of the two pools.
#[derive(Debug, Clone)]
pub struct Stem {
    /// Each conv+BN (+ReLU) with its checkpoint name.
    pub(crate) convs: Vec<(String, ConvBn)>,
    /// Whether the 3x3 stride-2 max-pool follows (every stem but CIFAR's and CLIP's).
    pub(crate) max_pool: bool,
    /// Whether a 2x2 average pool follows (CLIP).
    pub(crate) avg_pool: bool,
}

impl Stem {
    /// Builds the stem of `kind` from `vb` (the network's root).
    pub fn load(kind: StemKind, in_channels: usize, vb: &VarBuilder, opts: ConvBnOptions) -> Result<Self> {
        let c = |cin, cout, k, s| ConvSpec::new(cin, cout, k, s);
        let convs = match kind {
            StemKind::Classic { width } => {
                vec![(
                    "conv1".to_string(),
                    ConvBn::load(c(in_channels, width, 7, 2), vb.pp("conv1"), vb.pp("bn1"), opts)?,
                )]
            }
            StemKind::Cifar { width } => {
                vec![(
                    "conv1".to_string(),
                    ConvBn::load(c(in_channels, width, 3, 1), vb.pp("conv1"), vb.pp("bn1"), opts)?,
                )]
            }
            StemKind::Deep { width } | StemKind::DeepTiered { width } => {
                let first = if matches!(kind, StemKind::DeepTiered { .. }) {
                    3 * (width / 4)
                } else {
                    width
                };
                let seq = vb.pp("conv1");
                // A deep stem's convs never carry a bias, whatever the checkpoint's other convs do.
                let opts = ConvBnOptions {
                    conv_bias: false,
                    ..opts
                };
                vec![
                    (
                        "conv1.0".to_string(),
                        ConvBn::load(c(in_channels, first, 3, 2), seq.pp("0"), seq.pp("1"), opts)?,
                    ),
                    (
                        "conv1.3".to_string(),
                        ConvBn::load(c(first, width, 3, 1), seq.pp("3"), seq.pp("4"), opts)?,
                    ),
                    (
                        "conv1.6".to_string(),
                        ConvBn::load(c(width, 2 * width, 3, 1), seq.pp("6"), vb.pp("bn1"), opts)?,
                    ),
                ]
            }
            StemKind::Clip { width } => {
                let plan = [
                    (in_channels, width / 2, 2),
                    (width / 2, width / 2, 1),
                    (width / 2, width, 1),
                ];
                let mut convs = Vec::with_capacity(3);
                for (i, (cin, cout, stride)) in plan.into_iter().enumerate() {
                    let (conv, bn) = (format!("conv{}", i + 1), format!("bn{}", i + 1));
                    convs.push((
                        conv.clone(),
                        ConvBn::load(c(cin, cout, 3, stride), vb.pp(&conv), vb.pp(&bn), opts)?,
                    ));
                }
                convs
            }
        };
        let max_pool = !matches!(kind, StemKind::Cifar { .. } | StemKind::Clip { .. });
        Ok(Self {
            convs,
            max_pool,
            avg_pool: matches!(kind, StemKind::Clip { .. }),
        })
    }

    /// Learnable parameters as the checkpoint stores them.
    pub fn num_params(&self) -> usize {
        self.convs.iter().map(|(_, c)| c.num_params()).sum()
    }

    /// The convs with their checkpoint names.
    pub fn conv_layers(&self) -> impl Iterator<Item = (&str, &ConvBn)> {
        self.convs.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// Whether the stem ends in the max-pool.
    pub fn has_max_pool(&self) -> bool {
        self.max_pool
    }

    /// The convolutions and their ReLUs, before the pool (timm's `act1` output).
    pub fn forward_convs_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (_, conv) in &self.convs {
            x = conv.forward_fused(&x, None, true, train)?;
        }
        Ok(x)
    }

    /// The pool after the convolutions (the identity for the CIFAR stem).
    pub fn forward_pool(&self, x: &Tensor) -> Result<Tensor> {
        match (self.max_pool, self.avg_pool) {
            (true, _) => pool::max_pool_3x3_s2(x),
            (false, true) => pool::avg_pool(x, 2),
            (false, false) => Ok(x.clone()),
        }
    }

    /// The stem in eval mode, its output handed to the first block `block`: where that block's first conv and
    /// its projection shortcut are int8 convs that quantize their inputs alike, the last conv writes its
    /// output as those bytes and the max-pool pools the bytes (quantizing is monotonic, so the max of the
    /// bytes is the byte of the max: the bytes both convs would make of the f32 pool, at a quarter of the
    /// memory traffic, and the pool's input at a quarter too). Else the f32 output, as
    /// [`ModuleT::forward_t`].
    pub(crate) fn forward_into_block(&self, x: &Tensor, block: &ResidualBlock) -> Result<Tensor> {
        let first = block.residual.first_conv();
        let Some(((_, last), rest)) = self.convs.split_last().filter(|_| block.takes_bytes() && self.max_pool) else {
            return self.forward_t(x, false);
        };
        let mut x = x.clone();
        for (_, conv) in rest {
            x = conv.forward_fused(&x, None, true, false)?;
        }
        self.forward_pool(&last.forward_into(&x, true, first, false)?)
    }

    /// Whether the stem ends in CLIP's 2x2 average pool.
    pub fn has_avg_pool(&self) -> bool {
        self.avg_pool
    }
}

impl ModuleT for Stem {
    /// The convs, then the pool; where the stem's last conv runs fused with the max-pool (a classic stem's
    /// direct 7x7 on the CPU, see [`crate::layers::Conv::forward_pooled`]), as one kernel.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(((_, last), rest)) = self.convs.split_last().filter(|_| self.max_pool && !train) {
            let mut y = x.clone();
            for (_, conv) in rest {
                y = conv.forward_fused(&y, None, true, false)?;
            }
            if let Some(pooled) = last.forward_pooled(&y, true, false)? {
                return Ok(pooled);
            }
            return self.forward_pool(&last.forward_fused(&y, None, true, false)?);
        }
        self.forward_pool(&self.forward_convs_t(x, train)?)
    }
}
