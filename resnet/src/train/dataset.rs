//! Image folders (one sub-directory per class), train-time augmentation and the eval transform.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::imageops;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use weights::PreprocessConfig;

use super::{Result, TrainError};

/// File extensions read as images.
pub use crate::data::walk::IMAGE_EXTENSIONS;

/// One image of a folder and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Its class index.
    pub label: usize,
}

/// torchvision's `ImageFolder`: `root/<class>/<image>`, classes sorted by name.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    classes: Vec<String>,
    samples: Vec<Sample>,
    warnings: Vec<String>,
}

impl ImageFolder {
    /// Reads `root/<class>/...`: each sub-directory is a class (sorted by name), its images found by the
    /// guarded walker ([`crate::data::walk`], recursively, links followed once, special files skipped).
    /// A class directory that cannot be read completely is an error; skipped links and special files are
    /// listed in [`ImageFolder::warnings`].
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let io = |path: &Path, source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| io(root, e))? {
            let entry = entry.map_err(|e| io(root, e))?;
            if entry.path().is_dir() {
                dirs.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
            }
        }
        dirs.sort();
        let mut samples = Vec::new();
        let mut warnings = Vec::new();
        for (label, (_, dir)) in dirs.iter().enumerate() {
            for item in crate::data::walk::walk(dir) {
                match item {
                    Ok(path) => samples.push(Sample { path, label }),
                    Err(w) if w.input_missing() => {
                        return Err(TrainError::Data(format!("image folder incomplete: {w}")))
                    }
                    Err(w) => warnings.push(w.to_string()),
                }
            }
        }
        let classes: Vec<String> = dirs.into_iter().map(|(name, _)| name).collect();
        if classes.len() < 2 {
            return Err(TrainError::Data(format!(
                "{}: an image folder needs at least two class sub-directories, found {}",
                root.display(),
                classes.len()
            )));
        }
        for (label, class) in classes.iter().enumerate() {
            if !samples.iter().any(|s| s.label == label) {
                return Err(TrainError::Data(format!(
                    "{}: class `{class}` has no images",
                    root.display()
                )));
            }
        }
        Ok(Self {
            classes,
            samples,
            warnings,
        })
    }

    /// A folder from explicit samples (labels index `classes`).
    pub fn from_samples(classes: Vec<String>, samples: Vec<Sample>) -> Self {
        Self {
            classes,
            samples,
            warnings: Vec::new(),
        }
    }

    /// What [`ImageFolder::open`] skipped (a second link to a directory, a FIFO named like an image).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Class names, sorted (index = label).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Every image with its label.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Splits off `fraction` of every class (at least one image of each class with two or more, when
    /// `fraction > 0`) as a validation set, shuffled by `seed`. Returns `(train, val)`.
    pub fn split(&self, fraction: f64, seed: u64) -> (ImageFolder, ImageFolder) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5b1e);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for label in 0..self.classes.len() {
            let mut of_class: Vec<&Sample> = self.samples.iter().filter(|s| s.label == label).collect();
            of_class.shuffle(&mut rng);
            let mut n_val = (of_class.len() as f64 * fraction).round() as usize;
            if fraction > 0.0 && n_val == 0 && of_class.len() >= 2 {
                n_val = 1;
            }
            n_val = n_val.min(of_class.len().saturating_sub(1));
            for (i, s) in of_class.into_iter().enumerate() {
                if i < n_val {
                    val.push(s.clone())
                } else {
                    train.push(s.clone())
                }
            }
        }
        (
            Self::from_samples(self.classes.clone(), train),
            Self::from_samples(self.classes.clone(), val),
        )
    }
}

/// Decodes an image file to RGB exactly as `zoo run` does ([`crate::data::load_image`], PIL's rules).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    crate::data::load_image(path).map_err(|e| TrainError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Train-time augmentation: torchvision's `RandomResizedCrop` and `RandomHorizontalFlip`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image (torchvision: 0.08..1).
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio, width / height (torchvision: 3/4..4/3).
    pub ratio: (f64, f64),
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: true,
        }
    }
}

impl Augment {
    /// No augmentation: the eval transform.
    pub fn none() -> Option<Self> {
        None
    }

    /// torchvision's `RandomResizedCrop.get_params`: (x, y, w, h) of the crop.
    pub fn crop_box(&self, width: u32, height: u32, rng: &mut impl Rng) -> (u32, u32, u32, u32) {
        let (w0, h0) = (width as f64, height as f64);
        let area = w0 * h0;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale.0..=self.scale.1);
            let aspect = rng.random_range(lr0..=lr1).exp();
            let w = (target * aspect).sqrt().round() as u32;
            let h = (target / aspect).sqrt().round() as u32;
            if w > 0 && h > 0 && w <= width && h <= height {
                let x = rng.random_range(0..=width - w);
                let y = rng.random_range(0..=height - h);
                return (x, y, w, h);
            }
        }
        // Fallback: the centre crop with the aspect ratio clamped into range.
        let in_ratio = w0 / h0;
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, ((w0 / self.ratio.0).round() as u32).min(height))
        } else if in_ratio > self.ratio.1 {
            (((h0 * self.ratio.1).round() as u32).min(width), height)
        } else {
            (width, height)
        };
        ((width - w) / 2, (height - h) / 2, w, h)
    }
}

/// The eval transform's geometry (resize, centre crop): [`crate::data::resize_and_crop`], the same code
/// `zoo run` uses, so training, validation and inference see identically prepared images.
pub fn eval_image(img: &RgbImage, pre: &PreprocessConfig) -> RgbImage {
    crate::data::resize_and_crop(img, pre)
}

/// A random resized crop, maybe flipped, at the model's input size.
pub fn train_image(img: &RgbImage, pre: &PreprocessConfig, aug: &Augment, rng: &mut impl Rng) -> RgbImage {
    let (th, tw) = (pre.input_size[1] as u32, pre.input_size[2] as u32);
    let (x, y, w, h) = aug.crop_box(img.width(), img.height(), rng);
    let crop = imageops::crop_imm(img, x, y, w, h).to_image();
    let mut out = crate::data::resize(&crop, tw, th, pre.interpolation);
    if aug.hflip && rng.random_bool(0.5) {
        imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// Appends `img` as normalised CHW floats: `(pixel / 255 - mean) / std`.
fn push_chw(out: &mut Vec<f32>, img: &RgbImage, pre: &PreprocessConfig) {
    let (w, h) = img.dimensions();
    let raw = img.as_raw();
    for c in 0..3 {
        let (m, s) = (pre.mean[c], pre.std[c]);
        for i in 0..(w * h) as usize {
            out.push((raw[3 * i + c] as f32 / 255.0 - m) / s);
        }
    }
}

/// One image as a normalised (3, H, W) tensor.
pub fn to_tensor(img: &RgbImage, pre: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    let mut v = Vec::with_capacity(3 * img.width() as usize * img.height() as usize);
    push_chw(&mut v, img, pre);
    Ok(Tensor::from_vec(
        v,
        (3, img.height() as usize, img.width() as usize),
        device,
    )?)
}

/// A folder decoded into memory, ready to batch.
///
/// Training images are kept downscaled to at most twice the resize size on their short side (plenty for
/// random resized crops at the input size, and it bounds memory); validation images are kept already
/// eval-transformed.
pub struct Dataset {
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// The eval transform (and input size) the images are prepared for.
    pub preprocess: PreprocessConfig,
    images: Vec<RgbImage>,
    labels: Vec<u32>,
    /// Whether `images` already went through the eval transform (a validation set).
    transformed: bool,
}

impl Dataset {
    /// Decodes every image of `folder`. `for_training` keeps them for augmentation, otherwise they are
    /// stored eval-transformed.
    pub fn load(folder: &ImageFolder, preprocess: &PreprocessConfig, for_training: bool) -> Result<Self> {
        let (rh, rw) = preprocess.resize_size();
        let cap = 2 * rh.max(rw) as u32;
        let mut images = Vec::with_capacity(folder.len());
        for s in folder.samples() {
            let img = load_rgb(&s.path)?;
            let img = if for_training {
                let short = img.width().min(img.height());
                if short > cap {
                    let k = cap as f64 / short as f64;
                    let (w, h) = (
                        (img.width() as f64 * k).round() as u32,
                        (img.height() as f64 * k).round() as u32,
                    );
                    crate::data::resize(&img, w.max(1), h.max(1), weights::Interpolation::Bilinear)
                } else {
                    img
                }
            } else {
                eval_image(&img, preprocess)
            };
            images.push(img);
        }
        Ok(Self {
            classes: folder.classes().to_vec(),
            preprocess: preprocess.clone(),
            images,
            labels: folder.samples().iter().map(|s| s.label as u32).collect(),
            transformed: !for_training,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The class index of each image.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Images `indices` as an (N, 3, H, W) batch and their labels (N,) u32. With `augment`, each image is
    /// a fresh random resized crop (and maybe flip); without, the stored image goes through the eval
    /// transform (a no-op for a validation set, whose images are stored transformed; a training image goes
    /// through it whatever its size, exactly as `zoo run` would prepare it).
    pub fn batch(
        &self,
        indices: &[usize],
        augment: Option<&Augment>,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let pre = &self.preprocess;
        let (h, w) = (pre.input_size[1], pre.input_size[2]);
        let mut data = Vec::with_capacity(indices.len() * 3 * h * w);
        for &i in indices {
            let img = &self.images[i];
            let img = match augment {
                Some(aug) => train_image(img, pre, aug, rng),
                None if self.transformed => img.clone(),
                None => eval_image(img, pre),
            };
            push_chw(&mut data, &img, pre);
        }
        let x = Tensor::from_vec(data, (indices.len(), 3, h, w), device)?;
        let y = Tensor::from_vec(
            indices.iter().map(|&i| self.labels[i]).collect::<Vec<u32>>(),
            indices.len(),
            device,
        )?;
        Ok((x, y))
    }
}
