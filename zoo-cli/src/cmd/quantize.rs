//! `zoo quantize`: post-training static int8 quantization of a model, calibrated on a folder of images,
//! written as a self-describing int8 checkpoint that `zoo run F` (and every other command) loads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use resnet::layers::Calibration;
use resnet::{Pretrained, ResNet};

#[derive(clap::Args)]
pub struct Args {
    /// Registry name, Hub repo, checkpoint file, or an architecture used with --weights.
    model: String,
    /// The checkpoint, when MODEL names the architecture.
    #[arg(long)]
    weights: Option<String>,
    /// Calibration images: the first --calib-count files of this folder, sorted by name (the model's own
    /// preprocessing).
    #[arg(long, value_name = "DIR")]
    calib: PathBuf,
    /// How many calibration images to use.
    #[arg(long, default_value = "64", value_parser = |s: &str| crate::args::in_range(s, 1, 10_000))]
    calib_count: usize,
    /// How each layer's input range is chosen: minmax, percentile (99.99), percentile:P, or entropy.
    #[arg(long, default_value = "percentile", value_parser = parse_method)]
    method: String,
    /// The int8 checkpoint to write (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

fn parse_method(s: &str) -> Result<String, String> {
    Calibration::from_name(s)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("unknown calibration method {s:?}: minmax, percentile, percentile:P or entropy"))
}

/// Image files of `dir` (by extension), sorted by name, at most `max`.
pub(crate) fn calibration_images(dir: &Path, max: usize) -> Result<Vec<PathBuf>> {
    const EXT: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];
    let entries = std::fs::read_dir(dir).with_context(|| format!("calibration folder {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXT.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    files.truncate(max);
    if files.is_empty() {
        bail!(
            "calibration folder {}: no images (jpg, png, bmp, gif, tiff, webp) in it",
            dir.display()
        );
    }
    Ok(files)
}

/// `p`'s network quantized to int8, calibrated on (at most `max`) images of `dir` through `p`'s
/// preprocessing, and how many images that was.
pub fn quantize(p: &Pretrained, dir: &Path, method: &str, max: usize) -> Result<(ResNet, usize)> {
    let method = Calibration::from_name(method).context("calibration method")?;
    let images = calibration_images(dir, max)?;
    let mut batches = Vec::new();
    for chunk in images.chunks(16) {
        let xs = chunk
            .iter()
            .map(|f| {
                p.preprocess_file(f)
                    .with_context(|| format!("calibration image {}", f.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        batches.push(Tensor::stack(&xs, 0)?);
    }
    Ok((p.model.quantize_int8(&batches, method)?, images.len()))
}

pub fn run(args: Args) -> Result<ExitCode> {
    for input in [Some(args.model.as_str()), args.weights.as_deref()]
        .into_iter()
        .flatten()
    {
        if Path::new(input).is_file() {
            crate::files::refuse_overwriting_input(Path::new(input), &args.out)?;
        }
    }
    let p = crate::resolve::load_model(&args.model, args.weights.as_deref(), &Device::Cpu, DType::F32, false)?;
    let (model, images) = quantize(&p, &args.calib, &args.method, args.calib_count)?;
    let file = [args.weights.as_deref(), Some(args.model.as_str())]
        .into_iter()
        .flatten()
        .find(|s| Path::new(s).is_file());
    let arch = file
        .and_then(|f| resnet::load::inspect(f, &resnet::load::LoadOptions::default()).ok())
        .map(|i| i.arch)
        .or_else(|| resnet::variants::by_name(&args.model).ok().map(|_| args.model.clone()))
        .unwrap_or_else(|| "custom".into());
    let calibration = format!("{} over {images} image(s) of {}", args.method, args.calib.display());
    resnet::load::save_int8(
        &model,
        &arch,
        &p.preprocess,
        p.labels.as_deref(),
        &calibration,
        &args.out,
    )?;
    let on_kernel = model.conv_layers().iter().filter(|(_, c)| c.conv().is_int8()).count();
    let kernel = resnet::layers::Int8Kernel::detect();
    let convs = model.conv_layers().len();
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    if !crate::progress::quiet() {
        eprintln!(
            "{convs} convolutions quantized ({on_kernel} on the int8 kernel here, {}), calibration {calibration}; wrote {} ({:.1} MB)",
            kernel.name(),
            args.out.display(),
            size as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}
