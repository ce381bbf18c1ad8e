//! Small classification tasks for the plain-vs-residual training runs.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use weights::PreprocessConfig;

use crate::train::dataset::load_rgb;
use crate::train::{Result, TrainError};

/// Inputs (N, 3, S, S), normalised, and their u32 labels; a held-out test split.
#[derive(Debug, Clone)]
pub struct Task {
    /// What the task is, for reports.
    pub description: String,
    /// Class names.
    pub classes: Vec<String>,
    /// Training inputs (N, 3, S, S).
    pub x_train: Tensor,
    /// Training labels (N,) u32.
    pub y_train: Tensor,
    /// Held-out inputs.
    pub x_test: Tensor,
    /// Held-out labels.
    pub y_test: Tensor,
}

fn push_chw(out: &mut Vec<f32>, img: &RgbImage) {
    let pre = PreprocessConfig::cifar();
    let raw = img.as_raw();
    let n = (img.width() * img.height()) as usize;
    for c in 0..3 {
        for i in 0..n {
            out.push((raw[3 * i + c] as f32 / 255.0 - pre.mean[c]) / pre.std[c]);
        }
    }
}

fn random_crop(img: &RgbImage, x0: u32, x1: u32, size: u32, rng: &mut impl Rng) -> RgbImage {
    let (region_w, h) = (x1 - x0, img.height());
    let max_side = region_w.min(h);
    let side = ((max_side as f64 * rng.random_range(0.15..0.45)).round() as u32).clamp(size.min(max_side), max_side);
    let x = x0 + rng.random_range(0..=region_w - side);
    let y = rng.random_range(0..=h - side);
    let crop = imageops::crop_imm(img, x, y, side, side).to_image();
    let mut out = imageops::resize(&crop, size, size, FilterType::Triangle);
    if rng.random_bool(0.5) {
        imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// "Which photo is this crop from?": one class per photo. Training crops come from the left 70% of each
/// photo and test crops from the right 30%, so the test set is made of unseen pixels. Crops are squares of
/// 15-45% of the photo's height, resized to `size` x `size`, flipped half the time.
pub fn photo_task(
    photos: &[PathBuf],
    size: usize,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
    device: &Device,
) -> Result<Task> {
    if photos.len() < 2 {
        return Err(TrainError::Data("a photo task needs at least two photos".into()));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xc0ffee);
    let s = size as u32;
    let (mut xtr, mut ytr, mut xte, mut yte) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut classes = Vec::new();
    for (label, path) in photos.iter().enumerate() {
        let img = load_rgb(path)?;
        let split = img.width() * 7 / 10;
        for _ in 0..train_per_class {
            push_chw(&mut xtr, &random_crop(&img, 0, split, s, &mut rng));
            ytr.push(label as u32);
        }
        for _ in 0..test_per_class {
            push_chw(&mut xte, &random_crop(&img, split, img.width(), s, &mut rng));
            yte.push(label as u32);
        }
        classes.push(
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    let (ntr, nte) = (ytr.len(), yte.len());
    Ok(Task {
        description: format!(
            "which of {} photos ({}) a {size}x{size} crop comes from; {ntr} training crops (left 70%), {nte} held-out (right 30%)",
            classes.len(),
            classes.join(", ")
        ),
        classes,
        x_train: Tensor::from_vec(xtr, (ntr, 3, size, size), device)?,
        y_train: Tensor::from_vec(ytr, ntr, device)?,
        x_test: Tensor::from_vec(xte, (nte, 3, size, size), device)?,
        y_test: Tensor::from_vec(yte, nte, device)?,
    })
}

/// A synthetic stand-in when no photos are at hand: `classes` orientations of a noisy sinusoidal grating
/// (random phase, frequency and colour), `size` x `size`.
pub fn synthetic_task(
    classes: usize,
    train_per_class: usize,
    test_per_class: usize,
    size: usize,
    seed: u64,
    device: &Device,
) -> Result<Task> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5a5a);
    let mut make = |count: usize, xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
        for c in 0..classes {
            for _ in 0..count {
                let theta = std::f32::consts::PI * (c as f32 + rng.random_range(-0.25..0.25)) / classes as f32;
                let freq = rng.random_range(0.4..0.9);
                let phase = rng.random_range(0.0..std::f32::consts::TAU);
                let colour: [f32; 3] = [
                    rng.random_range(0.3..1.0),
                    rng.random_range(0.3..1.0),
                    rng.random_range(0.3..1.0),
                ];
                for ch in colour {
                    for i in 0..size {
                        for j in 0..size {
                            let t = (i as f32 * theta.sin() + j as f32 * theta.cos()) * freq + phase;
                            xs.push(ch * t.sin() + rng.random_range(-0.8..0.8));
                        }
                    }
                }
                ys.push(c as u32);
            }
        }
    };
    let (mut xtr, mut ytr, mut xte, mut yte) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    make(train_per_class, &mut xtr, &mut ytr);
    make(test_per_class, &mut xte, &mut yte);
    let (ntr, nte) = (ytr.len(), yte.len());
    Ok(Task {
        description: format!(
            "synthetic: {classes} grating orientations in noise, {size}x{size}; {ntr} training, {nte} held-out"
        ),
        classes: (0..classes).map(|c| format!("orientation{c}")).collect(),
        x_train: Tensor::from_vec(xtr, (ntr, 3, size, size), device)?,
        y_train: Tensor::from_vec(ytr, ntr, device)?,
        x_test: Tensor::from_vec(xte, (nte, 3, size, size), device)?,
        y_test: Tensor::from_vec(yte, nte, device)?,
    })
}
