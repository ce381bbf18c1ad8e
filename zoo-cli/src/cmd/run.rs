//! `zoo run`: classify images or preprocessed tensors, streaming: inputs are found, decoded (in parallel,
//! a bounded number ahead of the model), classified and printed batch by batch, so memory stays flat in the
//! number of inputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use resnet::Pretrained;
use serde_json::json;

use crate::device::{parse_device, parse_dtype};
use crate::inputs::{InputEvent, Inputs};
use crate::outln;

#[derive(clap::Args)]
pub struct Args {
    /// A pretrained name (`resnet50`, `resnet50.tv2_in1k`), a Hub repo (`timm/resnet50.a1_in1k`),
    /// a self-describing .safetensors file, or an architecture name used with --weights.
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
}

/// One thing to classify: an image, or one item of a .npy batch.
struct Item {
    input: PathBuf,
    index: usize,
    npy: bool,
    tensor: Tensor,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = crate::resolve::load_model(&args.model, args.weights.as_deref(), &device, dtype, false)?;
    let mut inputs = Inputs::new(&args.inputs);
    let progress = crate::progress::spinner("classifying");
    let mut failed = false;
    let mut pending: Vec<Item> = Vec::new();
    // Decode a few batches ahead, in parallel, and never more: memory is bounded by this window.
    let window = args.batch_size * 4;
    loop {
        let mut paths = Vec::with_capacity(window);
        while paths.len() < window {
            match inputs.next() {
                Some(InputEvent::File(p)) => paths.push(p),
                Some(InputEvent::Problem(msg)) => {
                    eprintln!("error: {msg}");
                    failed = true;
                }
                Some(InputEvent::Note(msg)) => eprintln!("warning: {msg}"),
                None => break,
            }
        }
        if paths.is_empty() {
            break;
        }
        let decoded: Vec<_> = paths.par_iter().map(|p| read_input(p, &model)).collect();
        for (path, result) in paths.iter().zip(decoded) {
            match result {
                Ok(items) => {
                    for item in items {
                        pending.push(item);
                        if pending.len() == args.batch_size {
                            classify(&model, &std::mem::take(&mut pending), &args)?;
                            progress.inc(args.batch_size as u64);
                        }
                    }
                }
                Err(e) => {
                    report_bad_input(path, &e);
                    failed = true;
                }
            }
        }
    }
    if !pending.is_empty() {
        classify(&model, &pending, &args)?;
    }
    progress.finish_and_clear();
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Prints why an input failed, naming it once (decoder errors already carry the path).
fn report_bad_input(path: &Path, e: &anyhow::Error) {
    let msg = format!("{e:#}");
    let shown = path.display().to_string();
    if msg.contains(&shown) {
        eprintln!("error: {msg}");
    } else {
        eprintln!("error: {shown}: {msg}");
    }
}

/// Decodes and preprocesses an image, or reads a .npy tensor as it is (each item checked to be finite).
fn read_input(path: &Path, model: &Pretrained) -> Result<Vec<Item>> {
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        let t = model.preprocess_file(path)?;
        return Ok(vec![Item {
            input: path.to_path_buf(),
            index: 0,
            npy: false,
            tensor: t,
        }]);
    }
    let t = crate::npy::read_f32(path)?;
    let t = match t.rank() {
        3 => t.unsqueeze(0)?,
        4 => t,
        r => anyhow::bail!("a .npy input must have shape (C,H,W) or (N,C,H,W), this one has {r} dimensions"),
    };
    let expected = model.preprocess.input_size;
    let n = t.dim(0)?;
    (0..n)
        .map(|i| {
            let tensor = t.get(i)?;
            if tensor.dims()[0] != expected[0] {
                anyhow::bail!(
                    "item {i} has {} channels, the model takes {}",
                    tensor.dims()[0],
                    expected[0]
                );
            }
            resnet::finite::ensure_finite(&tensor, || format!("item {i}"))?;
            Ok(Item {
                input: path.to_path_buf(),
                index: i,
                npy: true,
                tensor,
            })
        })
        .collect()
}

/// Classifies a run of items, in batches of equal shape, and prints each result.
fn classify(model: &Pretrained, items: &[Item], args: &Args) -> Result<()> {
    let mut start = 0;
    while start < items.len() {
        let shape = items[start].tensor.dims();
        let end = start + items[start..].iter().take_while(|i| i.tensor.dims() == shape).count();
        let batch = &items[start..end];
        let tensors: Vec<Tensor> = batch.iter().map(|i| i.tensor.clone()).collect();
        let x = Tensor::stack(&tensors, 0).context("stacking a batch")?;
        let logits = model
            .logits(&x)
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
        start = end;
    }
    Ok(())
}

/// The inputs of a batch, for an error message.
fn describe(batch: &[Item]) -> String {
    let names: Vec<String> = batch.iter().take(3).map(|i| i.input.display().to_string()).collect();
    match batch.len() > 3 {
        true => format!("{} and {} more", names.join(", "), batch.len() - 3),
        false => names.join(", "),
    }
}
