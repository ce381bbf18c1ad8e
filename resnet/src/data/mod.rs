//! Input preparation for inference, pixel for pixel what timm/torchvision compute on PIL images.
//!
//! `preprocess_file` = [`load_image`] (decode + PIL's `convert("RGB")`) then [`eval_transform`] (resize with
//! PIL's resampling, centre crop, normalize). Several inputs make one batch with [`batch`].
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use candle_core::Device;
//! let cfg = weights::PreprocessConfig::imagenet();
//! let a = resnet::data::preprocess_file("cat.jpg".as_ref(), &cfg, &Device::Cpu)?; // (3, 224, 224)
//! let b = resnet::data::preprocess_file("dog.png".as_ref(), &cfg, &Device::Cpu)?;
//! let input = resnet::data::batch(&[a, b])?; // (2, 3, 224, 224)
//! # Ok(()) }
//! ```
//!
//! One concept per file: [`decode`] (files to RGB), `jpeg` (libjpeg-turbo's decoder), `convert` (PIL's pixel
//! format rules), [`mod@resize`] (PIL's resampling), [`transform`] (timm's eval geometry and normalization),
//! [`error`].

mod convert;
pub mod decode;
pub mod error;
mod jpeg;
pub mod resize;
pub mod transform;
pub mod walk;

use std::path::Path;

use candle_core::{Device, Tensor};
use weights::PreprocessConfig;

pub use decode::{decode_image, decode_image_with, load_image, load_image_with, ImageLimits};
pub use error::DataError;
pub use resize::resize;
pub use transform::{batch, center_crop, eval_transform, resize_and_crop, resized_size, to_normalized_tensor};

/// Loads an image file and applies the checkpoint's eval transform: a (3, H, W) f32 tensor on `device`.
pub fn preprocess_file(path: &Path, cfg: &PreprocessConfig, device: &Device) -> Result<Tensor, DataError> {
    let img = load_image(path)?;
    Ok(eval_transform(&img, cfg, device)?)
}
