//! The fine-tuning loop.

use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::dataset::{Augment, Dataset};
use super::freeze::Scope;
use super::optim::{ParamsSgd, SgdMomentum};
use super::{Result, TrainError, TrainableResNet};
use crate::model::ResNet;

/// Which candle-nn optimizer updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizerKind {
    /// candle-nn's AdamW (decoupled weight decay).
    #[default]
    AdamW,
    /// SGD with momentum ([`super::optim::SgdMomentum`], on candle-nn's `Optimizer` trait).
    Sgd,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "adamw" => Ok(Self::AdamW),
            "sgd" => Ok(Self::Sgd),
            other => Err(format!("unknown optimizer `{other}` (adamw, sgd)")),
        }
    }
}

/// Knobs of one fine-tune.
///
/// The defaults are a recipe that works on small data: training is scheduled by optimizer steps, not
/// epochs (at least [`FinetuneConfig::min_steps`]; five epochs of 70 images are only ten steps), with a
/// short linear warm-up and a cosine decay of the learning rate to zero, and a learning rate chosen for what
/// trains ([`recommended_lr`]): a linear probe on frozen features tolerates, and on few steps needs, a rate
/// ten to a hundred times that of full fine-tuning.
#[derive(Debug, Clone)]
pub struct FinetuneConfig {
    /// Passes over the training set, at least (more when `min_steps` asks for more).
    pub epochs: usize,
    /// Optimizer steps at least: the epochs are extended until the run has this many.
    pub min_steps: usize,
    /// Peak learning rate; `None` takes [`recommended_lr`] for the scope and optimizer.
    pub lr: Option<f64>,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// What trains: the new head alone, or everything.
    pub scope: Scope,
    /// AdamW or SGD with momentum.
    pub optimizer: OptimizerKind,
    /// Decoupled (AdamW) or L2 (SGD) weight decay.
    pub weight_decay: f64,
    /// SGD only.
    pub momentum: f64,
    /// Shuffling and augmentation.
    pub seed: u64,
    /// `None` trains on the eval transform alone.
    pub augment: Option<Augment>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            min_steps: 300,
            lr: None,
            batch_size: 32,
            scope: Scope::Head,
            optimizer: OptimizerKind::AdamW,
            weight_decay: 1e-4,
            momentum: 0.9,
            seed: 0,
            augment: Some(Augment::default()),
        }
    }
}

/// The default peak learning rate: a linear probe (head only) 1e-2 with AdamW and 0.1 with SGD; full
/// fine-tuning ten times lower for SGD and a hundred times lower for AdamW, so pretrained features are
/// adjusted rather than overwritten.
pub fn recommended_lr(scope: Scope, optimizer: OptimizerKind) -> f64 {
    match (scope, optimizer) {
        (Scope::Head, OptimizerKind::AdamW) => 1e-2,
        (Scope::Head, OptimizerKind::Sgd) => 0.1,
        (Scope::All, OptimizerKind::AdamW) => 1e-4,
        (Scope::All, OptimizerKind::Sgd) => 1e-2,
    }
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up over the first 5 % of the steps, then a
/// cosine decay from `peak` to zero.
pub fn scheduled_lr(peak: f64, step: usize, total: usize) -> f64 {
    let total = total.max(1) as f64;
    let warmup = (0.05 * total).ceil().max(1.0);
    let s = step as f64;
    if s < warmup {
        return peak * (s + 1.0) / warmup;
    }
    let progress = ((s - warmup) / (total - warmup).max(1.0)).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Loss and accuracy of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (with augmentation, weights changing as it goes).
    pub train_loss: f32,
    /// Training accuracy over the epoch.
    pub train_acc: f32,
    /// Held-out loss after the epoch.
    pub val_loss: Option<f32>,
    /// Held-out accuracy after the epoch.
    pub val_acc: Option<f32>,
    /// Wall time of the epoch.
    pub seconds: f32,
}

/// Progress reports, for a progress bar or a log.
#[derive(Debug)]
pub enum Event<'a> {
    /// An epoch begins.
    EpochStart {
        /// 1-based.
        epoch: usize,
        /// Epochs in all.
        epochs: usize,
        /// Optimizer steps per epoch.
        steps: usize,
    },
    /// After each optimizer step: this batch's loss, and the running accuracy of the epoch so far.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// This batch's loss.
        loss: f32,
        /// The epoch's running accuracy.
        acc: f32,
    },
    /// An epoch ended.
    EpochEnd(&'a EpochStats),
}

enum Opt {
    AdamW(AdamW),
    Sgd(SgdMomentum),
}

impl Opt {
    fn step(&mut self, loss: &Tensor, lr: f64) -> candle_core::Result<()> {
        match self {
            Opt::AdamW(o) => {
                o.set_learning_rate(lr);
                o.backward_step(loss)
            }
            Opt::Sgd(o) => {
                o.set_learning_rate(lr);
                o.backward_step(loss)
            }
        }
    }
}

/// Number of correct argmax predictions.
fn correct(logits: &Tensor, labels: &Tensor) -> candle_core::Result<usize> {
    let pred = logits.argmax(1)?;
    Ok(pred.eq(labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

/// Eval-mode mean loss and accuracy of `net` on `data`.
pub fn evaluate(net: &TrainableResNet, data: &Dataset, batch_size: usize) -> Result<(f32, f32)> {
    evaluate_with(net, None, data, batch_size)
}

/// Logits of `net`: through `frozen` (the folded backbone) when given, the head on top.
fn logits_of(net: &TrainableResNet, frozen: Option<&ResNet>, x: &Tensor, scope: Scope) -> candle_core::Result<Tensor> {
    match frozen {
        Some(b) => net.model.forward_head(&b.forward_features(x)?),
        None => net.forward_train(x, scope),
    }
}

/// [`evaluate`], the features from `frozen` when given.
fn evaluate_with(
    net: &TrainableResNet,
    frozen: Option<&ResNet>,
    data: &Dataset,
    batch_size: usize,
) -> Result<(f32, f32)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (mut loss_sum, mut hits) = (0f64, 0usize);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = data.batch(chunk, None, &mut rng, net.device())?;
        let logits = match frozen {
            Some(b) => net.model.forward_head(&b.forward_features(&x)?)?,
            None => net.model.forward(&x)?,
        };
        loss_sum += candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        hits += correct(&logits, &y)?;
    }
    let n = data.len().max(1) as f64;
    Ok(((loss_sum / n) as f32, (hits as f64 / n) as f32))
}

/// Trains `net` on `train` (validating on `val` after every epoch) and returns each epoch's numbers.
///
/// Under [`Scope::Head`] only `fc.*` moves and BatchNorm keeps its running statistics; under
/// [`Scope::All`] every weight trains and BatchNorm runs in train mode, updating its running statistics.
pub fn finetune(
    net: &TrainableResNet,
    train: &Dataset,
    val: Option<&Dataset>,
    cfg: &FinetuneConfig,
    on_event: &mut dyn FnMut(Event),
) -> Result<Vec<EpochStats>> {
    let classes = net.config().num_classes;
    if train.classes.len() != classes {
        return Err(TrainError::Data(format!(
            "the head has {classes} outputs but the data has {} classes: call replace_head first",
            train.classes.len()
        )));
    }
    if train.is_empty() {
        return Err(TrainError::Data("no training images".into()));
    }
    let peak = cfg.lr.unwrap_or_else(|| recommended_lr(cfg.scope, cfg.optimizer));
    let lr_ok = peak.is_finite() && peak > 0.0;
    let decay_ok = cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0;
    if !lr_ok || !decay_ok {
        return Err(TrainError::Data(format!(
            "the learning rate ({peak}) must be positive and the weight decay ({}) non-negative, both finite",
            cfg.weight_decay
        )));
    }
    let vars: Vec<_> = net.trainable_vars(cfg.scope).into_iter().map(|(_, v)| v).collect();
    let mut opt = match cfg.optimizer {
        OptimizerKind::AdamW => Opt::AdamW(AdamW::new(
            vars,
            ParamsAdamW {
                lr: peak,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?),
        OptimizerKind::Sgd => Opt::Sgd(SgdMomentum::new(
            vars,
            ParamsSgd {
                lr: peak,
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
                nesterov: false,
            },
        )?),
    };
    // Head only: the backbone is constant, so its features come from a folded inference copy.
    let frozen = match cfg.scope {
        Scope::Head => Some(net.frozen_backbone()?),
        Scope::All => None,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let bs = cfg.batch_size.max(1);
    let steps = train.len().div_ceil(bs);
    let epochs = cfg.epochs.max(1).max(cfg.min_steps.div_ceil(steps));
    let total_steps = epochs * steps;
    let mut global_step = 0;
    let mut history = Vec::with_capacity(epochs);
    for epoch in 1..=epochs {
        let start = Instant::now();
        on_event(Event::EpochStart { epoch, epochs, steps });
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut hits, mut seen) = (0f64, 0usize, 0usize);
        for (step, chunk) in order.chunks(bs).enumerate() {
            // BatchNorm's batch statistics need more than one value per channel.
            if chunk.len() < 2 && cfg.scope.bn_train() && seen > 0 {
                continue;
            }
            let (x, y) = train.batch(chunk, cfg.augment.as_ref(), &mut rng, net.device())?;
            let logits = logits_of(net, frozen.as_ref(), &x, cfg.scope)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let l = loss.to_scalar::<f32>()?;
            if !l.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step: step + 1,
                    lr: peak,
                });
            }
            opt.step(&loss, scheduled_lr(peak, global_step, total_steps))?;
            global_step += 1;
            loss_sum += l as f64 * chunk.len() as f64;
            hits += correct(&logits, &y)?;
            seen += chunk.len();
            on_event(Event::Step {
                epoch,
                step: step + 1,
                steps,
                loss: l,
                acc: hits as f32 / seen as f32,
            });
        }
        let (val_loss, val_acc) = match val {
            Some(v) if !v.is_empty() => {
                let (l, a) = evaluate_with(net, frozen.as_ref(), v, bs)?;
                (Some(l), Some(a))
            }
            _ => (None, None),
        };
        let stats = EpochStats {
            epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_acc: hits as f32 / seen.max(1) as f32,
            val_loss,
            val_acc,
            seconds: start.elapsed().as_secs_f32(),
        };
        on_event(Event::EpochEnd(&stats));
        history.push(stats);
    }
    Ok(history)
}
