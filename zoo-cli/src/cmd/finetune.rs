//! `zoo finetune`: replace a model's classifier and train it on an image folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use resnet::train::{self, Augment, Dataset, Event, FinetuneConfig, ImageFolder, OptimizerKind, Scope, TrainableResNet};

use crate::device::parse_device;

#[derive(clap::Args)]
pub struct Args {
    /// An architecture name used with --weights (`resnet20`), or a self-describing .safetensors file.
    model: String,
    /// Training images: one sub-directory per class (torchvision's ImageFolder).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the fine-tuned, self-describing .safetensors checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Weights to start from: a .safetensors file (keys may carry `module.` or a `linear` head).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Learning rate [default: 1e-3 for adamw, 1e-2 for sgd].
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// `head`: train only the new classifier (backbone and its BatchNorm frozen); `all`: every weight,
    /// BatchNorm in train mode.
    #[arg(long = "train", default_value = "head")]
    scope: Scope,
    /// adamw or sgd (with momentum 0.9).
    #[arg(long, default_value = "adamw")]
    optimizer: OptimizerKind,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Fraction of each class held out for validation (ignored with --val-dir).
    #[arg(long, default_value_t = 0.2)]
    val_split: f64,
    /// A separate validation ImageFolder with the same classes.
    #[arg(long)]
    val_dir: Option<PathBuf>,
    /// Smallest area fraction of the random resized crop (torchvision: 0.08).
    #[arg(long, default_value_t = 0.08)]
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

/// Where MODEL's starting weights come from: the architecture name (if one was given) and a local file.
///
/// TODO(lead): registry and Hub names (`resnet50.tv2_in1k`, `timm/resnet50.a1_in1k`) belong here: fetch the
/// checkpoint into the cache and return its path (the architecture from the registry entry when the file
/// carries no `zoo.config`). Preprocessing then comes from the file's metadata or the stem's default.
fn locate_checkpoint(model: &str, weights: Option<&Path>) -> Result<(Option<String>, PathBuf)> {
    if let Some(w) = weights {
        if !w.is_file() {
            bail!("weights file {} does not exist", w.display());
        }
        resnet::variants::by_name(model)?;
        return Ok((Some(model.to_string()), w.to_path_buf()));
    }
    let p = Path::new(model);
    if p.is_file() {
        return Ok((None, p.to_path_buf()));
    }
    bail!(
        "`zoo finetune` needs starting weights: `zoo finetune {model} --weights FILE.safetensors ...` or a self-describing \
         .safetensors file as MODEL (pretrained registry/Hub names are not wired into finetune yet)"
    )
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let (arch, path) = locate_checkpoint(&args.model, args.weights.as_deref())?;
    let mut net = TrainableResNet::from_checkpoint(&path, arch.as_deref(), &device)
        .with_context(|| format!("loading {}", path.display()))?;

    let folder = ImageFolder::open(&args.data)?;
    let (train_folder, val_folder) = match &args.val_dir {
        Some(dir) => {
            let val = ImageFolder::open(dir)?;
            if val.classes() != folder.classes() {
                bail!("{} has classes {:?} but {} has {:?}", dir.display(), val.classes(), args.data.display(), folder.classes());
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
        lr: args.lr.unwrap_or(match args.optimizer {
            OptimizerKind::AdamW => 1e-3,
            OptimizerKind::Sgd => 1e-2,
        }),
        batch_size: args.batch_size,
        scope: args.scope,
        optimizer: args.optimizer,
        weight_decay: args.weight_decay,
        seed: args.seed,
        augment: (!args.no_augment).then_some(Augment { scale: (args.min_scale, 1.0), ..Augment::default() }),
        ..FinetuneConfig::default()
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on_event = |event: Event| match event {
        Event::EpochStart { epoch, epochs, steps } => {
            let b = crate::progress::bar(steps as u64, &format!("epoch {epoch}/{epochs}"));
            bar = Some(b);
        }
        Event::Step { epoch, loss, acc, .. } => {
            if let Some(b) = &bar {
                b.set_message(format!("epoch {epoch}/{} loss {loss:.4} acc {acc:.3}", cfg.epochs));
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
                s.epoch, cfg.epochs, s.train_loss, s.train_acc, s.seconds
            );
        }
    };
    let history = train::finetune(&net, &train_set, Some(&val_set), &cfg, &mut on_event)?;
    net.save(&args.out)?;
    let last = history.last();
    println!(
        "wrote {} ({}, {} classes: {}){}",
        args.out.display(),
        net.arch,
        classes.len(),
        classes.join(", "),
        last.and_then(|s| s.val_acc).map(|a| format!("; validation accuracy {a:.3}")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
