//! How a checkpoint expects its input to be prepared (timm's `pretrained_cfg` vocabulary).

use serde::{Deserialize, Serialize};

/// Resampling filter used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// PIL's `NEAREST`.
    Nearest,
    /// PIL's `BILINEAR` (antialiased when shrinking).
    Bilinear,
    /// PIL's `BICUBIC` (antialiased when shrinking).
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
    /// ImageNet's per-channel mean (RGB, 0..1).
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    /// ImageNet's per-channel standard deviation (RGB, 0..1).
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
        Self {
            input_size: [3, 32, 32],
            crop_pct: 1.0,
            ..Self::imagenet()
        }
    }

    /// Largest side, in pixels, of the model input and of the image it is cropped from: a config read from a
    /// downloaded file must not make the resize allocate without bound.
    pub const MAX_SIDE: usize = 8192;

    /// Checks that the config describes a usable transform: 1 to 4 channels, sides of 1 to [`Self::MAX_SIDE`]
    /// pixels before and after the crop, a positive finite `crop_pct`, finite means and positive finite
    /// standard deviations.
    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.input_size;
        if !(1..=4).contains(&c) || !(1..=Self::MAX_SIDE).contains(&h) || !(1..=Self::MAX_SIDE).contains(&w) {
            return Err(format!(
                "input size {:?} must be [channels 1-4, height, width] with sides of 1 to {} pixels",
                self.input_size,
                Self::MAX_SIDE
            ));
        }
        if !(self.crop_pct.is_finite() && self.crop_pct > 0.0) {
            return Err(format!("crop_pct must be a positive number, got {}", self.crop_pct));
        }
        let (rh, rw) = ((h as f64 / self.crop_pct).floor(), (w as f64 / self.crop_pct).floor());
        if !(rh >= 1.0 && rw >= 1.0 && rh <= Self::MAX_SIDE as f64 && rw <= Self::MAX_SIDE as f64) {
            return Err(format!(
                "crop_pct {} resizes to {rh}x{rw} before the crop; sides must be 1 to {} pixels",
                self.crop_pct,
                Self::MAX_SIDE
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("mean {:?} must be finite", self.mean));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "std {:?} must be positive and finite (normalizing divides by it)",
                self.std
            ));
        }
        Ok(())
    }

    /// Size the short side (or both sides, for [`CropMode::Squash`]) is resized to before cropping:
    /// `floor(size / crop_pct)`, as timm computes it.
    pub fn resize_size(&self) -> (usize, usize) {
        let f = |s: usize| (s as f64 / self.crop_pct).floor() as usize;
        (f(self.input_size[1]), f(self.input_size[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_what_would_divide_by_zero_or_allocate_without_bound() {
        assert!(PreprocessConfig::imagenet().validate().is_ok());
        assert!(PreprocessConfig::cifar().validate().is_ok());
        let bad = [
            PreprocessConfig {
                std: [0.2, 0.0, 0.2],
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                std: [0.2, f32::NAN, 0.2],
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                mean: [f32::INFINITY, 0.0, 0.0],
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                crop_pct: 0.0,
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                crop_pct: 1e-9,
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                input_size: [3, 100_000, 224],
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                input_size: [3, 0, 224],
                ..PreprocessConfig::imagenet()
            },
            PreprocessConfig {
                input_size: [0, 224, 224],
                ..PreprocessConfig::imagenet()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }
}
