//! Convolution followed by BatchNorm, the unit every ResNet layer is made of.

use candle_core::{DType, Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder};

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
    pub bn_mode: BnMode,
    pub conv_bias: bool,
    pub bn_eps: f64,
}

/// A convolution and its BatchNorm, either folded together or kept apart.
#[derive(Debug, Clone)]
pub enum ConvBn {
    /// `conv'(x) = BN(conv(x))` with the BN baked into the weights and bias.
    Folded { conv: Conv, checkpoint_params: usize },
    Separate { conv: Conv, bn: BatchNorm },
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
                Ok(ConvBn::Folded { conv: fold(&conv, &bn)?, checkpoint_params })
            }
        }
    }

    pub fn conv(&self) -> &Conv {
        match self {
            ConvBn::Folded { conv, .. } | ConvBn::Separate { conv, .. } => conv,
        }
    }

    /// Learnable parameters of the checkpoint this came from (conv weight and bias, BN weight and bias).
    pub fn num_params(&self) -> usize {
        match self {
            ConvBn::Folded { checkpoint_params, .. } => *checkpoint_params,
            ConvBn::Separate { conv, bn } => conv_params(conv) + bn.weight_and_bias().map_or(0, |(w, b)| w.elem_count() + b.elem_count()),
        }
    }
}

fn conv_params(conv: &Conv) -> usize {
    conv.weight().elem_count() + conv.bias().map_or(0, Tensor::elem_count)
}

/// BN(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta
///             = (W * s) * x + (beta + (b - mean) * s)    with s = gamma / sqrt(var + eps).
/// Computed in f64 so the folded weights round once, not at every step.
fn fold(conv: &Conv, bn: &BatchNorm) -> Result<Conv> {
    let dtype = conv.weight().dtype();
    let var = bn.running_var().to_dtype(DType::F64)?;
    let mean = bn.running_mean().to_dtype(DType::F64)?;
    let (gamma, beta) = match bn.weight_and_bias() {
        Some((g, b)) => (g.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?),
        None => (var.ones_like()?, var.zeros_like()?),
    };
    let scale = (gamma / (var + bn.eps())?.sqrt()?)?;
    let out = conv.spec().out_channels;
    let weight = conv.weight().to_dtype(DType::F64)?.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
    let shift = match conv.bias() {
        Some(b) => (b.to_dtype(DType::F64)? - mean)?,
        None => mean.neg()?,
    };
    let bias = (beta + (shift * scale)?)?;
    Conv::new_inference(weight.to_dtype(dtype)?, Some(bias.to_dtype(dtype)?), *conv.spec())
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
