//! `zoo run`: classify images or preprocessed tensors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use serde_json::json;

use crate::device::{parse_device, parse_dtype};
use crate::resolve::LoadedModel;

/// Image file extensions picked up when an input is a directory.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

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
    /// How many classes to show per input.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
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
    tensor: Tensor,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let loaded = crate::resolve::load_model(&args.model, args.weights.as_deref(), &device, dtype, false)?;
    let (files, mut failed) = expand_inputs(&args.inputs);
    let progress = crate::progress::bar(files.len() as u64, "classifying");
    let mut items = Vec::new();
    for chunk in files.chunks(args.batch_size.max(1) * 4) {
        let decoded: Vec<_> = chunk.par_iter().map(|p| (p, read_input(p, &loaded))).collect();
        for (path, result) in decoded {
            match result {
                Ok(mut v) => items.append(&mut v),
                Err(e) => {
                    report_bad_input(path, &e);
                    failed = true;
                }
            }
        }
    }
    for batch in items.chunks(args.batch_size.max(1)) {
        classify(&loaded, batch, &args, &device, dtype)?;
        progress.inc(batch.len() as u64);
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

/// Files to read, in order; directories expanded. Reports missing paths and empty directories.
fn expand_inputs(inputs: &[PathBuf]) -> (Vec<PathBuf>, bool) {
    let mut files = Vec::new();
    let mut failed = false;
    for input in inputs {
        if input.is_dir() {
            let before = files.len();
            walk(input, &mut files);
            if files.len() == before {
                eprintln!("error: {}: the directory contains no images ({})", input.display(), IMAGE_EXTENSIONS.join(", "));
                failed = true;
            }
        } else if input.exists() {
            files.push(input.clone());
        } else {
            eprintln!("error: {}: no such file or directory", input.display());
            failed = true;
        }
    }
    (files, failed)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else if has_image_extension(&p) {
            out.push(p);
        }
    }
}

fn has_image_extension(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Decodes and preprocesses an image, or reads a .npy tensor as it is.
fn read_input(path: &Path, loaded: &LoadedModel) -> Result<Vec<Item>> {
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        let t = resnet::data::preprocess_file(path, &loaded.preprocess, &Device::Cpu)?;
        return Ok(vec![Item { input: path.to_path_buf(), index: 0, tensor: t }]);
    }
    let t = Tensor::read_npy(path).with_context(|| "not a readable .npy file")?;
    let t = match t.rank() {
        3 => t.unsqueeze(0)?,
        4 => t,
        r => anyhow::bail!("a .npy input must have shape (C,H,W) or (N,C,H,W), this one has {r} dimensions"),
    };
    let t = t.to_dtype(DType::F32)?;
    let n = t.dim(0)?;
    (0..n).map(|i| Ok(Item { input: path.to_path_buf(), index: i, tensor: t.get(i)? })).collect()
}

fn classify(loaded: &LoadedModel, batch: &[Item], args: &Args, device: &Device, dtype: DType) -> Result<()> {
    let tensors: Vec<Tensor> = batch.iter().map(|i| i.tensor.clone()).collect();
    let x = Tensor::stack(&tensors, 0).context("inputs in one batch have different shapes")?;
    let logits = loaded.model.forward(&x.to_device(device)?.to_dtype(dtype)?)?.to_dtype(DType::F32)?;
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
    let logits = logits.to_vec2::<f32>()?;
    for ((item, p), l) in batch.iter().zip(&probs).zip(&logits) {
        let top = top_k(p, args.top);
        if args.json {
            let top: Vec<_> = top.iter().map(|&c| json!({"class": c, "label": loaded.labels[c], "prob": p[c]})).collect();
            println!("{}", json!({"input": item.input.display().to_string(), "index": item.index, "top": top, "logits": l}));
        } else {
            print_table(item, &top, p, &loaded.labels);
        }
    }
    Ok(())
}

fn top_k(probs: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx.truncate(k);
    idx
}

fn print_table(item: &Item, top: &[usize], probs: &[f32], labels: &[String]) {
    let suffix = if item.index > 0 || item.input.extension().is_some_and(|e| e == "npy") { format!(" [{}]", item.index) } else { String::new() };
    println!("{}{suffix}", item.input.display());
    for &c in top {
        println!("  {:>6.2}%  {c:>4}  {}", 100.0 * probs[c], labels[c]);
    }
}
