//! The knobs that pick one member of the ResNet family.
//!
//! One [`ResNetConfig`] describes every variant, the way timm's `ResNet` class does, but each knob is a
//! Rust type rather than a string or a boolean. The config is serde-serializable so a checkpoint can carry
//! its own architecture in its metadata.

use serde::{Deserialize, Serialize};

/// What a residual block's own layers (the residual function `F`) look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets). Expansion 1.
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand (ResNet-50 and deeper). Expansion 4.
    ///
    /// The 3x3 conv has `groups` groups and `floor(planes * base_width / 64) * groups` channels:
    /// `groups = 1, base_width = 64` is ResNet, `32, 4` is ResNeXt-50 32x4d, `1, 128` is Wide ResNet-50-2.
    Bottleneck {
        /// Groups of the 3x3 conv (ResNeXt's cardinality).
        groups: usize,
        /// Channels per group at 64 planes (64: ResNet, 128: Wide ResNet, 4: ResNeXt 32x4d).
        base_width: usize,
    },
}

impl BlockKind {
    /// The plain bottleneck of ResNet-50.
    pub const BOTTLENECK: BlockKind = BlockKind::Bottleneck {
        groups: 1,
        base_width: 64,
    };

    /// Output channels of a block = `planes * expansion`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck { .. } => 4,
        }
    }
}

/// The layers before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum StemKind {
    /// 7x7 stride-2 conv to `width` channels, BN, ReLU, 3x3 stride-2 max-pool (torchvision; width 64).
    Classic {
        /// The stem's base width.
        width: usize,
    },
    /// Three 3x3 convs (`width`, `width`, `2 * width` channels, the first with stride 2), then the
    /// max-pool (timm `stem_type='deep'`, the "c"/"d" variants).
    Deep {
        /// The stem's base width.
        width: usize,
    },
    /// Like [`StemKind::Deep`] but the first conv has `3 * width / 4` channels (timm `'deep_tiered'`, "t").
    DeepTiered {
        /// The stem's base width.
        width: usize,
    },
    /// One 3x3 stride-1 conv to `width` channels and no pooling (CIFAR ResNets).
    Cifar {
        /// The stem's base width.
        width: usize,
    },
    /// CLIP's stem: three 3x3 convs (`width / 2`, `width / 2`, `width` channels, the first with stride 2), each
    /// with BN and ReLU, then a 2x2 average pool instead of the max-pool (`conv1`/`bn1` .. `conv3`/`bn3`).
    Clip {
        /// The stem's base width.
        width: usize,
    },
}

impl StemKind {
    /// Channels the stem hands to the first stage.
    pub fn out_channels(self) -> usize {
        match self {
            StemKind::Classic { width } | StemKind::Cifar { width } | StemKind::Clip { width } => width,
            StemKind::Deep { width } | StemKind::DeepTiered { width } => 2 * width,
        }
    }
}

/// How a block's shortcut matches shapes when the block changes resolution or channel count.
///
/// (When shapes already match the shortcut is the identity, whatever this says.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortcutKind {
    /// He et al. option A: subsample by the stride and zero-pad the missing channels. No parameters.
    ZeroPad,
    /// He et al. option B: a strided 1x1 conv and BN projection (torchvision).
    Projection,
    /// 2x2 average pool (ceil mode, padding excluded), then a stride-1 1x1 conv and BN (timm "d").
    AvgDownProjection,
    /// CLIP's anti-aliased shortcut: a `stride x stride` average pool (floor mode; none at stride 1), then a
    /// stride-1 1x1 conv and BN (`downsample.0`, `downsample.1`).
    AvgPoolProjection,
}

/// Which bottleneck convolution carries the stage's stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StridePlacement {
    /// On the 3x3 conv: torchvision's "ResNet v1.5", the default.
    #[default]
    ThreeByThree,
    /// On the first 1x1 conv: the original paper ("v1", Caffe and Keras weights).
    FirstOneByOne,
}

/// Whether a block's convolutions take its stride or an average pool does (anti-aliased downsampling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AntiAlias {
    /// The convolution [`StridePlacement`] names is strided.
    #[default]
    Off,
    /// Every convolution has stride 1; a `stride x stride` average pool between the 3x3 conv's ReLU and the
    /// last 1x1 conv takes the stride (CLIP's bottleneck). Bottleneck blocks only.
    AvgPool,
}

/// What turns the last stage's feature map into the network's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HeadKind {
    /// Global average pooling, then a linear classifier of `num_classes` outputs (`fc`).
    #[default]
    Linear,
    /// CLIP's attention pooling (`attnpool`): the `grid x grid` feature map becomes `grid² + 1` tokens (their
    /// mean first) plus a learned positional embedding; the mean token attends over all of them with
    /// `num_heads` heads (`q_proj`, `k_proj`, `v_proj`) and its output, projected by `c_proj` to `num_classes`
    /// values, is the image embedding. The positional embedding fixes the input size: `grid` times the
    /// network's output stride (7 x 32 = 224 for RN50).
    AttentionPool {
        /// Attention heads.
        num_heads: usize,
        /// Side of the feature grid the positional embedding is learned for (input side / 32).
        grid: usize,
    },
}

/// The full description of one ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// The residual function of every block.
    pub block: BlockKind,
    /// The layers before the first stage.
    pub stem: StemKind,
    /// How blocks that change shape match it on the shortcut.
    pub shortcut: ShortcutKind,
    #[serde(default)]
    /// Which bottleneck conv carries the stride.
    pub stride_placement: StridePlacement,
    #[serde(default)]
    /// Whether an average pool takes the stride (CLIP).
    pub anti_alias: AntiAlias,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// `planes` per stage: the block output is `planes * expansion` channels.
    pub channels: Vec<usize>,
    /// Size of the classifier; 0 builds the network without a head.
    pub num_classes: usize,
    #[serde(default = "default_in_channels")]
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Whether convolutions carry a bias (Keras-trained checkpoints do).
    #[serde(default)]
    pub conv_bias: bool,
    /// BatchNorm epsilon: 1e-5 for PyTorch checkpoints, 1e-3 for Keras.
    #[serde(default = "default_bn_eps")]
    pub bn_eps: f64,
    /// Total downsampling at which later stages stop striding and dilate their 3x3 convolutions instead
    /// (timm's `output_stride`, torchvision's `replace_stride_with_dilation`): `Some(16)` keeps the last
    /// stage at 1/16 of the input, `Some(8)` the last two at 1/8. `None` is the network's natural stride.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_stride: Option<usize>,
    /// The head; with [`HeadKind::AttentionPool`], `num_classes` is the embedding size.
    #[serde(default)]
    pub head: HeadKind,
}

/// How one stage changes resolution: its first block's stride and the dilation of its 3x3 convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageGeometry {
    /// Stride of the stage's first block (1 or 2).
    pub stride: usize,
    /// Dilation of the first block's first 3x3 conv: the previous stage's dilation (timm's `first_dilation`).
    pub first_dilation: usize,
    /// Dilation of every other 3x3 conv of the stage.
    pub dilation: usize,
}

/// Limits a config must respect, so that a config read from a downloaded file cannot make the loader loop or
/// allocate without bound. Every network of torchvision and timm is far inside them.
pub mod limits {
    /// Stages at most.
    pub const MAX_STAGES: usize = 8;
    /// Residual blocks in all stages together (resnet1202 has 600).
    pub const MAX_BLOCKS: usize = 2048;
    /// Channels of a stem, of a stage's `planes`, of a bottleneck's inside, of an input.
    pub const MAX_CHANNELS: usize = 1 << 15;
    /// Classifier outputs.
    pub const MAX_CLASSES: usize = 1 << 20;
}

fn default_in_channels() -> usize {
    3
}

fn default_bn_eps() -> f64 {
    1e-5
}

impl ResNetConfig {
    /// An ImageNet ResNet with the torchvision layout: classic stem, option-B shortcuts, 1000 classes.
    pub fn imagenet(block: BlockKind, depths: [usize; 4]) -> Self {
        Self {
            block,
            stem: StemKind::Classic { width: 64 },
            shortcut: ShortcutKind::Projection,
            stride_placement: StridePlacement::ThreeByThree,
            anti_alias: AntiAlias::Off,
            depths: depths.to_vec(),
            channels: vec![64, 128, 256, 512],
            num_classes: 1000,
            in_channels: 3,
            conv_bias: false,
            bn_eps: 1e-5,
            output_stride: None,
            head: HeadKind::Linear,
        }
    }

    /// One of CLIP's image towers ("ModifiedResNet"): bottleneck stages of `width`, `2 * width`, `4 * width` and
    /// `8 * width` planes, the three-conv [`StemKind::Clip`] stem, anti-aliased downsampling (an average pool
    /// takes every stride: in the block, [`AntiAlias::AvgPool`], and in its shortcut) and an attention-pooling
    /// head of `num_heads` heads producing `embed_dim` values for `input_size x input_size` inputs.
    pub fn clip(depths: [usize; 4], width: usize, embed_dim: usize, num_heads: usize, input_size: usize) -> Self {
        Self {
            block: BlockKind::BOTTLENECK,
            stem: StemKind::Clip { width },
            shortcut: ShortcutKind::AvgPoolProjection,
            stride_placement: StridePlacement::ThreeByThree,
            anti_alias: AntiAlias::AvgPool,
            depths: depths.to_vec(),
            channels: vec![width, 2 * width, 4 * width, 8 * width],
            num_classes: embed_dim,
            in_channels: 3,
            conv_bias: false,
            bn_eps: 1e-5,
            output_stride: None,
            head: HeadKind::AttentionPool {
                num_heads,
                grid: input_size / 32,
            },
        }
    }

    /// A CIFAR ResNet of depth `6n + 2`: 3x3 stem with 16 channels, three stages of `n` basic blocks
    /// with 16/32/64 channels, option-A shortcuts, 10 classes.
    pub fn cifar(n: usize) -> Self {
        Self {
            block: BlockKind::Basic,
            stem: StemKind::Cifar { width: 16 },
            shortcut: ShortcutKind::ZeroPad,
            stride_placement: StridePlacement::ThreeByThree,
            anti_alias: AntiAlias::Off,
            depths: vec![n; 3],
            channels: vec![16, 32, 64],
            num_classes: 10,
            in_channels: 3,
            conv_bias: false,
            bn_eps: 1e-5,
            output_stride: None,
            head: HeadKind::Linear,
        }
    }

    /// The same network with another stem.
    pub fn with_stem(mut self, stem: StemKind) -> Self {
        self.stem = stem;
        self
    }

    /// The same network with another shortcut kind.
    pub fn with_shortcut(mut self, shortcut: ShortcutKind) -> Self {
        self.shortcut = shortcut;
        self
    }

    /// The same network with the bottleneck stride on another conv.
    pub fn with_stride_placement(mut self, placement: StridePlacement) -> Self {
        self.stride_placement = placement;
        self
    }

    /// The same network with other per-stage `planes`.
    pub fn with_channels(mut self, channels: &[usize]) -> Self {
        self.channels = channels.to_vec();
        self
    }

    /// The same network with other per-stage block counts.
    pub fn with_depths(mut self, depths: &[usize]) -> Self {
        self.depths = depths.to_vec();
        self
    }

    /// The same network with a classifier of `num_classes` outputs (0: no classifier).
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// The same network with (or without) conv biases.
    pub fn with_conv_bias(mut self, conv_bias: bool) -> Self {
        self.conv_bias = conv_bias;
        self
    }

    /// The same network with another BatchNorm epsilon.
    pub fn with_bn_eps(mut self, eps: f64) -> Self {
        self.bn_eps = eps;
        self
    }

    /// The same network with its later stages dilated so that features stay at `1/output_stride` of the
    /// input (8 or 16 for segmentation and detection backbones; see [`ResNetConfig::output_stride`]).
    pub fn with_output_stride(mut self, output_stride: usize) -> Self {
        self.output_stride = Some(output_stride);
        self
    }

    /// The same network with another head (the CLIP towers' attention pool, or a linear classifier).
    pub fn with_head(mut self, head: HeadKind) -> Self {
        self.head = head;
        self
    }

    /// The timm "d" tweaks: deep 32-wide stem and avg-down shortcuts.
    pub fn d(self) -> Self {
        self.with_stem(StemKind::Deep { width: 32 })
            .with_shortcut(ShortcutKind::AvgDownProjection)
    }

    /// The timm "t" tweaks: deep-tiered 32-wide stem and avg-down shortcuts.
    pub fn t(self) -> Self {
        self.with_stem(StemKind::DeepTiered { width: 32 })
            .with_shortcut(ShortcutKind::AvgDownProjection)
    }

    /// Channels of the features after the last stage (the classifier's input).
    pub fn num_features(&self) -> usize {
        self.channels
            .last()
            .copied()
            .unwrap_or_else(|| self.stem.out_channels())
            * self.block.expansion()
    }

    /// Downsampling of the stem: 4 (strided conv and max-pool), 1 for the CIFAR stem.
    pub fn stem_reduction(&self) -> usize {
        match self.stem {
            StemKind::Cifar { .. } => 1,
            _ => 4,
        }
    }

    /// Each stage's stride and dilations, timm's rule: a stage strides by 2 (the first by 1) until the total
    /// downsampling reaches [`ResNetConfig::output_stride`]; from then on it keeps the resolution and
    /// multiplies the dilation by the stride it gave up.
    pub fn stage_geometry(&self) -> Vec<StageGeometry> {
        let target = self.output_stride.unwrap_or(usize::MAX);
        let (mut net_stride, mut dilation) = (self.stem_reduction(), 1);
        (0..self.depths.len())
            .map(|i| {
                let first_dilation = dilation;
                let mut stride = if i == 0 { 1 } else { 2 };
                if net_stride >= target {
                    dilation *= stride;
                    stride = 1;
                } else {
                    net_stride *= stride;
                }
                StageGeometry {
                    stride,
                    first_dilation,
                    dilation,
                }
            })
            .collect()
    }

    /// Total downsampling factor from input to each stage's features.
    pub fn stage_reductions(&self) -> Vec<usize> {
        let mut r = self.stem_reduction();
        self.stage_geometry()
            .iter()
            .map(|g| {
                r *= g.stride;
                r
            })
            .collect()
    }

    /// Total downsampling factor from input to the last stage's features.
    pub fn total_stride(&self) -> usize {
        self.stage_reductions()
            .last()
            .copied()
            .unwrap_or_else(|| self.stem_reduction())
    }

    /// The input side the head was built for: `grid * output_stride` for an attention pool (224 for RN50), `None`
    /// when any size works.
    pub fn fixed_input_size(&self) -> Option<usize> {
        match self.head {
            HeadKind::AttentionPool { grid, .. } if self.num_classes > 0 => Some(grid * self.total_stride()),
            _ => None,
        }
    }

    /// Checks the knobs against each other and against [`limits`]; building a model calls this.
    pub fn validate(&self) -> Result<(), String> {
        use limits::*;
        if self.depths.len() > MAX_STAGES {
            return Err(format!(
                "{} stages, more than the {MAX_STAGES} supported",
                self.depths.len()
            ));
        }
        let blocks = self
            .depths
            .iter()
            .try_fold(0usize, |a, &d| a.checked_add(d))
            .unwrap_or(usize::MAX);
        if blocks > MAX_BLOCKS {
            return Err(format!(
                "{blocks} residual blocks, more than the {MAX_BLOCKS} supported"
            ));
        }
        let stem_width = match self.stem {
            StemKind::Classic { width }
            | StemKind::Cifar { width }
            | StemKind::Deep { width }
            | StemKind::Clip { width } => width,
            StemKind::DeepTiered { width } => width / 4,
        };
        let widest = self.channels.iter().copied().max().unwrap_or(0);
        let inner = match self.block {
            BlockKind::Basic => widest,
            BlockKind::Bottleneck { groups, base_width } => (widest.saturating_mul(base_width) / 64)
                .saturating_mul(groups)
                .max(widest.saturating_mul(4)),
        };
        if stem_width == 0 || self.in_channels == 0 || self.channels.contains(&0) {
            return Err(format!(
                "zero channels somewhere: stem {:?}, input {}, stages {:?}",
                self.stem, self.in_channels, self.channels
            ));
        }
        if [stem_width, self.in_channels, inner].iter().any(|&c| c > MAX_CHANNELS) {
            return Err(format!(
                "more than {MAX_CHANNELS} channels (stem {:?}, input {}, stages {:?}, block {:?})",
                self.stem, self.in_channels, self.channels, self.block
            ));
        }
        if self.num_classes > MAX_CLASSES {
            return Err(format!(
                "{} classes, more than the {MAX_CLASSES} supported",
                self.num_classes
            ));
        }
        if let Some(os) = self.output_stride {
            if !os.is_power_of_two() || os < self.stem_reduction() || os > 64 {
                return Err(format!(
                    "output stride {os} must be a power of two between the stem's reduction ({}) and 64",
                    self.stem_reduction()
                ));
            }
        }
        if self.depths.len() != self.channels.len() {
            return Err(format!(
                "{} stage depths but {} stage channel counts",
                self.depths.len(),
                self.channels.len()
            ));
        }
        if self.depths.is_empty() || self.depths.contains(&0) {
            return Err(format!(
                "every stage needs at least one block, got depths {:?}",
                self.depths
            ));
        }
        if let BlockKind::Bottleneck { groups, base_width } = self.block {
            let narrowest = self.channels.iter().min().copied().unwrap_or(0);
            if groups == 0 || narrowest * base_width / 64 == 0 {
                return Err(format!(
                    "bottleneck groups {groups} and base width {base_width} leave a stage with no channels"
                ));
            }
        }
        if !(self.bn_eps > 0.0 && self.bn_eps <= 1.0) {
            return Err(format!("BatchNorm eps must be in (0, 1], got {}", self.bn_eps));
        }
        if self.shortcut == ShortcutKind::ZeroPad {
            let mut cin = self.stem.out_channels();
            for &planes in &self.channels {
                let cout = planes * self.block.expansion();
                if cout < cin {
                    return Err(format!(
                        "an option-A (zero-pad) shortcut cannot shrink {cin} channels to {cout}"
                    ));
                }
                cin = cout;
            }
        }
        if self.anti_alias == AntiAlias::AvgPool
            && (self.block == BlockKind::Basic || self.stride_placement != StridePlacement::ThreeByThree)
        {
            return Err("anti-aliased strides need bottleneck blocks with the default stride placement".to_string());
        }
        if let StemKind::Clip { width } = self.stem {
            if width < 2 {
                return Err(format!(
                    "a CLIP stem of width {width} leaves its first convs without channels"
                ));
            }
        }
        if let HeadKind::AttentionPool { num_heads, grid } = self.head {
            let features = self.num_features();
            // (A grid past 1024 would be a 32k-pixel input: a corrupt config, not a model.)
            if num_heads == 0 || grid == 0 || grid > 1024 || !features.is_multiple_of(num_heads) {
                return Err(format!(
                    "an attention pool of {num_heads} heads over a {grid}x{grid} grid cannot split {features} features"
                ));
            }
        }
        Ok(())
    }
}
