//! How a checkpoint expects its input to be prepared (timm's `pretrained_cfg` vocabulary).

use serde::{Deserialize, Serialize};

/// Resampling filter used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
}

/// How the eval transform fits the image to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// Resize the short side to `size / crop_pct`, then take the centre `size` square (the usual one).
    #[default]
    Center,
    /// Resize both sides to `size / crop_pct` ignoring the aspect ratio, then centre-crop.
    Squash,
}

/// The eval-time preprocessing of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// (channels, height, width) the model sees.
    pub input_size: [usize; 3],
    /// Fraction of the resized image kept by the centre crop (0.875 = resize to 256, crop 224).
    pub crop_pct: f64,
    #[serde(default)]
    pub crop_mode: CropMode,
    pub interpolation: Interpolation,
    /// Per-channel mean and std (RGB, in 0..1 units): `x = (pixel / 255 - mean) / std`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl PreprocessConfig {
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    /// torchvision's ImageNet eval transform: resize 256 (bilinear), crop 224, ImageNet mean/std.
    pub fn imagenet() -> Self {
        Self {
            input_size: [3, 224, 224],
            crop_pct: 0.875,
            crop_mode: CropMode::Center,
            interpolation: Interpolation::Bilinear,
            mean: Self::IMAGENET_MEAN,
            std: Self::IMAGENET_STD,
        }
    }

    /// Inputs already at the model's size (CIFAR): no resize beyond fitting, crop_pct 1.
    pub fn cifar() -> Self {
        Self { input_size: [3, 32, 32], crop_pct: 1.0, ..Self::imagenet() }
    }

    /// Size the short side (or both sides, for [`CropMode::Squash`]) is resized to before cropping:
    /// `floor(size / crop_pct)`, as timm computes it.
    pub fn resize_size(&self) -> (usize, usize) {
        let f = |s: usize| (s as f64 / self.crop_pct).floor() as usize;
        (f(self.input_size[1]), f(self.input_size[2]))
    }
}
