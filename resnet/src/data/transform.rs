//! timm's eval transform (`transforms_imagenet_eval`) on an RGB image: resize, centre crop, to tensor, normalize.
//!
//! The geometry follows the Python code to the last rounding:
//! - square input, [`CropMode::Center`]: torchvision's `Resize(int)`: the short side becomes `floor(size /
//!   crop_pct)` and the long side `int(new_short * long / short)` (a truncated float division);
//! - non-square input, [`CropMode::Center`]: timm's `ResizeKeepRatio`: both sides divided by
//!   `min(h / target_h, w / target_w)` and rounded half to even (Python's `round`);
//! - [`CropMode::Squash`]: both sides resized to [`PreprocessConfig::resize_size`], ignoring the aspect ratio;
//! - then torchvision's `CenterCrop`: offsets `int(round((size - crop) / 2.0))`, zero padding first when the
//!   image is smaller than the crop (crop_pct > 1);
//! - `ToTensor` (`pixel / 255` in f32) and `Normalize` (`(x - mean) / std` in f32).

use candle_core::{Device, Result, Tensor};
use image::RgbImage;
use weights::{CropMode, PreprocessConfig};

use super::resize::resize;

/// The full eval transform: `img` to a normalized f32 tensor of shape (3, H, W) on `device`.
pub fn eval_transform(img: &RgbImage, cfg: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    if cfg.input_size[0] != 3 {
        candle_core::bail!(
            "eval_transform makes RGB inputs, but the config asks for {} channels",
            cfg.input_size[0]
        );
    }
    to_normalized_tensor(&resize_and_crop(img, cfg), cfg.mean, cfg.std, device)
}

/// The geometric part of [`eval_transform`]: the 8-bit image the model's input is computed from.
pub fn resize_and_crop(img: &RgbImage, cfg: &PreprocessConfig) -> RgbImage {
    let (width, height) = resized_size(img.width(), img.height(), cfg);
    let resized = resize(img, width, height, cfg.interpolation);
    center_crop(&resized, cfg.input_size[2] as u32, cfg.input_size[1] as u32)
}

/// (width, height) the image is resized to before cropping. Never zero.
pub fn resized_size(width: u32, height: u32, cfg: &PreprocessConfig) -> (u32, u32) {
    let (target_h, target_w) = cfg.resize_size();
    let (w, h) = match cfg.crop_mode {
        CropMode::Squash => (target_w as u32, target_h as u32),
        CropMode::Center if target_h == target_w => shortest_edge(width, height, target_h as u32),
        CropMode::Center => keep_ratio(width, height, target_w as u32, target_h as u32),
    };
    (w.max(1), h.max(1))
}

/// torchvision `Resize(size)` with an int: short side to `size`, long side `int(size * long / short)`.
fn shortest_edge(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(requested_new_short * long / short): an exact integer product, one rounded division, truncation.
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// timm `ResizeKeepRatio(longest=0)`: scale so the image covers the target, rounding half to even.
fn keep_ratio(width: u32, height: u32, target_w: u32, target_h: u32) -> (u32, u32) {
    let ratio = (height as f64 / target_h as f64).min(width as f64 / target_w as f64);
    let side = |x: u32| (x as f64 / ratio).round_ties_even() as u32;
    (side(width), side(height))
}

/// torchvision `CenterCrop((crop_h, crop_w))`, including its zero padding when the image is too small.
pub fn center_crop(img: &RgbImage, crop_w: u32, crop_h: u32) -> RgbImage {
    let padded;
    let img = if crop_w > img.width() || crop_h > img.height() {
        padded = pad_to_cover(img, crop_w, crop_h);
        &padded
    } else {
        img
    };
    let left = crop_offset(img.width(), crop_w);
    let top = crop_offset(img.height(), crop_h);
    image::imageops::crop_imm(img, left, top, crop_w, crop_h).to_image()
}

/// `int(round((size - crop) / 2.0))`: Python rounds halves to even, so an odd margin of 3 gives 2, of 5 gives 2.
fn crop_offset(size: u32, crop: u32) -> u32 {
    (size.saturating_sub(crop) as f64 / 2.0).round_ties_even() as u32
}

/// Pads with black so both sides reach the crop: `floor(d / 2)` before, `ceil(d / 2)` after (torchvision's split).
fn pad_to_cover(img: &RgbImage, crop_w: u32, crop_h: u32) -> RgbImage {
    let extra_w = crop_w.saturating_sub(img.width());
    let extra_h = crop_h.saturating_sub(img.height());
    let mut out = RgbImage::new(img.width() + extra_w, img.height() + extra_h);
    image::imageops::replace(&mut out, img, (extra_w / 2) as i64, (extra_h / 2) as i64);
    out
}

/// `ToTensor` then `Normalize`: `(pixel / 255 - mean) / std` per channel, in f32 like torchvision, as (3, H, W).
pub fn to_normalized_tensor(img: &RgbImage, mean: [f32; 3], std: [f32; 3], device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (c, plane) in data.chunks_exact_mut(h * w).enumerate() {
        for (dst, px) in plane.iter_mut().zip(img.pixels()) {
            *dst = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Tensor::from_vec(data, (3, h, w), device)
}

/// Stacks (3, H, W) inputs into one (N, 3, H, W) batch; they must share a shape.
pub fn batch(inputs: &[Tensor]) -> Result<Tensor> {
    if inputs.is_empty() {
        candle_core::bail!("cannot batch zero inputs");
    }
    Tensor::stack(inputs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_half_to_even() {
        assert_eq!([1, 3, 5, 7, 4].map(|m| crop_offset(100 + m, 100)), [0, 2, 2, 4, 2]);
    }

    #[test]
    fn shortest_edge_truncates_like_torchvision() {
        // int(182 * 640 / 427) = int(272.79...) = 272
        assert_eq!(shortest_edge(640, 427, 182), (272, 182));
        assert_eq!(shortest_edge(300, 451, 256), (256, 384));
        assert_eq!(shortest_edge(50, 50, 7), (7, 7));
    }

    #[test]
    fn padding_splits_like_torchvision() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([9, 9, 9]));
        let out = center_crop(&img, 6, 5); // pad 1 left, 2 right, 1 top, 2 bottom
        assert_eq!(out.dimensions(), (6, 5));
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(3, 2).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(4, 2).0, [0, 0, 0]);
    }
}
