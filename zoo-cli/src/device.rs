//! `--device` and `--dtype` flags.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// Parses `auto`, `cpu`, `cuda`, `cuda:N` or `metal`. `auto` picks CUDA, then Metal, then the CPU.
pub fn parse_device(spec: &str) -> Result<Device> {
    Ok(match spec {
        "cpu" => Device::Cpu,
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0)?
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0)?
            } else {
                Device::Cpu
            }
        }
        "metal" => Device::new_metal(0).context(match cfg!(feature = "metal") {
            true => "Metal is not available on this machine",
            false => "Metal is not available: build zoo with `--features metal`",
        })?,
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().with_context(|| format!("bad CUDA device number in `{s}`"))?,
                None => 0,
            };
            Device::new_cuda(ordinal).with_context(|| match cfg!(feature = "cuda") {
                true => format!("CUDA device {ordinal} is not available (no such GPU, or no working NVIDIA driver)"),
                false => format!("CUDA device {ordinal} is not available: build zoo with `--features cuda`"),
            })?
        }
        other => bail!("unknown device `{other}`: use auto, cpu, cuda, cuda:N or metal"),
    })
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    Ok(match spec {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("unknown dtype `{other}`: use f32, f16 or bf16"),
    })
}
