//! CLIP's attention-pooling head: the image embedding is what the mean of the feature map attends to.
//!
//! The last stage's `C x grid x grid` map becomes `grid² + 1` tokens of `C` values, the spatial mean first, each
//! plus a learned positional embedding. One multi-head attention step (`q_proj`, `k_proj`, `v_proj`, softmax over
//! `q·k / sqrt(C / heads)`) runs with the mean token as the only query, and its output, projected by `c_proj`, is
//! the embedding. (OpenCLIP computes every token's output and keeps the first; only the first is computed here.)

use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// The `attnpool` head of a CLIP ResNet.
#[derive(Debug, Clone)]
pub struct AttentionPool {
    /// `(grid² + 1, C)`: row 0 for the mean token, then the feature map in row-major order.
    pub positional_embedding: Tensor,
    /// Query projection (of the mean token only).
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// `C -> out_dim`.
    pub c_proj: Linear,
    /// Attention heads.
    pub num_heads: usize,
    /// Side of the feature map the positional embedding was trained for.
    pub grid: usize,
    /// Size of the output (the embedding).
    pub out_dim: usize,
}

impl AttentionPool {
    /// Loads `positional_embedding`, `q_proj`, `k_proj`, `v_proj` and `c_proj` from `vb` (at `attnpool`).
    pub fn load(num_features: usize, num_heads: usize, grid: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        if num_heads == 0 || !num_features.is_multiple_of(num_heads) {
            bail!("an attention pool cannot split {num_features} features into {num_heads} heads")
        }
        let c = num_features;
        Ok(Self {
            positional_embedding: vb.get((grid * grid + 1, c), "positional_embedding")?,
            q_proj: candle_nn::linear(c, c, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(c, c, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(c, c, vb.pp("v_proj"))?,
            c_proj: candle_nn::linear(c, out_dim, vb.pp("c_proj"))?,
            num_heads,
            grid,
            out_dim,
        })
    }

    /// Learnable parameters (positional embedding, four projections with their biases).
    pub fn num_params(&self) -> usize {
        let linear = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count);
        self.positional_embedding.elem_count()
            + [&self.q_proj, &self.k_proj, &self.v_proj, &self.c_proj]
                .into_iter()
                .map(linear)
                .sum::<usize>()
    }

    /// Multiply-accumulates of one forward pass on a batch of `batch`.
    pub fn macs(&self, batch: usize) -> u64 {
        let c = self.positional_embedding.dim(1).unwrap_or(0) as u64;
        let tokens = (self.grid * self.grid + 1) as u64;
        // q for one token, k and v for all, scores and weighted sum, c_proj.
        batch as u64 * (c * c + 2 * tokens * c * c + 2 * tokens * c + c * self.out_dim as u64)
    }
}

impl Module for AttentionPool {
    /// `(N, C, grid, grid)` features to `(N, out_dim)` embeddings.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let g = self.grid;
        if (h, w) != (g, g) || c != self.positional_embedding.dim(1)? {
            bail!(
                "the attention pool was built for {}x{g}x{g} features ({} px inputs at stride 32), got {c}x{h}x{w}",
                self.positional_embedding.dim(1)?,
                32 * g
            )
        }
        let tokens = x.flatten_from(2)?.transpose(1, 2)?; // (N, HW, C)
        let tokens = Tensor::cat(&[&tokens.mean_keepdim(1)?, &tokens], 1)?;
        let tokens = tokens.broadcast_add(&self.positional_embedding)?.contiguous()?; // (N, L, C)
        let len = tokens.dim(1)?;
        let (heads, d) = (self.num_heads, c / self.num_heads);
        let split = |t: Tensor, l: usize| t.reshape((n, l, heads, d))?.transpose(1, 2)?.contiguous();
        let q = split(self.q_proj.forward(&tokens.narrow(1, 0, 1)?)?, 1)?; // (N, H, 1, D)
        let k = split(self.k_proj.forward(&tokens)?, len)?; // (N, H, L, D)
        let v = split(self.v_proj.forward(&tokens)?, len)?;
        let scores = (q.matmul(&k.t()?)? * (d as f64).powf(-0.5))?; // (N, H, 1, L)
        let weights = softmax_last(&scores)?;
        let pooled = weights.matmul(&v)?.reshape((n, c))?; // heads side by side, as PyTorch joins them
        self.c_proj.forward(&pooled)
    }
}

/// Softmax over the last dimension: Candle's fused kernel for inference, composed ops when autograd is on.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}
