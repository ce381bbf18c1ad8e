//! `zoo finetune`: replace a model's classifier and train it on an image folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use resnet::load::LoadOptions;
use resnet::train::{
    self, Augment, Dataset, Event, FinetuneConfig, ImageFolder, OptimizerKind, Scope, TrainableResNet,
};

use crate::device::parse_device;

#[derive(clap::Args)]
pub struct Args {
    /// A pretrained name (`resnet50.tv_in1k`), a Hub repo, a self-describing .safetensors file, or an
    /// architecture name used with --weights (`resnet20`).
    model: String,
    /// Training images: one sub-directory per class (torchvision's ImageFolder).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the fine-tuned, self-describing .safetensors checkpoint.
    #[arg(long, visible_alias = "output")]
    out: PathBuf,
    /// Weights to start from: a .safetensors/.pth file (keys may carry `module.` or a `linear` head).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Passes over the training images, at least (more when --min-steps asks for more).
    #[arg(long, default_value = "5", value_parser = crate::args::count)]
    epochs: usize,
    /// Optimizer steps at least: small datasets get more epochs (the learning rate follows a cosine decay
    /// over all steps).
    #[arg(long, default_value = "300", value_parser = |s: &str| crate::args::in_range(s, 0, 1_000_000))]
    min_steps: usize,
    /// Peak learning rate [default: head 1e-2 (adamw) / 0.1 (sgd); all 1e-4 (adamw) / 1e-2 (sgd)].
    #[arg(long, value_parser = crate::args::positive)]
    lr: Option<f64>,
    #[arg(long, default_value = "32", value_parser = crate::args::batch_size)]
    batch_size: usize,
    /// `head`: train only the new classifier (backbone and its BatchNorm frozen); `all`: every weight,
    /// BatchNorm in train mode.
    #[arg(long = "train", default_value = "head")]
    scope: Scope,
    /// adamw or sgd (with momentum 0.9).
    #[arg(long, default_value = "adamw")]
    optimizer: OptimizerKind,
    #[arg(long, default_value = "1e-4", value_parser = crate::args::non_negative)]
    weight_decay: f64,
    /// Fraction of each class held out for validation (ignored with --val-dir).
    #[arg(long, default_value = "0.2", value_parser = crate::args::fraction)]
    val_split: f64,
    /// A separate validation ImageFolder with the same classes.
    #[arg(long)]
    val_dir: Option<PathBuf>,
    /// Smallest area fraction of the random resized crop (torchvision: 0.08).
    #[arg(long, default_value = "0.08", value_parser = crate::args::unit_interval)]
    min_scale: f64,
    /// Train on the eval transform only: no random crops or flips.
    #[arg(long)]
    no_augment: bool,
    /// Seed for the head's initialisation, the split, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Where MODEL's starting weights come from: the architecture name to check them against (if one was
/// given), a fallback architecture (a registry entry's) and a local file (downloaded for Hub names).
fn locate_checkpoint(model: &str, weights: Option<&Path>) -> Result<(LoadOptions, PathBuf)> {
    if let Some(w) = weights {
        if !w.is_file() {
            bail!("weights file {} does not exist", w.display());
        }
        return Ok((LoadOptions::arch(model), w.to_path_buf()));
    }
    let p = Path::new(model);
    if p.is_file() {
        return Ok((LoadOptions::default(), p.to_path_buf()));
    }
    let hub = weights::hub::Hub::from_env()?;
    let target = resnet::pretrained::target(model)?;
    let fetched = resnet::pretrained::fetch(&hub, &target)?;
    let fallback_arch = target.entry.as_ref().map(|e| e.arch.clone());
    Ok((
        LoadOptions {
            fallback_arch,
            ..LoadOptions::default()
        },
        fetched.weights,
    ))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let (opts, path) = locate_checkpoint(&args.model, args.weights.as_deref())?;
    let mut net = TrainableResNet::from_checkpoint_with(&path, &opts, &device)
        .with_context(|| format!("loading {}", path.display()))?;
    if !Path::new(&args.model).is_file() && args.weights.is_none() {
        net.preprocess = crate::resolve::preprocess_for(&args.model, None)?;
    }

    crate::files::refuse_overwriting_input(&path, &args.out)?;
    let folder = ImageFolder::open(&args.data)?;
    folder.warnings().iter().for_each(|w| eprintln!("warning: {w}"));
    let (train_folder, val_folder) = match &args.val_dir {
        Some(dir) => {
            let val = ImageFolder::open(dir)?;
            val.warnings().iter().for_each(|w| eprintln!("warning: {w}"));
            if val.classes() != folder.classes() {
                bail!(
                    "{} has classes {:?} but {} has {:?}",
                    dir.display(),
                    val.classes(),
                    args.data.display(),
                    folder.classes()
                );
            }
            (folder.clone(), val)
        }
        None => folder.split(args.val_split, args.seed),
    };
    let classes = folder.classes().to_vec();
    eprintln!(
        "{} ({}): new {}-way head for {:?}; {} training / {} validation images; training: {}",
        path.display(),
        net.arch,
        classes.len(),
        classes,
        train_folder.len(),
        val_folder.len(),
        args.scope
    );
    net.replace_head(classes.clone(), args.seed)?;
    let train_set = Dataset::load(&train_folder, &net.preprocess, true)?;
    let val_set = Dataset::load(&val_folder, &net.preprocess, false)?;

    let cfg = FinetuneConfig {
        epochs: args.epochs,
        min_steps: args.min_steps,
        lr: args.lr,
        batch_size: args.batch_size,
        scope: args.scope,
        optimizer: args.optimizer,
        weight_decay: args.weight_decay,
        seed: args.seed,
        augment: (!args.no_augment).then_some(Augment {
            scale: (args.min_scale, 1.0),
            ..Augment::default()
        }),
        ..FinetuneConfig::default()
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut total_epochs = cfg.epochs;
    let mut on_event = |event: Event| match event {
        Event::EpochStart { epoch, epochs, steps } => {
            let b = crate::progress::bar(steps as u64, &format!("epoch {epoch}/{epochs}"));
            bar = Some(b);
            total_epochs = epochs;
        }
        Event::Step { epoch, loss, acc, .. } => {
            if let Some(b) = &bar {
                b.set_message(format!("epoch {epoch}/{total_epochs} loss {loss:.4} acc {acc:.3}"));
                b.inc(1);
            }
        }
        Event::EpochEnd(s) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let val = match (s.val_loss, s.val_acc) {
                (Some(l), Some(a)) => format!("val loss {l:.4} acc {a:.3}"),
                _ => "no validation images".to_string(),
            };
            eprintln!(
                "epoch {}/{}  train loss {:.4} acc {:.3}  {val}  ({:.1}s)",
                s.epoch, total_epochs, s.train_loss, s.train_acc, s.seconds
            );
        }
    };
    let history = train::finetune(&net, &train_set, Some(&val_set), &cfg, &mut on_event)?;
    net.save(&args.out)?;
    let last = history.last();
    crate::outln!(
        "wrote {} ({}, {} classes: {}){}",
        args.out.display(),
        net.arch,
        classes.len(),
        classes.join(", "),
        last.and_then(|s| s.val_acc)
            .map(|a| format!("; validation accuracy {a:.3}"))
            .unwrap_or_default()
    )?;
    Ok(ExitCode::SUCCESS)
}
