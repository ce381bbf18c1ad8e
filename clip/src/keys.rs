//! Checkpoint names of CLIP models, mapped to the ones [`crate::Clip`] loads (OpenCLIP's).
//!
//! - OpenCLIP / OpenAI (`visual.*`, `token_embedding.weight`, `transformer.resblocks.*`, `logit_scale`, ...):
//!   unchanged; `nn.DataParallel`'s `module.` prefix dropped.
//! - timm's image tower (`timm/resnet50_clip.openai`): `stem.conv1.conv.weight` -> `visual.conv1.weight`,
//!   `stages.0.0.conv1_1x1.bn.bias` -> `visual.layer1.0.bn1.bias`, `head.q.weight` ->
//!   `visual.attnpool.q_proj.weight`, ... (its text tower has to come from elsewhere).
//! - zoo's own image tower files (`conv1.weight`, `layer1.0.conv1.weight`, `attnpool.*`): `visual.` prepended.
//! - `num_batches_tracked` and the integers of OpenAI's TorchScript files (`input_resolution`, `context_length`,
//!   `vocab_size`): dropped (`None`).
//!
//! The image tower alone (for `resnet`'s loaders) uses [`resnet::keys`], whose `OpenClip` and `TimmClip`
//! schemes make the same translation without the `visual.` prefix.

use resnet::keys::{canonical_name as resnet_name, KeyScheme};

/// The canonical name of a stored CLIP tensor, or `None` for entries that are not model tensors.
pub fn canonical_name(stored: &str) -> Option<String> {
    let key = stored.strip_prefix("module.").unwrap_or(stored);
    if key.ends_with("num_batches_tracked") || matches!(key, "input_resolution" | "context_length" | "vocab_size") {
        return None;
    }
    if key.starts_with("visual.") {
        return Some(key.to_string());
    }
    if key.starts_with("stem.conv") || key.starts_with("stages.") || key.starts_with("head.") {
        return resnet_name(KeyScheme::TimmClip, key).map(|k| format!("visual.{k}"));
    }
    let resnet_prefix = [
        "conv1.",
        "conv2.",
        "conv3.",
        "bn1.",
        "bn2.",
        "bn3.",
        "layer",
        "attnpool.",
    ];
    if resnet_prefix.iter().any(|p| key.starts_with(p)) {
        return Some(format!("visual.{key}"));
    }
    Some(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let cases = [
            ("visual.layer1.0.conv1.weight", Some("visual.layer1.0.conv1.weight")),
            (
                "module.transformer.resblocks.3.attn.in_proj_weight",
                Some("transformer.resblocks.3.attn.in_proj_weight"),
            ),
            ("logit_scale", Some("logit_scale")),
            ("stem.conv2.bn.weight", Some("visual.bn2.weight")),
            ("stages.2.1.conv2_kxk.conv.weight", Some("visual.layer3.1.conv2.weight")),
            ("head.pos_embed", Some("visual.attnpool.positional_embedding")),
            ("attnpool.c_proj.bias", Some("visual.attnpool.c_proj.bias")),
            ("layer4.2.bn3.running_var", Some("visual.layer4.2.bn3.running_var")),
            ("visual.bn1.num_batches_tracked", None),
            ("input_resolution", None),
        ];
        for (stored, want) in cases {
            assert_eq!(canonical_name(stored).as_deref(), want, "{stored}");
        }
    }
}
