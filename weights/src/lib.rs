//! Checkpoints for zoo: safetensors files, the Hugging Face Hub cache, importers from other frameworks.
//!
//! This crate knows no model. It moves named tensors and their metadata (architecture config,
//! preprocessing, labels) between files, the Hub and memory; model crates supply the key-renaming rules.

pub mod checkpoint;
pub mod cleanup;
pub mod fsutil;
#[cfg(feature = "hub")]
pub mod hub;
pub mod labels;
pub mod npy;
pub mod preprocess;
pub mod pth;
pub mod registry;
pub mod tfjs;

pub use preprocess::{CropMode, Interpolation, PreprocessConfig};
