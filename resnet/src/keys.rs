//! Checkpoint key schemes for ResNets, mapped to the canonical torchvision/timm names.
//!
//! The canonical names are what the modules of this crate ask for (`conv1.weight`,
//! `layer1.0.downsample.0.weight`, `fc.bias`). Other sources name the same tensors differently:
//! `nn.DataParallel` adds `module.`, CIFAR reference code calls the head `linear`, and HF transformers
//! uses its own nesting. [`canonical_name`] translates one stored name.

/// The naming convention a checkpoint uses, detected from its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScheme {
    /// torchvision / timm names, possibly with a `module.` prefix or a `linear` head.
    TorchVision,
    /// HF transformers `ResNetForImageClassification`.
    Transformers,
}

impl KeyScheme {
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let transformers = keys.into_iter().any(|k| k.starts_with("resnet.embedder.") || k.starts_with("embedder."));
        if transformers { KeyScheme::Transformers } else { KeyScheme::TorchVision }
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
    Some(format!("{prefix}.{}", conv_or_bn(rest, &format!("conv{}", j + 1), &format!("bn{}", j + 1))))
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
            ("resnet.encoder.stages.0.layers.0.shortcut.convolution.weight", "layer1.0.downsample.0.weight"),
            ("resnet.encoder.stages.0.layers.0.shortcut.normalization.bias", "layer1.0.downsample.1.bias"),
            ("resnet.encoder.stages.3.layers.2.layer.2.convolution.weight", "layer4.2.conv3.weight"),
            ("resnet.encoder.stages.1.layers.1.layer.0.normalization.weight", "layer2.1.bn1.weight"),
            ("classifier.1.weight", "fc.weight"),
        ];
        for (stored, canonical) in cases {
            assert_eq!(canonical_name(s, stored).as_deref(), Some(canonical), "{stored}");
        }
    }

    #[test]
    fn data_parallel_prefix_and_linear_head() {
        let s = KeyScheme::detect(["module.conv1.weight", "module.linear.bias"]);
        assert_eq!(s, KeyScheme::TorchVision);
        assert_eq!(canonical_name(s, "module.linear.bias").as_deref(), Some("fc.bias"));
        assert_eq!(canonical_name(s, "module.layer1.0.bn1.num_batches_tracked"), None);
    }
}
