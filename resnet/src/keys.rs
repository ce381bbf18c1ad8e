//! Checkpoint key schemes for ResNets, mapped to the canonical torchvision/timm names.
//!
//! The canonical names are what the modules of this crate ask for (`conv1.weight`,
//! `layer1.0.downsample.0.weight`, `fc.bias`). Other sources name the same tensors differently:
//! `nn.DataParallel` adds `module.`, CIFAR reference code calls the head `linear`, HF transformers
//! uses its own nesting, OpenCLIP nests the image tower under `visual.` beside the text tower, and timm names
//! CLIP's towers the way its `ByobNet` builds them. [`canonical_name`] translates one stored name.
//!
//! For CLIP's towers the canonical names are OpenCLIP's (which are OpenAI's) without the `visual.` prefix:
//! `conv1`..`conv3`/`bn1`..`bn3` (stem), `layer{s}.{b}.conv1`..`conv3`, `layer{s}.{b}.downsample.0`/`.1`
//! (anti-aliased shortcut) and `attnpool.{positional_embedding, q_proj, k_proj, v_proj, c_proj}`.

/// The naming convention a checkpoint uses, detected from its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScheme {
    /// torchvision / timm names, possibly with a `module.` prefix or a `linear` head.
    TorchVision,
    /// HF transformers `ResNetForImageClassification`.
    Transformers,
    /// A whole OpenCLIP (or OpenAI) CLIP model: the image tower under `visual.`, the text tower and
    /// `logit_scale` beside it. Only the image tower's tensors have a ResNet name.
    OpenClip,
    /// timm's CLIP image towers (`resnet50_clip.openai` and kin): `stem.conv1.conv`, `stages.0.0.conv1_1x1.bn`,
    /// `stages.1.0.shortcut.conv.conv`, `head.q`, `head.pos_embed`, ...
    TimmClip,
}

impl KeyScheme {
    /// The scheme of a checkpoint from its tensor names.
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        for k in keys {
            let k = k.strip_prefix("module.").unwrap_or(k);
            if k.starts_with("resnet.embedder.") || k.starts_with("embedder.") {
                return KeyScheme::Transformers;
            }
            if k.starts_with("visual.") {
                return KeyScheme::OpenClip;
            }
            if k.starts_with("stem.conv1.conv.") || (k.starts_with("stages.") && k.contains(".conv1_1x1.")) {
                return KeyScheme::TimmClip;
            }
        }
        KeyScheme::TorchVision
    }
}

/// The canonical name of a stored tensor name, or `None` for entries that are not model tensors
/// (`num_batches_tracked`).
pub fn canonical_name(scheme: KeyScheme, stored: &str) -> Option<String> {
    if stored.ends_with("num_batches_tracked") {
        return None;
    }
    let key = stored.strip_prefix("module.").unwrap_or(stored);
    match scheme {
        KeyScheme::TorchVision => Some(match key.strip_prefix("linear.") {
            Some(rest) => format!("fc.{rest}"),
            None => key.to_string(),
        }),
        KeyScheme::Transformers => transformers_name(key),
        KeyScheme::OpenClip => key.strip_prefix("visual.").map(str::to_string),
        KeyScheme::TimmClip => timm_clip_name(key),
    }
}

/// timm's `ByobNet` names of a CLIP tower -> OpenCLIP's (the inverse of timm's `_convert_openai_clip`):
/// `stem.conv2.bn.bias` -> `bn2.bias`, `stages.1.0.conv2_kxk.conv.weight` -> `layer2.0.conv2.weight`,
/// `stages.1.0.shortcut.conv.bn.running_var` -> `layer2.0.downsample.1.running_var`,
/// `head.pos_embed` -> `attnpool.positional_embedding`, `head.q.weight` -> `attnpool.q_proj.weight`,
/// `head.proj.bias` -> `attnpool.c_proj.bias`.
fn timm_clip_name(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("stem.conv") {
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        return conv_or_bn_timm(rest, &format!("conv{i}"), &format!("bn{i}"));
    }
    if let Some(rest) = key.strip_prefix("head.") {
        if rest == "pos_embed" {
            return Some("attnpool.positional_embedding".to_string());
        }
        let (layer, param) = rest.split_once('.')?;
        let layer = match layer {
            "q" => "q_proj",
            "k" => "k_proj",
            "v" => "v_proj",
            "proj" => "c_proj",
            _ => return None,
        };
        return Some(format!("attnpool.{layer}.{param}"));
    }
    let rest = key.strip_prefix("stages.")?;
    let mut parts = rest.splitn(3, '.');
    let stage: usize = parts.next()?.parse().ok()?;
    let block: usize = parts.next()?.parse().ok()?;
    let (layer, rest) = parts.next()?.split_once('.')?;
    let (conv, bn, rest) = match layer {
        "conv1_1x1" => ("conv1", "bn1", rest),
        "conv2_kxk" => ("conv2", "bn2", rest),
        "conv3_1x1" => ("conv3", "bn3", rest),
        "shortcut" => ("downsample.0", "downsample.1", rest.strip_prefix("conv.")?),
        _ => return None,
    };
    Some(format!(
        "layer{}.{block}.{}",
        stage + 1,
        conv_or_bn_timm(rest, conv, bn)?
    ))
}

/// timm's `ConvNormAct` children: `conv.X` -> `{conv}.X`, `bn.X` -> `{bn}.X`.
fn conv_or_bn_timm(rest: &str, conv: &str, bn: &str) -> Option<String> {
    if let Some(r) = rest.strip_prefix("conv.") {
        Some(format!("{conv}.{r}"))
    } else {
        rest.strip_prefix("bn.").map(|r| format!("{bn}.{r}"))
    }
}

/// `resnet.embedder.embedder.convolution.weight` -> `conv1.weight`,
/// `resnet.encoder.stages.S.layers.B.layer.J.normalization.bias` -> `layer{S+1}.B.bn{J+1}.bias`,
/// `...layers.B.shortcut.convolution` -> `...B.downsample.0`, `classifier.1` -> `fc`.
fn transformers_name(key: &str) -> Option<String> {
    let key = key.strip_prefix("resnet.").unwrap_or(key);
    if let Some(rest) = key.strip_prefix("classifier.1.") {
        return Some(format!("fc.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("embedder.embedder.") {
        return Some(conv_or_bn(rest, "conv1", "bn1"));
    }
    let rest = key.strip_prefix("encoder.stages.")?;
    let mut parts = rest.splitn(4, '.');
    let stage: usize = parts.next()?.parse().ok()?;
    let _layers = parts.next().filter(|p| *p == "layers")?;
    let block: usize = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let prefix = format!("layer{}.{block}", stage + 1);
    if let Some(rest) = rest.strip_prefix("shortcut.") {
        return Some(format!("{prefix}.{}", conv_or_bn(rest, "downsample.0", "downsample.1")));
    }
    let rest = rest.strip_prefix("layer.")?;
    let (j, rest) = rest.split_once('.')?;
    let j: usize = j.parse().ok()?;
    Some(format!(
        "{prefix}.{}",
        conv_or_bn(rest, &format!("conv{}", j + 1), &format!("bn{}", j + 1))
    ))
}

/// `convolution.X` -> `{conv}.X`, `normalization.X` -> `{bn}.X`.
fn conv_or_bn(rest: &str, conv: &str, bn: &str) -> String {
    if let Some(r) = rest.strip_prefix("convolution.") {
        format!("{conv}.{r}")
    } else if let Some(r) = rest.strip_prefix("normalization.") {
        format!("{bn}.{r}")
    } else {
        rest.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers_names_map_to_torchvision() {
        let s = KeyScheme::Transformers;
        let cases = [
            ("resnet.embedder.embedder.convolution.weight", "conv1.weight"),
            ("resnet.embedder.embedder.normalization.running_var", "bn1.running_var"),
            (
                "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight",
                "layer1.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.0.layers.0.shortcut.normalization.bias",
                "layer1.0.downsample.1.bias",
            ),
            (
                "resnet.encoder.stages.3.layers.2.layer.2.convolution.weight",
                "layer4.2.conv3.weight",
            ),
            (
                "resnet.encoder.stages.1.layers.1.layer.0.normalization.weight",
                "layer2.1.bn1.weight",
            ),
            ("classifier.1.weight", "fc.weight"),
        ];
        for (stored, canonical) in cases {
            assert_eq!(canonical_name(s, stored).as_deref(), Some(canonical), "{stored}");
        }
    }

    #[test]
    fn timm_clip_names_map_to_open_clip() {
        let keys = [
            "stem.conv1.conv.weight",
            "stages.0.0.conv1_1x1.bn.weight",
            "head.pos_embed",
        ];
        let s = KeyScheme::detect(keys);
        assert_eq!(s, KeyScheme::TimmClip);
        let cases = [
            ("stem.conv3.bn.running_mean", "bn3.running_mean"),
            ("stem.conv1.conv.weight", "conv1.weight"),
            ("stages.3.2.conv3_1x1.conv.weight", "layer4.2.conv3.weight"),
            ("stages.1.0.shortcut.conv.conv.weight", "layer2.0.downsample.0.weight"),
            ("stages.1.0.shortcut.conv.bn.bias", "layer2.0.downsample.1.bias"),
            ("head.v.bias", "attnpool.v_proj.bias"),
            ("head.proj.weight", "attnpool.c_proj.weight"),
        ];
        for (stored, canonical) in cases {
            assert_eq!(canonical_name(s, stored).as_deref(), Some(canonical), "{stored}");
        }
        assert_eq!(canonical_name(s, "stages.0.0.conv1_1x1.bn.num_batches_tracked"), None);
        assert_eq!(canonical_name(s, "head.fc.weight"), None);
    }

    #[test]
    fn open_clip_keeps_the_image_tower() {
        let keys = [
            "logit_scale",
            "module.visual.conv1.weight",
            "transformer.resblocks.0.ln_1.weight",
        ];
        let s = KeyScheme::detect(keys);
        assert_eq!(s, KeyScheme::OpenClip);
        let q = canonical_name(s, "module.visual.attnpool.q_proj.weight");
        assert_eq!(q.as_deref(), Some("attnpool.q_proj.weight"));
        let d = canonical_name(s, "visual.layer1.0.downsample.0.weight");
        assert_eq!(d.as_deref(), Some("layer1.0.downsample.0.weight"));
        assert_eq!(canonical_name(s, "token_embedding.weight"), None);
        assert_eq!(canonical_name(s, "logit_scale"), None);
    }

    #[test]
    fn data_parallel_prefix_and_linear_head() {
        let s = KeyScheme::detect(["module.conv1.weight", "module.linear.bias"]);
        assert_eq!(s, KeyScheme::TorchVision);
        assert_eq!(canonical_name(s, "module.linear.bias").as_deref(), Some("fc.bias"));
        assert_eq!(canonical_name(s, "module.layer1.0.bn1.num_batches_tracked"), None);
    }
}
