//! Plain networks against their residual twins: the experiment behind He et al.'s "degradation problem".
//!
//! A twin pair is one CIFAR-layout ResNet ([`ResNetConfig::cifar`], depth `6n + 2`, option-A shortcuts)
//! run two ways: *residual*, `y = ReLU(F(x) + shortcut(x))`, and *plain*, `y = ReLU(F(x))` — the same
//! layers and the same initial weights with every shortcut removed (the paper's "plain" baseline).
//!
//! [`measure`] runs one forward/backward pass at initialisation and reports the gradient norm of every
//! layer's weights; [`train_pair`] trains both twins on a small task and records their loss curves.
//!
//! "Without BatchNorm" runs the BatchNorm layers in eval mode with their initial statistics (mean 0,
//! variance 1, scale 1, shift 0): each is then the identity (up to `1/sqrt(1 + 1e-5)`), so the network is
//! a stack of He-initialised convolutions; its scale and shift still train, as a per-channel affine.

pub mod task;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr_free::normal;
use weights::PreprocessConfig;

use crate::config::ResNetConfig;
use crate::model::ResNet;
use crate::train::optim::{ParamsSgd, SgdMomentum};
use crate::train::{Result, TrainError, TrainableResNet};

pub use task::{photo_task, synthetic_task, Task};

pub use crate::block::Wiring;

/// One twin pair's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetSpec {
    /// Weighted layers: `6n + 2` (8, 14, 20, 26, 32, 44, 56, 110, ...).
    pub depth: usize,
    /// Channels of the first stage; the others have 2x and 4x.
    pub width: usize,
    /// Outputs of the classifier.
    pub num_classes: usize,
    /// BatchNorm in train mode (batch statistics) or turned into the identity.
    pub batch_norm: bool,
    /// Initialisation seed (both twins start from the same weights).
    pub seed: u64,
}

impl NetSpec {
    /// Blocks per stage, `n = (depth - 2) / 6`.
    pub fn blocks_per_stage(&self) -> Result<usize> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            return Err(TrainError::Data(format!(
                "depth must be 6n + 2 with n >= 1 (8, 14, 20, 26, 32, 44, 56, 110), got {}",
                self.depth
            )));
        }
        Ok((self.depth - 2) / 6)
    }

    /// The twin pair's config: a CIFAR layout of `depth` and `width`.
    pub fn config(&self) -> Result<ResNetConfig> {
        let w = self.width;
        Ok(ResNetConfig::cifar(self.blocks_per_stage()?)
            .with_channels(&[w, 2 * w, 4 * w])
            .with_stem(crate::StemKind::Cifar { width: w })
            .with_num_classes(self.num_classes))
    }
}

/// He-normal convolutions (std `sqrt(2 / fan_in)`), identity BatchNorm, PyTorch-style linear head.
pub fn init_tensors(cfg: &ResNetConfig, seed: u64, device: &Device) -> Result<HashMap<String, Tensor>> {
    // Build once with zeros to learn every tensor's name and shape.
    let probe = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&probe, DType::F32, device);
    ResNet::load(cfg, vb, crate::BnMode::Keep)?;
    let mut names: Vec<(String, Vec<usize>)> = {
        let data = probe.data().lock().expect("varmap lock");
        data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
    };
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in names {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var")
            || (name.contains("bn") || name.contains("downsample.1")) && name.ends_with(".weight")
        {
            vec![1.0; n]
        } else if name.ends_with("running_mean") || name.ends_with(".bias") && !name.starts_with("fc.") {
            vec![0.0; n]
        } else if name == "fc.weight" || name == "fc.bias" {
            let bound = 1.0 / (cfg.num_features() as f32).sqrt();
            (0..n)
                .map(|_| rand::Rng::random_range(&mut rng, -bound..bound))
                .collect()
        } else {
            let fan_in: usize = shape[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt() as f32;
            (0..n).map(|_| std * normal(&mut rng)).collect()
        };
        out.insert(name, Tensor::from_vec(values, shape, device)?);
    }
    Ok(out)
}

/// A freshly initialised twin (both wirings use the same instance: the wiring is chosen per forward).
pub fn build(spec: &NetSpec, device: &Device) -> Result<TrainableResNet> {
    let cfg = spec.config()?;
    let tensors = init_tensors(&cfg, spec.seed, device)?;
    TrainableResNet::from_tensors(
        &format!("cifar{}", spec.depth),
        &cfg,
        tensors,
        PreprocessConfig::cifar(),
        device,
    )
}

/// Logits of `net` wired as `wiring`. `bn_train` picks batch statistics (train mode) or running ones.
pub fn forward(net: &ResNet, x: &Tensor, wiring: Wiring, bn_train: bool) -> candle_core::Result<Tensor> {
    net.forward_head(&net.forward_features_wired(x, bn_train, wiring)?)
}

/// Every weighted layer in forward order, with its weight tensor: `conv1`, `layer1.0.conv1`, ..., `fc`.
pub fn weight_layers(net: &ResNet) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = net
        .conv_layers()
        .into_iter()
        .filter_map(|(name, conv)| Some((name, conv.conv().weight().ok()?.into_owned())))
        .collect();
    if let Some(head) = net.classifier() {
        out.push(("fc".to_string(), head.fc.weight().clone()));
    }
    out
}

/// Gradient norm of one layer's weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerGrad {
    /// Checkpoint name of the layer.
    pub layer: String,
    /// L2 norm of the loss gradient with respect to the layer's weights.
    pub grad_norm: f32,
    /// L2 norm of the weights themselves.
    pub weight_norm: f32,
}

/// One forward/backward pass of a twin pair at initialisation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GradReport {
    /// Weighted layers.
    pub depth: usize,
    /// Channels of the first stage.
    pub width: usize,
    /// Whether BatchNorm ran on batch statistics.
    pub batch_norm: bool,
    /// Loss of the plain twin.
    pub plain_loss: f32,
    /// Loss of the residual twin.
    pub residual_loss: f32,
    /// Per-layer gradients of the plain twin, in forward order.
    pub plain: Vec<LayerGrad>,
    /// Per-layer gradients of the residual twin, in forward order.
    pub residual: Vec<LayerGrad>,
}

impl GradReport {
    /// Gradient norm of the first layer (the stem convolution).
    pub fn first(&self, wiring: Wiring) -> f32 {
        self.layers(wiring)[0].grad_norm
    }

    /// Gradient norm of the last convolution (just before the classifier).
    pub fn last_conv(&self, wiring: Wiring) -> f32 {
        let l = self.layers(wiring);
        l[l.len() - 2].grad_norm
    }

    /// The per-layer gradients of one twin.
    pub fn layers(&self, wiring: Wiring) -> &[LayerGrad] {
        match wiring {
            Wiring::Plain => &self.plain,
            Wiring::Residual => &self.residual,
        }
    }
}

fn l2(t: &Tensor) -> candle_core::Result<f32> {
    t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()
}

fn grads_of(net: &ResNet, loss: &Tensor) -> candle_core::Result<Vec<LayerGrad>> {
    let grads = loss.backward()?;
    weight_layers(net)
        .into_iter()
        .map(|(layer, w)| {
            let grad_norm = match grads.get(&w) {
                Some(g) => l2(g)?,
                None => 0.0,
            };
            Ok(LayerGrad {
                layer,
                grad_norm,
                weight_norm: l2(&w)?,
            })
        })
        .collect()
}

/// Builds the twin pair of `spec` and runs the batch `(x, y)` through both wirings, forward and backward.
pub fn measure(spec: &NetSpec, x: &Tensor, y: &Tensor) -> Result<GradReport> {
    let net = build(spec, x.device())?;
    let mut losses = [0f32; 2];
    let mut layers = Vec::new();
    for (i, wiring) in [Wiring::Plain, Wiring::Residual].into_iter().enumerate() {
        let logits = forward(&net.model, x, wiring, spec.batch_norm)?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        losses[i] = loss.to_scalar::<f32>()?;
        layers.push(grads_of(&net.model, &loss)?);
    }
    let residual = layers.pop().expect("two");
    let plain = layers.pop().expect("two");
    Ok(GradReport {
        depth: spec.depth,
        width: spec.width,
        batch_norm: spec.batch_norm,
        plain_loss: losses[0],
        residual_loss: losses[1],
        plain,
        residual,
    })
}

/// A batch of `n` standard-normal `size` x `size` inputs with labels cycling through `classes`, from `seed`
/// (the probe [`measure`] is run on: at initialisation the labels carry no information anyway).
pub fn gaussian_batch(n: usize, size: usize, classes: usize, seed: u64, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9a55);
    let x: Vec<f32> = (0..n * 3 * size * size).map(|_| normal(&mut rng)).collect();
    let y: Vec<u32> = (0..n).map(|i| (i % classes.max(1)) as u32).collect();
    Ok((
        Tensor::from_vec(x, (n, 3, size, size), device)?,
        Tensor::from_vec(y, n, device)?,
    ))
}

/// Knobs of [`train_pair`].
#[derive(Debug, Clone, Copy)]
pub struct TrainSpec {
    /// SGD steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Record the mean training loss every `every` steps.
    pub every: usize,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 32,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            every: 10,
        }
    }
}

/// The loss curve of one network.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Curve {
    /// Weighted layers.
    pub depth: usize,
    /// `plain` or `residual`.
    pub wiring: &'static str,
    /// `(step, mean training loss over the last `every` steps)`.
    pub points: Vec<(usize, f32)>,
    /// Accuracy on the task's held-out set after training (eval-mode BatchNorm).
    pub test_acc: f32,
    /// Loss of the last step.
    pub final_train_loss: f32,
}

impl Curve {
    /// Mean of the last `k` recorded points.
    pub fn tail_loss(&self, k: usize) -> f32 {
        let k = k.min(self.points.len()).max(1);
        self.points[self.points.len() - k..].iter().map(|p| p.1).sum::<f32>() / k as f32
    }
}

/// Trains a fresh network of `spec` wired as `wiring` on `task` with SGD + momentum. Both wirings of one
/// spec start from the same weights and see the same batches.
pub fn train_one(
    spec: &NetSpec,
    wiring: Wiring,
    task: &Task,
    ts: &TrainSpec,
    progress: &mut dyn FnMut(usize),
) -> Result<Curve> {
    use candle_nn::Optimizer;
    use rand::seq::SliceRandom;
    let device = task.x_train.device().clone();
    let net = build(spec, &device)?;
    let vars = net
        .trainable_vars(crate::train::Scope::All)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut opt = SgdMomentum::new(
        vars,
        ParamsSgd {
            lr: ts.lr,
            momentum: ts.momentum,
            weight_decay: ts.weight_decay,
            nesterov: false,
        },
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ 0xba7c);
    let n = task.x_train.dim(0)?;
    let mut order: Vec<usize> = Vec::new();
    let mut points = Vec::new();
    let (mut acc_loss, mut acc_n) = (0f64, 0usize);
    let mut last = f32::NAN;
    for step in 1..=ts.steps {
        if order.len() < ts.batch_size {
            let mut fresh: Vec<usize> = (0..n).collect();
            fresh.shuffle(&mut rng);
            order.extend(fresh);
        }
        let idx: Vec<u32> = order.drain(..ts.batch_size.min(n)).map(|i| i as u32).collect();
        let idx = Tensor::from_vec(idx.clone(), idx.len(), &device)?;
        let x = task.x_train.index_select(&idx, 0)?;
        let y = task.y_train.index_select(&idx, 0)?;
        let logits = forward(&net.model, &x, wiring, spec.batch_norm)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let l = loss.to_scalar::<f32>()?;
        opt.backward_step(&loss)?;
        last = l;
        acc_loss += if l.is_finite() { l as f64 } else { 1e3 };
        acc_n += 1;
        if step % ts.every.max(1) == 0 || step == ts.steps {
            points.push((step, (acc_loss / acc_n as f64) as f32));
            acc_loss = 0.0;
            acc_n = 0;
        }
        progress(step);
    }
    let logits = forward(&net.model, &task.x_test, wiring, false)?;
    let hits = logits
        .argmax(1)?
        .eq(&task.y_test)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(Curve {
        depth: spec.depth,
        wiring: wiring.name(),
        points,
        test_acc: hits,
        final_train_loss: last,
    })
}

/// Trains both twins of `spec` (plain first) on `task`.
pub fn train_pair(
    spec: &NetSpec,
    task: &Task,
    ts: &TrainSpec,
    progress: &mut dyn FnMut(Wiring, usize),
) -> Result<[Curve; 2]> {
    let plain = train_one(spec, Wiring::Plain, task, ts, &mut |s| progress(Wiring::Plain, s))?;
    let residual = train_one(spec, Wiring::Residual, task, ts, &mut |s| progress(Wiring::Residual, s))?;
    Ok([plain, residual])
}

/// A standard normal sample by Box-Muller (no extra dependency).
mod rand_distr_free {
    pub fn normal(rng: &mut impl rand::Rng) -> f32 {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}
