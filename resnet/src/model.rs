//! The whole network: stem, stages, classifier.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::attention_pool::AttentionPool;
use crate::config::{HeadKind, ResNetConfig};
use crate::error::{Error, Result};
use crate::head::{Classifier, Head};
use crate::layers::{pool, BnMode, ConvBnOptions};
use crate::stage::Stage;
use crate::stem::Stem;

/// A ResNet built from a [`ResNetConfig`] and torchvision/timm-named weights.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    pub stem: Stem,
    /// `layer1`, `layer2`, ...
    pub stages: Vec<Stage>,
    /// `fc` (or CLIP's `attnpool`), absent when `num_classes == 0`.
    pub head: Option<Head>,
}

impl ResNet {
    /// Builds the network for inference: every BatchNorm folded into its convolution.
    pub fn new(config: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(config, vb, BnMode::Fold)
    }

    /// Builds the network with separate BatchNorm layers, as needed for training.
    pub fn new_trainable(config: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(config, vb, BnMode::Keep)
    }

    /// Builds the network; `vb` must hold canonical (torchvision/timm) names at its root.
    pub fn load(config: &ResNetConfig, vb: VarBuilder, bn_mode: BnMode) -> Result<Self> {
        config.validate().map_err(Error::InvalidConfig)?;
        let opts = ConvBnOptions { bn_mode, conv_bias: config.conv_bias, bn_eps: config.bn_eps };
        let stem = Stem::load(config.stem, config.in_channels, &vb, opts)?;
        let mut channels = config.stem.out_channels();
        let mut stages = Vec::with_capacity(config.depths.len());
        for i in 0..config.depths.len() {
            stages.push(Stage::load(config, i, channels, vb.pp(format!("layer{}", i + 1)), opts)?);
            channels = config.channels[i] * config.block.expansion();
        }
        let head = match (config.num_classes, config.head) {
            (0, _) => None,
            (n, HeadKind::Linear) => Some(Head::Linear(Classifier::load(channels, n, vb.pp("fc"))?)),
            (n, HeadKind::AttentionPool { num_heads, grid }) => {
                Some(Head::AttentionPool(AttentionPool::load(channels, num_heads, grid, n, vb.pp("attnpool"))?))
            }
        };
        Ok(Self { config: config.clone(), stem, stages, head })
    }

    /// Eval-mode logits (N, num_classes), or a CLIP tower's image embeddings. `ModuleT::forward_t(x, true)` is
    /// the training pass. (Candle implements `ModuleT` for every `Module`, so a type can only implement one of
    /// the two.)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, false)
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Replaces the head with a fresh linear classifier of `num_classes` outputs, taken from `vb` (at `fc`),
    /// keeping the backbone: the transfer-learning step.
    pub fn replace_head(&mut self, num_classes: usize, vb: VarBuilder) -> Result<()> {
        self.head = Some(Head::Linear(Classifier::load(self.config.num_features(), num_classes, vb)?));
        self.config.num_classes = num_classes;
        self.config.head = HeadKind::Linear;
        Ok(())
    }

    /// Learnable parameters, counted as the checkpoint stores them (BN weight and bias included even
    /// when folded; running statistics excluded), like `sum(p.numel() for p in model.parameters())`.
    pub fn num_params(&self) -> usize {
        self.stem.num_params()
            + self.stages.iter().map(Stage::num_params).sum::<usize>()
            + self.head.as_ref().map_or(0, Head::num_params)
    }

    /// The output of every stage, from `layer1` to the last (for feature pyramids).
    pub fn forward_stages_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Vec<Tensor>> {
        let mut x = self.stem.forward_t(x, train)?;
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = stage.forward_t(&x, train)?;
            outs.push(x.clone());
        }
        Ok(outs)
    }

    pub fn forward_stages(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.forward_stages_t(x, false)
    }

    /// The last stage's feature map (N, C, H/32, W/32), before pooling.
    pub fn forward_features_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = self.stem.forward_t(x, train)?;
        for stage in &self.stages {
            x = stage.forward_t(&x, train)?;
        }
        Ok(x)
    }

    pub fn forward_features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_features_t(x, false)
    }

    /// Logits (a CLIP tower's embeddings) from a feature map; pooled features when there is no head.
    pub fn forward_head(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        match &self.head {
            Some(head) => head.forward(features),
            None => pool::global_avg_pool(features),
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_head(&self.forward_features_t(x, train)?)
    }
}

