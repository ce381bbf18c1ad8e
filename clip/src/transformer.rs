//! The text tower's residual attention block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))` (pre-norm).
//!
//! Checkpoint names are OpenCLIP's (OpenAI's): `ln_1`, `attn.in_proj_weight` / `attn.in_proj_bias` (q, k and v
//! stacked), `attn.out_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use resnet::attention_pool::softmax_last;

use crate::config::{Activation, TextConfig};

/// PyTorch's `nn.LayerNorm` over the last dimension, with the variance of the centred values (two passes, as
/// PyTorch computes it; the one-pass `E[x²] - E[x]²` loses digits when the mean is large).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of `size` values from `vb`.
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Multi-head self-attention with a causal mask: token `i` sees tokens `0..=i`.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention {
    /// `(3 * width, width)`: the q, k and v projections stacked.
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl CausalSelfAttention {
    /// Loads `in_proj_weight`, `in_proj_bias` and `out_proj` from `vb` (at `attn`).
    pub fn load(width: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((3 * width, width), "in_proj_weight")?;
        let b = vb.get(3 * width, "in_proj_bias")?;
        Ok(Self {
            in_proj: Linear::new(w, Some(b)),
            out_proj: candle_nn::linear(width, width, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `(N, L, width)` to `(N, L, width)`; `mask` is `(L, L)`, 0 where a token may look, -inf where it may not.
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (n, l, width) = x.dims3()?;
        let d = width / self.heads;
        let qkv = self
            .in_proj
            .forward(x)?
            .reshape((n, l, 3, self.heads, d))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let scores = (q.matmul(&k.t()?)? * (d as f64).powf(-0.5))?.broadcast_add(mask)?; // (N, H, L, L)
        let out = softmax_last(&scores)?.matmul(&v)?; // (N, H, L, D)
        self.out_proj.forward(&out.transpose(1, 2)?.reshape((n, l, width))?)
    }
}

/// The causal mask of `len` tokens, on `x`'s device and dtype.
pub fn causal_mask(len: usize, like: &Tensor) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (len, len), like.device())?.to_dtype(like.dtype())
}

/// `c_proj(act(c_fc(x)))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    pub activation: Activation,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?;
        let h = match self.activation {
            Activation::Gelu => h.gelu_erf()?,
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
        };
        self.c_proj.forward(&h)
    }
}

/// One pre-norm residual attention block.
#[derive(Debug, Clone)]
pub struct ResidualAttentionBlock {
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl ResidualAttentionBlock {
    /// Loads the block `vb` points at (`transformer.resblocks.{i}`).
    pub fn load(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let (w, hidden) = (cfg.width, cfg.mlp_width());
        Ok(Self {
            ln_1: LayerNorm::load(w, 1e-5, vb.pp("ln_1"))?,
            attn: CausalSelfAttention::load(w, cfg.heads, vb.pp("attn"))?,
            ln_2: LayerNorm::load(w, 1e-5, vb.pp("ln_2"))?,
            mlp: Mlp {
                c_fc: candle_nn::linear(w, hidden, vb.pp("mlp.c_fc"))?,
                c_proj: candle_nn::linear(hidden, w, vb.pp("mlp.c_proj"))?,
                activation: cfg.activation,
            },
        })
    }

    /// The attention half: `x + attn(ln_1(x))`.
    pub fn forward_attention(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        x + self.attn.forward(&self.ln_1.forward(x)?, mask)?
    }

    /// The MLP half: `x + mlp(ln_2(x))`.
    pub fn forward_mlp(&self, x: &Tensor) -> Result<Tensor> {
        x + self.mlp.forward(&self.ln_2.forward(x)?)?
    }

    /// The whole block on `(N, L, width)` with the causal `mask`.
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_mlp(&self.forward_attention(x, mask)?)
    }
}
