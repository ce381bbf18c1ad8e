//! The ResNet family on [Candle](https://github.com/huggingface/candle), numerically matching PyTorch.
//!
//! Every variant — torchvision's ResNet, ResNeXt and Wide ResNet, timm's "d" and "t" tweaks, the original
//! "v1" layout, the CIFAR ResNets and CLIP's image towers — is one [`ResNet`] built from a [`ResNetConfig`]:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use candle_core::{DType, Device, Module, Tensor};
//! let device = Device::Cpu;
//! let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&["resnet50.safetensors"], DType::F32, &device)? };
//! let model = resnet::ResNet::new(&resnet::variants::resnet50(), vb)?;
//! let logits = model.forward(&Tensor::zeros((1, 3, 224, 224), DType::F32, &device)?)?;
//! # Ok(()) }
//! ```
//!
//! Where the paper's ideas live:
//! - `y = F(x) + shortcut(x)`: [`block::ResidualBlock`], with `F` in [`block::ResidualFn`];
//! - basic block and bottleneck: [`block::BasicBranch`], [`block::BottleneckBranch`];
//! - identity vs. projecting shortcuts (option A, option B, avg-down): [`shortcut::Shortcut`];
//! - stems and stages: [`stem`], [`stage`]; the classifier head: [`head`];
//! - BatchNorm folding for inference: [`layers::conv_bn`].
//!
//! CLIP's ResNets (`resnet50_clip` .. `resnet50x64_clip`, Radford et al. 2021) are members too: a three-conv stem
//! with an average pool ([`StemKind::Clip`]), anti-aliased strides (an average pool takes the stride in the
//! bottleneck, [`AntiAlias::AvgPool`], and in the shortcut, [`ShortcutKind::AvgPoolProjection`]) and an
//! attention-pooling head ([`HeadKind::AttentionPool`], [`attention_pool`]) whose output is the image embedding.
//! The text tower and zero-shot classification live in the `clip` crate.

pub mod attention_pool;
pub mod block;
pub mod config;
pub mod convert;
pub mod data;
pub mod error;
pub mod gradflow;
pub mod head;
pub mod keys;
pub mod layers;
pub mod model;
pub mod profile;
pub mod shortcut;
pub mod stage;
pub mod stem;
pub mod train;
pub mod variants;

pub use config::{AntiAlias, BlockKind, HeadKind, ResNetConfig, ShortcutKind, StemKind, StridePlacement};
pub use error::{Error, Result};
pub use layers::BnMode;
pub use model::ResNet;
