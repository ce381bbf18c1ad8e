//! Finite-value checks: a NaN or an infinity in weights, inputs or outputs is an error, never a printed
//! `NaN%`.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::error::{Error, Result};

/// How many values of `t` are NaN or infinite (0 for integer tensors).
///
/// An f32 tensor on the CPU is scanned in place; other float types and devices are converted to f32 on the
/// CPU first.
pub fn count_non_finite(t: &Tensor) -> Result<usize> {
    if !t.dtype().is_float() {
        return Ok(0);
    }
    let t = match (t.device(), t.dtype()) {
        (Device::Cpu, DType::F32) => t.contiguous()?,
        _ => t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?,
    };
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(Error::Candle(candle_core::Error::Msg(
            "finite check: expected contiguous f32 CPU storage".into(),
        )));
    };
    Ok(data[start..end].iter().filter(|v| !v.is_finite()).count())
}

/// `Ok(())` when every value of `t` is finite, else [`Error::NonFinite`] naming it as `what`.
pub fn ensure_finite(t: &Tensor, what: impl FnOnce() -> String) -> Result<()> {
    match count_non_finite(t)? {
        0 => Ok(()),
        count => Err(Error::NonFinite { what: what(), count }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nan_and_infinities_of_any_float_type() -> Result<()> {
        let t = Tensor::new(&[1f32, f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0], &Device::Cpu)?;
        assert_eq!(count_non_finite(&t)?, 3);
        assert_eq!(count_non_finite(&t.to_dtype(DType::F16)?)?, 3);
        assert_eq!(count_non_finite(&t.narrow(0, 3, 2)?)?, 1);
        assert_eq!(count_non_finite(&Tensor::new(&[1u32, 2], &Device::Cpu)?)?, 0);
        let err = ensure_finite(&t, || "logits of cat.png".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("logits of cat.png") && err.contains('3'), "{err}");
        Ok(())
    }
}
