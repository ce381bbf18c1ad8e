//! `.npy` inputs, through the validated reader of `weights::npy` (header, dtype and size checked against
//! the file before anything is allocated).

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// Reads a `.npy` file as an f32 tensor.
pub fn read_f32(path: &Path) -> Result<Tensor> {
    Ok(weights::npy::read_npy(path, &Device::Cpu)?.to_dtype(DType::F32)?)
}
