//! Named members of the family, buildable by name (`by_name("resnet50d")`) or by function.

use crate::config::{BlockKind, ResNetConfig, StridePlacement};
use crate::error::{Error, Result};

const BASIC: BlockKind = BlockKind::Basic;
const BOTTLENECK: BlockKind = BlockKind::BOTTLENECK;

const fn resnext(groups: usize, base_width: usize) -> BlockKind {
    BlockKind::Bottleneck { groups, base_width }
}

/// Defines one public constructor per variant and the name table used by [`by_name`].
macro_rules! variants {
    ($($(#[$doc:meta])* $name:ident => $body:expr;)*) => {
        $(
            $(#[$doc])*
            #[doc = concat!("\n\nThe config `by_name(\"", stringify!($name), "\")` returns.")]
            pub fn $name() -> ResNetConfig { $body }
        )*
        /// Every name [`by_name`] accepts, in a stable order.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];
        const TABLE: &[(&str, fn() -> ResNetConfig)] = &[$((stringify!($name), $name)),*];
    };
}

variants! {
    /// torchvision ResNet-18 (basic blocks, 2-2-2-2).
    resnet18 => ResNetConfig::imagenet(BASIC, [2, 2, 2, 2]);
    resnet34 => ResNetConfig::imagenet(BASIC, [3, 4, 6, 3]);
    /// torchvision ResNet-50 ("v1.5": stride on the 3x3 conv).
    resnet50 => ResNetConfig::imagenet(BOTTLENECK, [3, 4, 6, 3]);
    resnet101 => ResNetConfig::imagenet(BOTTLENECK, [3, 4, 23, 3]);
    resnet152 => ResNetConfig::imagenet(BOTTLENECK, [3, 8, 36, 3]);
    resnext50_32x4d => ResNetConfig::imagenet(resnext(32, 4), [3, 4, 6, 3]);
    resnext101_32x4d => ResNetConfig::imagenet(resnext(32, 4), [3, 4, 23, 3]);
    resnext101_32x8d => ResNetConfig::imagenet(resnext(32, 8), [3, 4, 23, 3]);
    resnext101_32x16d => ResNetConfig::imagenet(resnext(32, 16), [3, 4, 23, 3]);
    resnext101_64x4d => ResNetConfig::imagenet(resnext(64, 4), [3, 4, 23, 3]);
    /// Wide ResNet-50-2: bottlenecks twice as wide inside.
    wide_resnet50_2 => ResNetConfig::imagenet(resnext(1, 128), [3, 4, 6, 3]);
    wide_resnet101_2 => ResNetConfig::imagenet(resnext(1, 128), [3, 4, 23, 3]);
    /// timm ResNet-18-D: deep stem and avg-down shortcuts.
    resnet18d => ResNetConfig::imagenet(BASIC, [2, 2, 2, 2]).d();
    resnet34d => ResNetConfig::imagenet(BASIC, [3, 4, 6, 3]).d();
    resnet26 => ResNetConfig::imagenet(BOTTLENECK, [2, 2, 2, 2]);
    resnet26d => ResNetConfig::imagenet(BOTTLENECK, [2, 2, 2, 2]).d();
    resnet50d => ResNetConfig::imagenet(BOTTLENECK, [3, 4, 6, 3]).d();
    resnet101d => ResNetConfig::imagenet(BOTTLENECK, [3, 4, 23, 3]).d();
    resnet152d => ResNetConfig::imagenet(BOTTLENECK, [3, 8, 36, 3]).d();
    /// timm ResNet-10-T: deep-tiered stem and avg-down shortcuts.
    resnet10t => ResNetConfig::imagenet(BASIC, [1, 1, 1, 1]).t();
    resnet14t => ResNetConfig::imagenet(BOTTLENECK, [1, 1, 1, 1]).t();
    resnet26t => ResNetConfig::imagenet(BOTTLENECK, [2, 2, 2, 2]).t();
    resnet50t => ResNetConfig::imagenet(BOTTLENECK, [3, 4, 6, 3]).t();
    /// The original layout of He et al. (and of Caffe/Keras weights): stride on the first 1x1 conv.
    resnet50_v1 => resnet50().with_stride_placement(StridePlacement::FirstOneByOne);
    resnet101_v1 => resnet101().with_stride_placement(StridePlacement::FirstOneByOne);
    resnet152_v1 => resnet152().with_stride_placement(StridePlacement::FirstOneByOne);
    /// CIFAR-10 ResNet-20 (3 stages of 3 basic blocks, option-A shortcuts).
    resnet20 => ResNetConfig::cifar(3);
    resnet32 => ResNetConfig::cifar(5);
    resnet44 => ResNetConfig::cifar(7);
    resnet56 => ResNetConfig::cifar(9);
    resnet110 => ResNetConfig::cifar(18);
    resnet1202 => ResNetConfig::cifar(200);
    /// OpenAI CLIP RN50's image tower: 1024-d embeddings of 224x224 inputs, 32 attention-pool heads.
    resnet50_clip => ResNetConfig::clip([3, 4, 6, 3], 64, 1024, 32, 224);
    /// CLIP RN101: 512-d embeddings at 224x224.
    resnet101_clip => ResNetConfig::clip([3, 4, 23, 3], 64, 512, 32, 224);
    /// CLIP RN50x4: width 80, 640-d embeddings at 288x288.
    resnet50x4_clip => ResNetConfig::clip([4, 6, 10, 6], 80, 640, 40, 288);
    /// CLIP RN50x16: width 96, 768-d embeddings at 384x384.
    resnet50x16_clip => ResNetConfig::clip([6, 8, 18, 8], 96, 768, 48, 384);
    /// CLIP RN50x64: width 128, 1024-d embeddings at 448x448.
    resnet50x64_clip => ResNetConfig::clip([3, 15, 36, 10], 128, 1024, 64, 448);
}

/// The config of a named variant. A timm pretrained tag (`resnet50.a1_in1k`) is accepted and ignored.
pub fn by_name(name: &str) -> Result<ResNetConfig> {
    let arch = name.split_once('.').map_or(name, |(arch, _tag)| arch);
    TABLE
        .iter()
        .find(|(n, _)| *n == arch)
        .map(|(_, build)| build())
        .ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            suggestions: suggest(arch, NAMES.iter().copied()),
        })
}

/// The names of `known` closest to `name` (a misspelling): at most three, within an edit distance of a
/// third of the name's length, closest first.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let limit = (name.chars().count() / 3).max(1);
    let mut close: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .collect();
    close.sort();
    close.dedup();
    close.into_iter().take(3).map(|(_, k)| k.to_string()).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_names_get_suggestions() {
        assert_eq!(suggest("resnt50", NAMES.iter().copied())[0], "resnet50");
        assert_eq!(suggest("resnet50", NAMES.iter().copied())[0], "resnet50");
        assert!(suggest("vgg16", NAMES.iter().copied()).is_empty());
        let err = by_name("resnet5O").unwrap_err().to_string();
        assert!(err.contains("did you mean `resnet50`"), "{err}");
    }
}
