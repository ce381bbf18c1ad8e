//! CLIP's ResNets (Radford et al., 2021) on Candle: image and text embeddings, and zero-shot classification
//! with any labels, numerically matching OpenCLIP.
//!
//! A [`Clip`] model is a ResNet image tower (a member of [`resnet`]'s family: `resnet50_clip` ..
//! `resnet50x64_clip`), a causal text transformer ([`text::TextTower`]) and a temperature. Texts go through
//! [`ClipTokenizer`]: OpenCLIP's text cleaning, then CLIP's byte-level BPE on the `tokenizers` crate.
//!
//! ```
//! # fn main() -> anyhow::Result<()> {
//! use candle_core::{DType, Device, Tensor};
//! use clip::{Clip, ClipConfig, ClipTokenizer, SINGLE_TEMPLATE};
//!
//! let device = Device::Cpu;
//! let config = ClipConfig::by_name("resnet50_clip")?;
//! // A real checkpoint: `VarBuilder::from_mmaped_safetensors(&["open_clip_model.safetensors"], ..)`, its names
//! // mapped with `clip::keys::canonical_name` if it is not in OpenCLIP's layout. Zero weights here.
//! let model = Clip::new(&config, candle_nn::VarBuilder::zeros(DType::F32, &device))?;
//! let tokenizer = ClipTokenizer::openai()?;
//!
//! // Images preprocessed the OpenAI way: `resnet::data::preprocess_file(path, &config.preprocess(), &device)`.
//! let images = Tensor::zeros((2, 3, 224, 224), DType::F32, &device)?;
//! let labels = ["a cat", "a dog", "a car"];
//! let probs = model.zero_shot(&tokenizer, &images, &labels, &[SINGLE_TEMPLATE])?; // (2, 3)
//! assert_eq!(probs.dims(), &[2, 3]);
//!
//! let image_embeds = model.encode_image(&images)?; // (2, 1024)
//! let text_embeds = model.encode_texts(&tokenizer, &["a photo of a cat."])?; // (1, 1024)
//! let logits = model.logits(&image_embeds, &text_embeds)?; // logit_scale * cosine, (2, 1)
//! assert_eq!(logits.dims(), &[2, 1]);
//! # Ok(()) }
//! ```
//!
//! Where things live: the text tower in [`text`] and [`transformer`]; the tokenizer in [`tokenizer`], its
//! text cleaning in [`clean`] and [`html`]; templates and the classifier in [`zero_shot`]; configs (and
//! OpenAI's preprocessing) in [`config`]; checkpoint layouts in [`keys`], loading them (from files and the Hub) in
//! [`load`]; per-op timing in [`profile`].

pub mod clean;
pub mod config;
pub mod error;
pub mod html;
pub mod keys;
pub mod load;
pub mod model;
pub mod profile;
pub mod text;
pub mod tokenizer;
pub mod transformer;
pub mod zero_shot;

pub use config::{Activation, ClipConfig, TextConfig};
pub use error::{Error, Result};
#[cfg(feature = "hub")]
pub use load::pretrained;
pub use load::{ClipLoadOptions, PretrainedClip};
pub use model::Clip;
pub use tokenizer::ClipTokenizer;
pub use zero_shot::{openai_imagenet_templates, simple_imagenet_templates, ZeroShotClassifier, SINGLE_TEMPLATE};
