//! Convolution followed by BatchNorm, the unit every ResNet layer is made of.

use candle_core::{DType, Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder};
use rayon::prelude::*;

use super::conv::{Conv, ConvSpec};

/// What to do with BatchNorm layers when loading weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BnMode {
    /// Fold each BatchNorm into the convolution before it: inference only, one op instead of two.
    #[default]
    Fold,
    /// Keep BatchNorm as its own layer so it can train (batch statistics, running-stat updates).
    Keep,
}

/// Options shared by every conv+BN pair of a network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvBnOptions {
    /// Fold BatchNorm into the conv (inference) or keep it (training).
    pub bn_mode: BnMode,
    /// Whether the checkpoint's convolutions carry a bias of their own (Keras' do, PyTorch's do not).
    pub conv_bias: bool,
    /// BatchNorm's epsilon.
    pub bn_eps: f64,
    /// On the CPU, the dtype folded convolution weights are held in (`None`: the `VarBuilder`'s): bf16 or
    /// f16 halve their memory while the CPU kernel still sums in f32 (see [`Conv::new_inference_cpu_as`]).
    /// Folding then happens in f32 and rounds each weight once.
    pub weight_dtype: Option<DType>,
}

/// A convolution and its BatchNorm, either folded together or kept apart.
#[derive(Debug, Clone)]
pub enum ConvBn {
    /// `conv'(x) = BN(conv(x))` with the BN baked into the weights and bias.
    Folded {
        /// The convolution with the BatchNorm folded in.
        conv: Conv,
        /// Parameters the checkpoint stored for the pair (conv, BN weight and bias).
        checkpoint_params: usize,
    },
    /// The convolution and a BatchNorm that still normalizes (and, in training, learns).
    Separate {
        /// The convolution.
        conv: Conv,
        /// Its BatchNorm.
        bn: BatchNorm,
    },
}

impl ConvBn {
    /// Loads the conv from `conv_vb` (`weight`, optional `bias`) and the BN from `bn_vb`
    /// (`weight`, `bias`, `running_mean`, `running_var`).
    pub fn load(spec: ConvSpec, conv_vb: VarBuilder, bn_vb: VarBuilder, opts: ConvBnOptions) -> Result<Self> {
        let weight = conv_vb.get(spec.weight_shape(), "weight")?;
        let bias = match opts.conv_bias {
            true => Some(conv_vb.get(spec.out_channels, "bias")?),
            false => None,
        };
        let bn = candle_nn::batch_norm(spec.out_channels, BatchNormConfig::from(opts.bn_eps), bn_vb)?;
        let conv = Conv::new(weight, bias, spec);
        match opts.bn_mode {
            BnMode::Keep => Ok(ConvBn::Separate { conv, bn }),
            BnMode::Fold => {
                let checkpoint_params = conv_params(&conv) + 2 * spec.out_channels;
                Ok(ConvBn::Folded {
                    conv: fold(&conv, &bn, opts.weight_dtype)?,
                    checkpoint_params,
                })
            }
        }
    }

    /// Replaces a folded layer's convolution (quantization swaps in an int8 one); the checkpoint's
    /// parameter count stays.
    pub(crate) fn set_folded_conv(&mut self, new: Conv) -> Result<()> {
        match self {
            ConvBn::Folded { conv, .. } => {
                *conv = new;
                Ok(())
            }
            ConvBn::Separate { .. } => candle_core::bail!("only a folded conv+BN can be replaced"),
        }
    }

    /// The convolution (folded or not).
    pub fn conv(&self) -> &Conv {
        match self {
            ConvBn::Folded { conv, .. } | ConvBn::Separate { conv, .. } => conv,
        }
    }

    /// Learnable parameters of the checkpoint this came from (conv weight and bias, BN weight and bias).
    pub fn num_params(&self) -> usize {
        match self {
            ConvBn::Folded { checkpoint_params, .. } => *checkpoint_params,
            ConvBn::Separate { conv, bn } => {
                conv_params(conv) + bn.weight_and_bias().map_or(0, |(w, b)| w.elem_count() + b.elem_count())
            }
        }
    }
}

fn conv_params(conv: &Conv) -> usize {
    conv.weight_count() + conv.bias().map_or(0, Tensor::elem_count)
}

/// BN(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta
///             = (W * s) * x + (beta + (b - mean) * s)    with s = gamma / sqrt(var + eps).
/// Computed in f64 so each folded weight rounds once, not at every step; on the host, as plain loops,
/// because Candle's tensor ops would make several f64 copies of every weight (most of the load time).
fn fold(conv: &Conv, bn: &BatchNorm, weight_dtype: Option<DType>) -> Result<Conv> {
    let weight = conv.weight()?;
    let (device, dtype) = (weight.device(), weight.dtype());
    let out = conv.spec().out_channels;
    let host = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
    let (var, mean) = (host(bn.running_var())?, host(bn.running_mean())?);
    let (gamma, beta) = match bn.weight_and_bias() {
        Some((g, b)) => (host(g)?, host(b)?),
        None => (vec![1.0; out], vec![0.0; out]),
    };
    let conv_bias = match conv.bias() {
        Some(b) => host(b)?,
        None => vec![0.0; out],
    };
    let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + bn.eps()).sqrt()).collect();
    let bias: Vec<f64> = (0..out)
        .map(|o| beta[o] + (conv_bias[o] - mean[o]) * scale[o])
        .collect();
    // f32 holds f16/bf16 weights exactly, so going through it loses nothing for those dtypes either.
    let mut folded = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    folded
        .par_chunks_mut(weight.elem_count() / out)
        .zip(&scale)
        .for_each(|(row, &s)| {
            row.iter_mut().for_each(|w| *w = (f64::from(*w) * s) as f32);
        });
    let held = weight_dtype.unwrap_or(dtype);
    if device.is_cpu() && matches!(held, DType::F32 | DType::BF16 | DType::F16) {
        // The CPU kernel takes the buffer over and lays it out in place (f32), or rounds it once into its
        // bf16/f16 panels; its bias is f32 and it computes in f32.
        let bias = Tensor::from_vec(bias, out, device)?.to_dtype(DType::F32)?;
        return Conv::new_inference_cpu_as(folded, Some(bias), *conv.spec(), held);
    }
    let bias = Tensor::from_vec(bias, out, device)?.to_dtype(dtype)?;
    let folded = Tensor::from_vec(folded, weight.shape(), device)?.to_dtype(dtype)?;
    Conv::new_inference(folded, Some(bias), *conv.spec())
}

impl ConvBn {
    /// `relu?(BN(conv(x)) + residual?)`: what ends a residual block (`residual` = the shortcut) or sits
    /// inside one. Folded convs run it as one fused kernel on the CPU.
    pub fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Folded { conv, .. } if !train => conv.forward_fused(x, residual, relu),
            _ => {
                let mut y = self.forward_t(x, train)?;
                if let Some(r) = residual {
                    y = (y + r)?;
                }
                if relu {
                    y = y.relu()?;
                }
                Ok(y)
            }
        }
    }
}

impl ConvBn {
    /// `maxpool3x3s2(relu?(BN(conv(x))))` as one fused CPU kernel where the folded conv has one (see
    /// [`crate::layers::Conv::forward_pooled`]); else (training, an unfolded or non-CPU conv) `None`.
    pub fn forward_pooled(&self, x: &Tensor, relu: bool, train: bool) -> Result<Option<Tensor>> {
        match self {
            ConvBn::Folded { conv, .. } if !train => conv.forward_pooled(x, relu),
            _ => Ok(None),
        }
    }

    /// `relu?(BN(conv(x)))` for `next` to take (see [`Conv::forward_into`]): u8 already quantized for
    /// `next` where both are folded int8 convs on an int8 kernel, else as [`ConvBn::forward_fused`].
    pub fn forward_into(&self, x: &Tensor, relu: bool, next: &ConvBn, train: bool) -> Result<Tensor> {
        self.forward_fused_into(x, None, relu, next, train)
    }

    /// [`ConvBn::forward_into`] with a residual added before the ReLU (see [`Conv::forward_fused_into`]).
    pub fn forward_fused_into(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        next: &ConvBn,
        train: bool,
    ) -> Result<Tensor> {
        match (self, next) {
            (ConvBn::Folded { conv, .. }, ConvBn::Folded { conv: n, .. }) if !train => {
                conv.forward_fused_into(x, residual, relu, n)
            }
            _ => self.forward_fused(x, residual, relu, train),
        }
    }
}

impl ConvBn {
    /// `(relu?(BN(conv(x))), BN'(twin(x)))` on one packed input where both are folded CPU convs that can share
    /// it (see [`crate::layers::Conv::forward_shared`]: a residual block's strided first conv and its 1x1
    /// projection shortcut); else `None` (training, unfolded convs, or convs that cannot).
    pub fn forward_shared(
        &self,
        x: &Tensor,
        twin: &ConvBn,
        relu: bool,
        train: bool,
    ) -> Result<Option<(Tensor, Tensor)>> {
        match (self, twin) {
            (ConvBn::Folded { conv, .. }, ConvBn::Folded { conv: t, .. }) if !train => conv.forward_shared(x, t, relu),
            _ => Ok(None),
        }
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Folded { conv, .. } => {
                if train {
                    candle_core::bail!(
                        "this network was loaded with BatchNorm folded for inference; load it with BnMode::Keep to train"
                    )
                }
                conv.forward(x)
            }
            ConvBn::Separate { conv, bn } => bn.forward_t(&conv.forward(x)?, train),
        }
    }
}
