//! `zoo preprocess`: the exact input tensor `zoo run` feeds the model, without loading its weights.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::Device;

#[derive(clap::Args)]
pub struct Args {
    /// The model whose preprocessing to apply (as for `zoo run`); only its config is read, never its weights.
    model: String,
    /// The image to preprocess.
    image: PathBuf,
    /// Where to write the float32 (C,H,W) tensor.
    #[arg(long, visible_alias = "output")]
    out: PathBuf,
    /// Weights whose metadata gives the preprocessing (as for `zoo run`).
    #[arg(long)]
    weights: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let p = crate::resolve::preprocess_for(&args.model, args.weights.as_deref())?;
    crate::files::refuse_overwriting_input(&args.image, &args.out)?;
    let t = resnet::data::preprocess_file(&args.image, &p, &Device::Cpu)
        .with_context(|| format!("cannot preprocess {}", args.image.display()))?;
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    crate::files::write_bytes(&args.out, &weights::npy::encode_f32(t.dims(), &values))?;
    crate::note!(
        "wrote {} {:?}: resize to {:?} ({:?}), crop {}x{}, mean {:?}, std {:?}",
        args.out.display(),
        t.dims(),
        p.resize_size(),
        p.interpolation,
        p.input_size[1],
        p.input_size[2],
        p.mean,
        p.std
    );
    Ok(ExitCode::SUCCESS)
}
