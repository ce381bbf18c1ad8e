//! Op-by-op timing of the text tower (for `zoo bench --layers`), in the records of [`resnet::profile`].
//!
//! The image tower is a [`resnet::ResNet`]: [`resnet::profile::profile`] walks it, attention pool included.

use candle_core::{Module, Result, Tensor};
use resnet::profile::{record, OpKind, OpRecord, Timing};

use crate::text::TextTower;
use crate::transformer::causal_mask;

/// Runs the text tower op by op on `(N, L)` token ids: `token_embedding`, then per block
/// `transformer.resblocks.{i}.attn` and `.mlp` (each with its LayerNorm and residual add), then `ln_final`
/// and `text_projection` (the end token's row projected). Like the forward pass, it stops at the batch's last
/// end token.
pub fn profile_text(text: &TextTower, tokens: &Tensor, timing: &Timing) -> Result<Vec<OpRecord>> {
    let cfg = text.config();
    let (tokens, ends) = text.check_tokens(tokens)?;
    let len = ends.iter().max().map_or(1, |e| e + 1);
    let tokens = tokens.narrow(1, 0, len)?;
    let n = tokens.dim(0)? as u64;
    let (w, l, hidden) = (cfg.width as u64, len as u64, cfg.mlp_width() as u64);
    let mut out = Vec::new();
    let params = text.token_embedding.embeddings().elem_count() + text.positional_embedding.elem_count();
    let mut x = record(
        &mut out,
        "token_embedding",
        OpKind::Embedding,
        params,
        0,
        timing,
        || text.embed(&tokens),
    )?;
    let mask = causal_mask(len, &x)?;
    for (i, block) in text.blocks.iter().enumerate() {
        let linear = |m: &candle_nn::Linear| m.weight().elem_count() + m.bias().map_or(0, Tensor::elem_count);
        let ln = |m: &crate::transformer::LayerNorm| m.weight.elem_count() + m.bias.elem_count();
        let attn_params = ln(&block.ln_1) + linear(&block.attn.in_proj) + linear(&block.attn.out_proj);
        // q, k, v and output projections, then scores and the weighted sum.
        let attn_macs = n * (4 * l * w * w + 2 * l * l * w);
        let name = format!("transformer.resblocks.{i}.attn");
        x = record(
            &mut out,
            &name,
            OpKind::Attention,
            attn_params,
            attn_macs,
            timing,
            || block.forward_attention(&x, &mask),
        )?;
        let mlp_params = ln(&block.ln_2) + linear(&block.mlp.c_fc) + linear(&block.mlp.c_proj);
        let name = format!("transformer.resblocks.{i}.mlp");
        x = record(
            &mut out,
            &name,
            OpKind::Mlp,
            mlp_params,
            n * 2 * l * w * hidden,
            timing,
            || block.forward_mlp(&x),
        )?;
    }
    let ln_params = text.ln_final.weight.elem_count() + text.ln_final.bias.elem_count();
    x = record(&mut out, "ln_final", OpKind::Norm, ln_params, 0, timing, || {
        text.ln_final.forward(&x)
    })?;
    let proj = text.text_projection.elem_count();
    let macs = n * proj as u64;
    record(&mut out, "text_projection", OpKind::Head, proj, macs, timing, || {
        text.project(&x, &ends)
    })?;
    Ok(out)
}
