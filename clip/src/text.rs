//! CLIP's text tower: token and positional embeddings, a causal transformer, a final LayerNorm, and the
//! projection of the end-of-text token's output into the joint embedding.
//!
//! The output for a text is read at its end token, found as OpenCLIP finds it: the first position of the
//! largest id (the end token has the largest id of the vocabulary). Causal attention means no token sees
//! the ones after it, so the forward pass stops at the last end token of the batch: the padding after it
//! never runs (77 positions become ~10 for a short prompt) and the result is the same.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::config::TextConfig;
use crate::transformer::{causal_mask, LayerNorm, ResidualAttentionBlock};

/// The text encoder (OpenCLIP's names: `token_embedding`, `positional_embedding`, `transformer.resblocks.{i}`,
/// `ln_final`, `text_projection`).
#[derive(Debug, Clone)]
pub struct TextTower {
    pub token_embedding: Embedding,
    /// `(context_length, width)`.
    pub positional_embedding: Tensor,
    pub blocks: Vec<ResidualAttentionBlock>,
    pub ln_final: LayerNorm,
    /// `(width, embed_dim)`: `embedding = ln_final(x)[end token] @ text_projection`.
    pub text_projection: Tensor,
    config: TextConfig,
}

impl TextTower {
    /// Loads the tower from `vb` at the model's root (OpenCLIP keeps the text tower there).
    pub fn load(cfg: &TextConfig, embed_dim: usize, vb: VarBuilder) -> Result<Self> {
        let w = cfg.width;
        let token_embedding = Embedding::new(vb.get((cfg.vocab_size, w), "token_embedding.weight")?, w);
        let blocks = (0..cfg.layers)
            .map(|i| ResidualAttentionBlock::load(cfg, vb.pp(format!("transformer.resblocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding,
            positional_embedding: vb.get((cfg.context_length, w), "positional_embedding")?,
            blocks,
            ln_final: LayerNorm::load(w, 1e-5, vb.pp("ln_final"))?,
            text_projection: vb.get((w, embed_dim), "text_projection")?,
            config: cfg.clone(),
        })
    }

    /// The config the tower was built from.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Learnable parameters, as the checkpoint stores them.
    pub fn num_params(&self) -> usize {
        let ln = |l: &LayerNorm| l.weight.elem_count() + l.bias.elem_count();
        let lin = |l: &candle_nn::Linear| l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count);
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                ln(&b.ln_1)
                    + ln(&b.ln_2)
                    + lin(&b.attn.in_proj)
                    + lin(&b.attn.out_proj)
                    + lin(&b.mlp.c_fc)
                    + lin(&b.mlp.c_proj)
            })
            .sum();
        self.token_embedding.embeddings().elem_count()
            + self.positional_embedding.elem_count()
            + blocks
            + ln(&self.ln_final)
            + self.text_projection.elem_count()
    }

    /// Checks a `(N, L)` batch of token ids (any integer dtype) against the vocabulary and the context, and
    /// returns it as u32 with each text's end position (the first largest id).
    pub fn check_tokens(&self, tokens: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        let (n, len) = tokens.dims2()?;
        if n == 0 || len == 0 || len > self.config.context_length {
            candle_core::bail!(
                "text tokens must be (N, L) with N > 0 and 0 < L <= {}, got {:?}",
                self.config.context_length,
                tokens.dims()
            )
        }
        let ids = tokens.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        let vocab = self.config.vocab_size as i64;
        let mut ends = Vec::with_capacity(n);
        for row in &ids {
            if let Some(bad) = row.iter().find(|&&t| t < 0 || t >= vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}")
            }
            // torch.argmax: the first position of the largest value.
            let max = row.iter().copied().max().unwrap_or(0);
            ends.push(row.iter().position(|&t| t == max).unwrap_or(0));
        }
        Ok((tokens.to_dtype(DType::U32)?, ends))
    }

    /// Text embeddings `(N, embed_dim)` (not normalized) of `(N, L)` token ids, `L <= context_length`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (tokens, ends) = self.check_tokens(tokens)?;
        let len = ends.iter().max().map_or(1, |e| e + 1);
        let mut x = self.embed(&tokens.narrow(1, 0, len)?)?;
        let mask = causal_mask(len, &x)?;
        for block in &self.blocks {
            x = block.forward(&x, &mask)?;
        }
        self.project(&self.ln_final.forward(&x)?, &ends)
    }

    /// Token plus positional embeddings of `(N, L)` u32 ids: `(N, L, width)`.
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let len = tokens.dim(1)?;
        self.token_embedding
            .forward(tokens)?
            .broadcast_add(&self.positional_embedding.narrow(0, 0, len)?)
    }

    /// The end tokens' rows of `(N, L, width)` final states, projected: `(N, embed_dim)`.
    pub fn project(&self, x: &Tensor, ends: &[usize]) -> Result<Tensor> {
        let (n, len, w) = x.dims3()?;
        let rows: Vec<u32> = ends.iter().enumerate().map(|(i, &e)| (i * len + e) as u32).collect();
        let rows = Tensor::from_vec(rows, n, x.device())?;
        x.reshape((n * len, w))?
            .index_select(&rows, 0)?
            .matmul(&self.text_projection)
    }
}
