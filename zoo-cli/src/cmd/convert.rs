//! `zoo convert`: checkpoints from other frameworks to self-describing safetensors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use resnet::convert::{check_tensors, expected_tensors, keras, self_describing_metadata, tensor_info};
use weights::checkpoint::{self, TensorInfo};

use crate::resolve::{canonical_tensors, default_preprocess};

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
        #[arg(long)]
        out: PathBuf,
    },
    /// A PyTorch state dict (`.pth`, `.pt`, `.bin`), read without running any of its code.
    Pth {
        file: PathBuf,
        /// The architecture it holds, by name (`resnet50`, `resnet50d`, `resnet20`, ...).
        #[arg(long)]
        arch: String,
        /// Where to write the safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.format {
        Format::Keras { model_json, out } => {
            let s = keras::convert_tfjs(&model_json, &out)?;
            eprintln!(
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

fn convert_pth(file: &Path, arch: &str, out: &Path) -> Result<()> {
    let config = resnet::variants::by_name(arch)?;
    let raw = weights::pth::read_state_dict(file, &Device::Cpu)?;
    let tensors = canonical_tensors(raw, DType::F32)?;
    let infos: Vec<TensorInfo> = tensors.iter().map(|(name, t)| tensor_info(name, t)).collect();
    check_tensors(file, &expected_tensors(&config)?, &infos)?;
    // The preprocessing these weights expect, when the name is a registry entry (`resnet50.tv_in1k`).
    let preprocess = match weights::registry::find(arch) {
        Some(e) => e.preprocess(),
        None => default_preprocess(&config),
    };
    let meta = self_describing_metadata(arch, &config, &preprocess);
    checkpoint::save(out, &tensors, &meta).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {} ({arch}: {} tensors)", out.display(), tensors.len());
    Ok(())
}
