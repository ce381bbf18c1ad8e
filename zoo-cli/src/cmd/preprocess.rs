//! `zoo preprocess`: the exact input tensor `zoo run` feeds the model.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

#[derive(clap::Args)]
pub struct Args {
    /// The model whose preprocessing to apply (as for `zoo run`).
    model: String,
    /// The image to preprocess.
    image: PathBuf,
    /// Where to write the float32 (C,H,W) tensor.
    #[arg(long)]
    out: PathBuf,
    /// Weights whose metadata gives the preprocessing (as for `zoo run`).
    #[arg(long)]
    weights: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = crate::resolve::load_model(&args.model, args.weights.as_deref(), &Device::Cpu, DType::F32, false)?;
    let t = resnet::data::preprocess_file(&args.image, &loaded.preprocess, &Device::Cpu)
        .with_context(|| format!("cannot preprocess {}", args.image.display()))?;
    t.write_npy(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    let p = &loaded.preprocess;
    eprintln!(
        "wrote {} {:?}: resize to {:?} ({:?}), crop {}x{}, mean {:?}, std {:?}",
        args.out.display(), t.dims(), p.resize_size(), p.interpolation, p.input_size[1], p.input_size[2], p.mean, p.std
    );
    Ok(ExitCode::SUCCESS)
}
