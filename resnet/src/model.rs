//! The whole network: stem, stages, classifier.

use candle_core::{DType, Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::attention_pool::AttentionPool;
use crate::block::{ResidualBlock, Wiring};
use crate::config::{HeadKind, ResNetConfig};
use crate::error::{Error, Result};
use crate::head::{Classifier, Head};
use crate::layers::{pool, BnMode, ConvBn, ConvBnOptions};
use crate::shortcut::Shortcut;
use crate::stage::Stage;
use crate::stem::Stem;

/// A ResNet built from a [`ResNetConfig`] and torchvision/timm-named weights.
///
/// `forward` is the eval pass; `ModuleT::forward_t(x, true)` the training pass (BatchNorm on batch statistics,
/// differentiable end to end when the network was built with [`BnMode::Keep`]).
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    pub(crate) stem: Stem,
    /// `layer1`, `layer2`, ...
    pub(crate) stages: Vec<Stage>,
    /// `fc` (or CLIP's `attnpool`), absent when `num_classes == 0`.
    pub(crate) head: Option<Head>,
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

    /// Builds the network; `vb` must hold canonical (torchvision/timm) names at its root. To load a file,
    /// with its names mapped and checked first, use [`crate::load::load`].
    ///
    /// A bf16 or f16 `vb` on the CPU with BatchNorm folded gives the CPU's reduced-precision network (see
    /// [`ResNet::load_with_weight_dtype`]): its tensors are read as f32, folded, and the conv weights rounded
    /// once to the `vb`'s dtype.
    pub fn load(config: &ResNetConfig, vb: VarBuilder, bn_mode: BnMode) -> Result<Self> {
        match (vb.device(), vb.dtype(), bn_mode) {
            (candle_core::Device::Cpu, dtype @ (DType::BF16 | DType::F16), BnMode::Fold) => {
                Self::load_with_weight_dtype(config, vb.set_dtype(DType::F32), dtype)
            }
            _ => Self::load_inner(config, vb, bn_mode, None),
        }
    }

    /// Builds the network for CPU inference (BatchNorm folded) from the tensors of `vb` (f32 ideally), with
    /// the convolution weights held in `weight_dtype`: bf16 or f16 halve the memory, and with bf16 the
    /// CPU's AVX512-BF16 dot products multiply them (twice the multiply-adds per instruction), summing in
    /// f32; activations stay f32 between layers ([`ResNet::compute_dtype`]). The classifier stays f32 (2 M
    /// of ResNet-50's 25.6 M weights). On a CPU without AVX2 the weights stay f32. Elsewhere than the CPU,
    /// `weight_dtype` is the dtype of every tensor, as for [`ResNet::load`].
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use candle_nn::VarBuilder;
    /// let cfg = resnet::variants::resnet20();
    /// let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    /// let net = resnet::ResNet::load_with_weight_dtype(&cfg, vb, DType::BF16)?;
    /// let logits = net.forward(&Tensor::zeros((1, 3, 32, 32), net.compute_dtype(), &Device::Cpu)?)?;
    /// assert_eq!(logits.dims(), &[1, 10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_with_weight_dtype(config: &ResNetConfig, vb: VarBuilder, weight_dtype: DType) -> Result<Self> {
        if !vb.device().is_cpu() {
            return Self::load_inner(config, vb.set_dtype(weight_dtype), BnMode::Fold, None);
        }
        Self::load_inner(config, vb, BnMode::Fold, Some(weight_dtype))
    }

    fn load_inner(config: &ResNetConfig, vb: VarBuilder, bn_mode: BnMode, weight_dtype: Option<DType>) -> Result<Self> {
        config.validate().map_err(Error::InvalidConfig)?;
        let opts = ConvBnOptions {
            bn_mode,
            conv_bias: config.conv_bias,
            bn_eps: config.bn_eps,
            weight_dtype,
        };
        let stem = Stem::load(config.stem, config.in_channels, &vb, opts)?;
        let mut channels = config.stem.out_channels();
        let mut stages = Vec::with_capacity(config.depths.len());
        for i in 0..config.depths.len() {
            stages.push(Stage::load(
                config,
                i,
                channels,
                vb.pp(format!("layer{}", i + 1)),
                opts,
            )?);
            channels = config.channels[i] * config.block.expansion();
        }
        let head = match (config.num_classes, config.head) {
            (0, _) => None,
            (n, HeadKind::Linear) => Some(Head::Linear(Classifier::load(channels, n, vb.pp("fc"))?)),
            (n, HeadKind::AttentionPool { num_heads, grid }) => Some(Head::AttentionPool(AttentionPool::load(
                channels,
                num_heads,
                grid,
                n,
                vb.pp("attnpool"),
            )?)),
        };
        Ok(Self {
            config: config.clone(),
            stem,
            stages,
            head,
        })
    }

    /// Eval-mode logits (N, num_classes), or a CLIP tower's image embeddings. `ModuleT::forward_t(x, true)` is
    /// the training pass. (Candle implements `ModuleT` for every `Module`, so a type can only implement one of
    /// the two.)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, false)
    }

    /// The config the network was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The dtype of the weights (that of the first convolution's).
    pub fn dtype(&self) -> DType {
        self.stem.convs.first().map_or(DType::F32, |(_, c)| c.conv().dtype())
    }

    /// The dtype to give [`ResNet::forward`] and that its activations flow in: f32 on the CPU's packed
    /// kernels whatever the weights' dtype ([`ResNet::load_with_weight_dtype`]), else [`ResNet::dtype`].
    pub fn compute_dtype(&self) -> DType {
        self.stem
            .convs
            .first()
            .map_or(DType::F32, |(_, c)| c.conv().compute_dtype())
    }

    /// The device the weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.stem
            .convs
            .first()
            .map_or(&candle_core::Device::Cpu, |(_, c)| c.conv().device())
    }

    /// The stem (the layers before `layer1`).
    pub fn stem(&self) -> &Stem {
        &self.stem
    }

    /// The stages, `layer1` first.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The head (a linear classifier, or a CLIP tower's attention pool), if the network has one.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// The linear classifier, if the head is one.
    pub fn classifier(&self) -> Option<&Classifier> {
        self.head.as_ref().and_then(Head::classifier)
    }

    /// Replaces the head with a fresh linear classifier of `num_classes` outputs, taken from `vb` (at `fc`),
    /// keeping the backbone: the transfer-learning step.
    pub fn replace_head(&mut self, num_classes: usize, vb: VarBuilder) -> Result<()> {
        self.head = Some(Head::Linear(Classifier::load(
            self.config.num_features(),
            num_classes,
            vb,
        )?));
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

    /// Every residual block in forward order with its checkpoint name (`layer1.0`, `layer1.1`, ...).
    pub fn blocks(&self) -> impl Iterator<Item = (String, &ResidualBlock)> {
        self.stages.iter().enumerate().flat_map(|(s, stage)| {
            stage
                .blocks
                .iter()
                .enumerate()
                .map(move |(b, block)| (format!("layer{}.{b}", s + 1), block))
        })
    }

    /// Every conv+BN layer in forward order with its checkpoint name: the stem's (`conv1` or `conv1.0` ...),
    /// each block's (`layer1.0.conv1`, ...) and the projecting shortcuts' (`layer1.0.downsample.0` or, for
    /// avg-down shortcuts, `layer1.0.downsample.1`): the one walk that reports, gradient studies and
    /// profiles share.
    pub fn conv_layers(&self) -> Vec<(String, &ConvBn)> {
        let mut out: Vec<(String, &ConvBn)> = self.stem.convs.iter().map(|(n, c)| (n.clone(), c)).collect();
        for (prefix, block) in self.blocks() {
            for (name, conv) in block.conv_layers() {
                out.push((format!("{prefix}.{name}"), conv));
            }
        }
        out
    }

    /// [`ResNet::conv_layers`]' layers, mutably, in the same order.
    pub(crate) fn conv_layers_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut out: Vec<&mut ConvBn> = self.stem.convs.iter_mut().map(|(_, c)| c).collect();
        for stage in &mut self.stages {
            for block in &mut stage.blocks {
                match &mut block.residual {
                    crate::block::ResidualFn::Basic(b) => out.extend([&mut b.conv1, &mut b.conv2]),
                    crate::block::ResidualFn::Bottleneck(b) => out.extend([&mut b.conv1, &mut b.conv2, &mut b.conv3]),
                }
                match &mut block.shortcut {
                    crate::shortcut::Shortcut::Projection(p) => out.push(p),
                    crate::shortcut::Shortcut::AvgDown(a) => out.push(&mut a.proj),
                    crate::shortcut::Shortcut::PooledProjection(p) => out.push(&mut p.proj),
                    crate::shortcut::Shortcut::Identity | crate::shortcut::Shortcut::ZeroPad(_) => {}
                }
            }
        }
        out
    }

    /// Post-training static int8 quantization: runs the network on `calibration` (batches of preprocessed
    /// inputs) recording each convolution's inputs, picks each one's input range by `method`, and returns a
    /// copy whose convolutions hold int8 weights (per output channel, symmetric) and quantize their inputs
    /// (per tensor; zero point 0 for inputs that were never negative, 128 otherwise) on the fly, with AMX-INT8
    /// products dequantized, biased, added to the residual and ReLU'd in the kernel's epilogue. Activations
    /// between layers and the classifier stay f32. Needs this network folded, in f32, on the CPU. Where this
    /// CPU has no int8 kernel, the copy computes in f32 with the int8-rounded weights (a simulation).
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use resnet::layers::Calibration;
    /// let net = resnet::ResNet::new(&resnet::variants::resnet20(), candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu))?;
    /// let calib = [Tensor::randn(0f32, 1., (4, 3, 32, 32), &Device::Cpu)?];
    /// let q = net.quantize_int8(&calib, Calibration::Percentile(99.99))?;
    /// assert_eq!(q.forward(&calib[0])?.dims(), &[4, 10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quantize_int8(&self, calibration: &[Tensor], method: crate::layers::Calibration) -> Result<ResNet> {
        let layers = self.conv_layers();
        let mut packed = Vec::with_capacity(layers.len());
        for (name, layer) in &layers {
            match (layer, layer.conv().packed()) {
                (ConvBn::Folded { .. }, Some(p)) if layer.conv().dtype() == DType::F32 => packed.push(p.clone()),
                _ => {
                    return Err(Error::Candle(candle_core::Error::Msg(format!(
                        "int8 quantization needs a network folded for inference, in f32, on the CPU (`{name}` is not)"
                    ))))
                }
            }
        }
        if calibration.is_empty() {
            return Err(Error::Candle(candle_core::Error::Msg(
                "int8 calibration needs at least one batch".into(),
            )));
        }
        let run = |hist: &dyn Fn(usize) -> Option<f32>| -> Result<Vec<crate::layers::quant::Observer>> {
            for (i, p) in packed.iter().enumerate() {
                p.observe(Some(hist(i)));
            }
            let ran = calibration.iter().try_for_each(|x| self.forward(x).map(|_| ()));
            let seen: Vec<_> = packed.iter().map(|p| p.observe(None)).collect();
            ran?;
            seen.into_iter()
                .zip(&layers)
                .map(|(o, (name, _))| {
                    o.ok_or_else(|| {
                        Error::Candle(candle_core::Error::Msg(format!(
                            "`{name}` saw no input while calibrating"
                        )))
                    })
                })
                .collect()
        };
        let mut observed = run(&|_| None)?;
        if method.needs_histogram() {
            let ranges: Vec<f32> = observed.iter().map(|o| o.abs_max()).collect();
            observed = run(&|i| Some(ranges[i]))?;
        }
        let mut quantized = self.clone();
        for (layer, o) in quantized.conv_layers_mut().into_iter().zip(&observed) {
            let conv = layer.conv();
            let weight = conv.weight()?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let int8 = crate::layers::Conv::new_int8(weight, conv.bias().cloned(), *conv.spec(), o.act_quant(method))?;
            layer.set_folded_conv(int8)?;
        }
        Ok(quantized)
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

    /// [`ResNet::forward_stages_t`] in eval mode.
    pub fn forward_stages(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.forward_stages_t(x, false)
    }

    /// The last stage's feature map (N, C, H/s, W/s with s the total stride), before pooling.
    pub fn forward_features_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let run = || self.forward_features_wired(x, train, Wiring::Residual);
        match x.device().is_cpu() && !train {
            true => crate::pass::pass(x.dim(0).unwrap_or(1), run),
            false => run(),
        }
    }

    /// [`ResNet::forward_features_t`] in eval mode.
    pub fn forward_features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_features_t(x, false)
    }

    /// The feature map with every block wired as `wiring`: [`Wiring::Plain`] drops all shortcuts (the
    /// "plain" twin of He et al.'s experiments, same layers and weights).
    pub fn forward_features_wired(&self, x: &Tensor, train: bool, wiring: Wiring) -> candle_core::Result<Tensor> {
        // In eval mode an int8 stem may hand the first block its output as bytes (`Stem::forward_into_block`),
        // which that block's convs (its first and its projection shortcut) read as they are.
        let first = self.stages.first().and_then(|s| s.blocks.first());
        let mut x = match (wiring, train, first) {
            (Wiring::Residual, false, Some(first)) => self.stem.forward_into_block(x, first)?,
            _ => self.stem.forward_t(x, train)?,
        };
        // Under NCHW16c the blocks run on that layout: converted once here and once at the end.
        let blocked = !train
            && wiring == Wiring::Residual
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.block_layout() == crate::layers::Layout::Nchw16c;
        if blocked {
            x = crate::layers::blocked::to_blocked(&x)?;
        }
        let mut blocks = self.stages.iter().flat_map(|s| &s.blocks).peekable();
        while let Some(block) = blocks.next() {
            x = match (wiring, train, blocks.peek()) {
                // Likewise a block hands the next its output as bytes where the next takes them (the first
                // block of a stage: its conv and its projection the only readers).
                (Wiring::Residual, false, Some(next)) => block.forward_into(&x, next)?,
                _ => block.forward_wired(&x, train, wiring)?,
            };
        }
        match blocked {
            true => crate::layers::blocked::from_blocked(&x),
            false => Ok(x),
        }
    }

    /// The activation layout an inference pass on an f32 CPU input runs the blocks in (features and logits come
    /// out as NCHW either way): [`crate::layers::Layout::Nchw16c`] where the network was loaded under it (some
    /// block conv computes in it, see [`crate::layers::Conv::layout`]) and every block suits it (an identity or
    /// projection shortcut, no pool inside, every conv a folded f32 conv on the CPU kernel with whole blocks of
    /// 16 channels on both sides); else [`crate::layers::Layout::Nchw`].
    ///
    /// ```
    /// use candle_core::{DType, Device};
    /// use resnet::layers::{BnMode, Engine, Layout};
    /// # fn main() -> anyhow::Result<()> {
    /// Layout::set_default(Some(Layout::Nchw16c));
    /// let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    /// let net = resnet::ResNet::load(&resnet::variants::resnet50(), vb, BnMode::Fold)?;
    /// Layout::set_default(None);
    /// // The blocked 1x1 kernel is AVX-512's; elsewhere the network stays on NCHW.
    /// let blocked = Engine::current() == Engine::Avx512;
    /// assert_eq!(net.block_layout() == Layout::Nchw16c, blocked);
    /// # Ok(())
    /// # }
    /// ```
    pub fn block_layout(&self) -> crate::layers::Layout {
        use crate::layers::{blocked::LANES, Layout};
        let suits = |cb: &ConvBn| match cb {
            ConvBn::Folded { conv, .. } => {
                let s = conv.spec();
                conv.is_packed()
                    && !conv.is_int8()
                    && conv.dtype() == DType::F32
                    && s.in_channels.is_multiple_of(LANES)
                    && s.out_channels.is_multiple_of(LANES)
            }
            ConvBn::Separate { .. } => false,
        };
        let blocks = || self.stages.iter().flat_map(|s| &s.blocks);
        let held = |cb: &ConvBn| cb.conv().layout() == Layout::Nchw16c;
        let blocked = blocks().any(|b| {
            b.residual.layers().iter().any(|(_, c)| held(c))
                || matches!(&b.shortcut, Shortcut::Projection(p) if held(p))
        }) && blocks().all(|b| {
            let shortcut = match &b.shortcut {
                Shortcut::Identity => true,
                Shortcut::Projection(p) => suits(p),
                _ => false,
            };
            shortcut && b.residual.pool_before_last() == 1 && b.residual.layers().iter().all(|(_, c)| suits(c))
        });
        match blocked {
            true => Layout::Nchw16c,
            false => Layout::Nchw,
        }
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
    /// The logits (a CLIP tower's embedding). An inference pass on the CPU runs as one [`crate::pass::pass`],
    /// the pool's threads kept at hand between its ops where its images are fewer than the threads.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let run = || self.forward_head(&self.forward_features_wired(x, train, Wiring::Residual)?);
        match x.device().is_cpu() && !train {
            true => crate::pass::pass(x.dim(0).unwrap_or(1), run),
            false => run(),
        }
    }
}
