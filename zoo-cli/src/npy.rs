//! `.npy` inputs (interim: a size check before Candle's reader).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

/// Largest `.npy` input read.
const MAX_BYTES: u64 = 1 << 30;

/// Reads a `.npy` file as an f32 tensor.
pub fn read_f32(path: &Path) -> Result<Tensor> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    if meta.len() > MAX_BYTES {
        bail!("{}: {} bytes, more than the {} a .npy input may have", path.display(), meta.len(), MAX_BYTES);
    }
    let t = Tensor::read_npy(path).with_context(|| "not a readable .npy file")?;
    Ok(t.to_dtype(DType::F32)?)
}
