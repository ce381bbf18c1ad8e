//! `zoo run`: classify images or preprocessed tensors, streaming: inputs are found, decoded (in parallel,
//! a bounded number ahead of the model), classified and printed batch by batch, so memory stays flat in the
//! number of inputs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::DType;
use serde_json::json;

use crate::batches::{describe, for_each_stack, Item};
use crate::classifier::{Classifier, ZeroShotArgs};
use crate::device::{parse_device, parse_dtype};
use crate::outln;

#[derive(clap::Args)]
pub struct Args {
    /// A pretrained name (`resnet50`, `resnet50.tv2_in1k`, `resnet50_clip`), a Hub repo
    /// (`timm/resnet50.a1_in1k`), a self-describing .safetensors file (or an OpenCLIP one with its
    /// open_clip_config.json beside it), or an architecture name used with --weights.
    model: String,
    /// Image files (JPEG, PNG, WebP, BMP, GIF, TIFF), directories (searched recursively), or .npy
    /// float32 tensors of shape (C,H,W) or (N,C,H,W) that are already preprocessed.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Weights: a .safetensors/.pth file or a Hub repo id.
    #[arg(long)]
    weights: Option<String>,
    /// How many classes to show per input (at most the model's number of classes).
    #[arg(long, default_value = "5", value_parser = |s: &str| crate::args::in_range(s, 1, 1 << 20))]
    top: usize,
    /// Images per forward pass.
    #[arg(long, default_value = "8", value_parser = crate::args::batch_size)]
    batch_size: usize,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// One JSON object per line and per image: input, index, top classes and all logits.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    zero_shot: ZeroShotArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = crate::classifier::load(&args.model, args.weights.as_deref(), &args.zero_shot, &device, dtype)?;
    let progress = crate::progress::spinner("classifying");
    let failed = crate::batches::stream(&args.inputs, model.preprocess(), args.batch_size, |batch| {
        classify(&model, batch, &args)?;
        progress.inc(batch.len() as u64);
        Ok(())
    })?;
    progress.finish_and_clear();
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Classifies a run of items, in batches of equal shape, and prints each result.
fn classify(model: &Classifier, items: &[Item], args: &Args) -> Result<()> {
    for_each_stack(items, |batch, x| {
        let logits = model
            .logits(x)
            .with_context(|| format!("classifying {}", describe(batch)))?;
        let probs = candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?.to_vec2::<f32>()?;
        let logits = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for ((item, p), l) in batch.iter().zip(&probs).zip(&logits) {
            let top = model.top_k(p, args.top);
            if args.json {
                let top: Vec<_> = top
                    .iter()
                    .map(|t| json!({"class": t.class, "label": t.label, "prob": t.prob}))
                    .collect();
                outln!(
                    "{}",
                    json!({"input": item.input.display().to_string(), "index": item.index, "top": top, "logits": l})
                )?;
            } else {
                let suffix = if item.npy {
                    format!(" [{}]", item.index)
                } else {
                    String::new()
                };
                outln!("{}{suffix}", item.input.display())?;
                for t in top {
                    outln!("  {:>6.2}%  {:>4}  {}", 100.0 * t.prob, t.class, t.label)?;
                }
            }
        }
        Ok(())
    })
}
