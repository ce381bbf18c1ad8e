//! The ResNet family on [Candle](https://github.com/huggingface/candle), numerically matching PyTorch.
//!
//! # A pretrained model in three lines
//!
//! A registry name (`resnet50`, `resnet50.tv2_in1k`) or a Hugging Face Hub repo (`timm/resnet50.a1_in1k`)
//! gives the network, the preprocessing its weights were evaluated with, and the class names:
//!
//! ```no_run
//! # fn main() -> resnet::Result<()> {
//! let model = resnet::pretrained("resnet50.a1_in1k", &candle_core::Device::Cpu)?;
//! let x = model.preprocess_file("cat.jpg")?;
//! let top5 = model.classify(&x, 5)?; // [Prediction { class: 285, label: "Egyptian cat", prob: 0.78 }, ...]
//! # Ok(()) }
//! ```
//!
//! A local checkpoint works the same way, with [`Pretrained::from_file`] (any of zoo's self-describing
//! safetensors, plain torchvision/timm/HF safetensors, or a PyTorch `.pth` state dict; see [`load`]).
//!
//! # Features of a stage, and a new head
//!
//! timm's `features_only` and `forward_intermediates`: the maps of chosen stages, with their channels and
//! reductions in [`ResNet::feature_info`]. Here on a randomly initialised network built from a config:
//!
//! ```
//! # fn main() -> resnet::Result<()> {
//! use candle_core::{DType, Device, Tensor};
//! let cfg = resnet::variants::resnet18().with_output_stride(16);
//! let net = resnet::ResNet::new(&cfg, candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu))?;
//! let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
//! let maps = net.forward_intermediates(&x, &[2, 4])?; // layer2 and layer4
//! let info = net.feature_info();
//! assert_eq!((info[2].num_chs, info[2].reduction, info[4].reduction), (128, 8, 16));
//! assert_eq!(maps[1].dims(), &[1, 512, 4, 4]); // 64 / 16: layer4 dilated instead of strided
//! # Ok(()) }
//! ```
//!
//! Transfer learning replaces the classifier and keeps the backbone:
//!
//! ```
//! # fn main() -> resnet::Result<()> {
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::VarBuilder;
//! let dev = Device::Cpu;
//! let mut net = resnet::ResNet::new(&resnet::variants::resnet20(), VarBuilder::zeros(DType::F32, &dev))?;
//! let new_head = candle_nn::VarMap::new();
//! net.replace_head(3, VarBuilder::from_varmap(&new_head, DType::F32, &dev).pp("fc"))?;
//! let logits = net.forward(&Tensor::zeros((2, 3, 32, 32), DType::F32, &dev)?)?;
//! assert_eq!(logits.dims(), &[2, 3]);
//! # Ok(()) }
//! ```
//!
//! # Where the paper's ideas live
//!
//! Every variant — torchvision's ResNet, ResNeXt and Wide ResNet, timm's "d" and "t" tweaks, the original
//! "v1" layout, the CIFAR ResNets and CLIP's image towers — is one [`ResNet`] built from a [`ResNetConfig`]
//! ([`variants`] names them).
//! - `y = F(x) + shortcut(x)`: [`block::ResidualBlock`], with `F` in [`block::ResidualFn`];
//! - basic block and bottleneck: [`block::BasicBranch`], [`block::BottleneckBranch`];
//! - the "conv block" that changes shape and the "identity block" that keeps it: [`stage::Stage`];
//! - identity vs. projecting shortcuts (option A, option B, avg-down): [`shortcut::Shortcut`];
//! - stems and stages: [`stem`], [`stage`]; the classifier head: [`head`];
//! - gradients reaching early layers through the identity path: `gradflow` (feature `train`);
//! - transfer learning by replacing the head: [`ResNet::replace_head`], `train` (feature `train`);
//! - data preparation (decode, resize, crop, normalize, batch): `data` (feature `image`);
//! - BatchNorm folding for inference: [`layers::conv_bn`];
//! - the CPU convolution's engines (our AVX-512 and AVX2 micro-kernels, the portable `gemm` path, the
//!   choice as an explicit enum): [`layers::engine`]; how a conv is lowered (one GEMM, Winograd's F(2x2, 3x3)
//!   for the stride-1 3x3s, or a direct convolution for the thin strided stem, the choice as
//!   [`layers::Lowering`]): `layers::engine::winograd`, `layers::engine::direct`; the stem conv and its max-pool
//!   as one kernel: [`layers::Conv::forward_pooled`]; a block's strided first conv and its projection shortcut
//!   on one packed input: [`block::ResidualBlock::shared_first`] (`layers::engine::twin`); the classifier's fully connected layer on the CPU as one
//!   pass over its weights shared by the pool: `layers::linear`;
//! - the channel-blocked activation layout NCHW16c (opt-in, the choice as [`layers::Layout`]): [`layers::blocked`];
//!   its convs, direct (`layers::engine::nchw16c`) and Winograd's F(2x2) and F(4x4) on it
//!   (`layers::engine::winograd16`); the blocks on it: [`ResNet::block_layout`];
//! - one inference pass on the thread pool, its other threads kept at hand between ops: [`pass`];
//! - reduced precision on the CPU (bf16 / f16 weights, f32 sums: AMX-BF16 tiles, AVX512-BF16 dot products or
//!   widened weights, the choice as [`layers::Bf16Kernel`]): [`ResNet::load_with_weight_dtype`];
//! - int8 post-training quantization (calibration [`layers::Calibration`], int8 weights by uint8 inputs on
//!   AMX-INT8 tiles or AVX512-VNNI dot products, the choice as [`layers::Int8Kernel`]): [`ResNet::quantize_int8`].
//!
//! CLIP's ResNets (`resnet50_clip` .. `resnet50x64_clip`, Radford et al. 2021) are members too: a three-conv stem
//! with an average pool ([`StemKind::Clip`]), anti-aliased strides (an average pool takes the stride in the
//! bottleneck, [`AntiAlias::AvgPool`], and in the shortcut, [`ShortcutKind::AvgPoolProjection`]) and an
//! attention-pooling head ([`HeadKind::AttentionPool`], [`attention_pool`]) whose output is the image embedding.
//! The text tower and zero-shot classification live in the `clip` crate.
//!
//! # Cargo features
//!
//! - `hub` (default): [`pretrained()`] and the registry/Hub resolution in [`mod@pretrained`];
//! - `image` (default): `data`, image decoding and PIL-exact preprocessing;
//! - `train` (default): `train` (fine-tuning) and `gradflow`.
//!
//! With `default-features = false` the crate builds the networks, the loader and the CPU kernels on Candle
//! and safetensors alone: no HTTP, TLS, async runtime or C image library.

#![warn(missing_docs)]

pub mod attention_pool;
pub mod block;
pub mod config;
pub mod convert;
#[cfg(feature = "image")]
pub mod data;
pub mod error;
pub mod features;
pub mod finite;
#[cfg(feature = "train")]
pub mod gradflow;
pub mod head;
pub mod keys;
pub mod layers;
pub mod load;
pub mod model;
pub mod pass;
pub mod pretrained;
pub mod profile;
pub mod shortcut;
pub mod stage;
pub mod stem;
#[cfg(feature = "train")]
pub mod train;
pub mod variants;

pub use config::{AntiAlias, BlockKind, HeadKind, ResNetConfig, ShortcutKind, StemKind, StridePlacement};
pub use error::{Error, Result};
pub use features::FeatureInfo;
pub use layers::BnMode;
pub use model::ResNet;
#[cfg(feature = "hub")]
pub use pretrained::pretrained;
pub use pretrained::{Prediction, Pretrained};
