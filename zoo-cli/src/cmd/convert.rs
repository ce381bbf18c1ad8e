//! `zoo convert`: checkpoints from other frameworks to self-describing safetensors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::Device;
use resnet::convert::keras;
use resnet::load::{write_metadata, LoadOptions};
use weights::checkpoint;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    format: Format,
}

#[derive(clap::Subcommand)]
enum Format {
    /// A Keras ResNet saved in TF.js layers format (`model.json` + binary shards).
    Keras {
        /// The model's `model.json`; the shards are read from the same directory.
        model_json: PathBuf,
        /// Where to write the safetensors file.
        #[arg(long, visible_alias = "output")]
        out: PathBuf,
    },
    /// A PyTorch state dict (`.pth`, `.pt`, `.bin`), read without running any of its code.
    Pth {
        file: PathBuf,
        /// The architecture it holds, by name (`resnet50`, `resnet50d`, `resnet20`, ...).
        #[arg(long)]
        arch: String,
        /// Where to write the safetensors file.
        #[arg(long, visible_alias = "output")]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.format {
        Format::Keras { model_json, out } => {
            crate::files::refuse_overwriting_input(&model_json, &out)?;
            let s = keras::convert_tfjs(&model_json, &out)?;
            crate::note!(
                "wrote {} ({}: {} tensors, {} values; {} conv biases folded into BatchNorm)",
                s.out.display(),
                s.arch,
                s.num_tensors,
                s.num_values,
                s.folded_biases
            );
        }
        Format::Pth { file, arch, out } => convert_pth(&file, &arch, &out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A PyTorch state dict through the library's loader (names mapped, every tensor checked against `arch`),
/// written self-describing. The preprocessing is the registry's when `arch` names a pretrained tag
/// (`resnet50.tv_in1k`), else the architecture's default: a bare `resnet50` says nothing about how the
/// weights were trained.
fn convert_pth(file: &Path, arch: &str, out: &Path) -> Result<()> {
    crate::files::refuse_overwriting_input(file, out)?;
    let opts = LoadOptions::arch(arch);
    let (tensors, info) = resnet::load::load_tensors(file, &opts, &Device::Cpu)?;
    let preprocess = match weights::registry::find(arch).filter(|e| e.name == arch) {
        Some(e) => e.preprocess(),
        None => info.preprocess_or_default(),
    };
    let name = arch.split_once('.').map_or(arch, |(a, _)| a);
    let meta = write_metadata(name, &info.config, &preprocess, info.labels.as_deref());
    checkpoint::save(out, &tensors, &meta).with_context(|| format!("writing {}", out.display()))?;
    crate::note!("wrote {} ({arch}: {} tensors)", out.display(), tensors.len());
    Ok(())
}
