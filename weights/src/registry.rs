//! The built-in table of pretrained checkpoints, named the way timm names them.
//!
//! `data/registry.json` is generated from timm itself by `scripts/gen_registry.py`: every ResNet-family
//! checkpoint on the Hub under `timm/` with its `pretrained_cfg`, plus `microsoft/resnet-*`.
//! `resnet50` means timm's default tag for that architecture (`resnet50.a1_in1k`).

use serde::Deserialize;

use crate::preprocess::{CropMode, Interpolation, PreprocessConfig};

const REGISTRY_JSON: &str = include_str!("../data/registry.json");

/// One pretrained checkpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    /// `resnet50.a1_in1k`, or a Hub repo id for non-timm entries (`microsoft/resnet-50`).
    pub name: String,
    /// Architecture name understood by the model crate (`resnet50`).
    pub arch: String,
    pub tag: Option<String>,
    /// Whether this is what the bare architecture name means.
    #[serde(default)]
    pub default: bool,
    pub hf_hub_id: String,
    pub num_classes: usize,
    pub input_size: [usize; 3],
    pub crop_pct: f64,
    #[serde(default)]
    pub crop_mode: Option<String>,
    pub interpolation: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub label_set: Option<String>,
}

impl Entry {
    /// The eval preprocessing these weights were evaluated with.
    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig {
            input_size: self.input_size,
            crop_pct: self.crop_pct,
            crop_mode: match self.crop_mode.as_deref() {
                Some("squash") => CropMode::Squash,
                _ => CropMode::Center,
            },
            interpolation: match self.interpolation.as_str() {
                "bicubic" => Interpolation::Bicubic,
                "nearest" => Interpolation::Nearest,
                _ => Interpolation::Bilinear,
            },
            mean: self.mean,
            std: self.std,
        }
    }

    /// True for HF transformers checkpoints (`microsoft/resnet-50`), whose keys need renaming.
    pub fn is_transformers(&self) -> bool {
        !self.hf_hub_id.starts_with("timm/")
    }
}

/// Every entry of the built-in table.
pub fn entries() -> Vec<Entry> {
    serde_json::from_str(REGISTRY_JSON).expect("data/registry.json is generated and valid")
}

/// Looks up `name`: a full name (`resnet50.tv_in1k`), a bare architecture (its default tag), or a Hub id.
pub fn find(name: &str) -> Option<Entry> {
    let all = entries();
    let by_name = all.iter().find(|e| e.name == name || e.hf_hub_id == name);
    let by_arch = || all.iter().find(|e| e.arch == name && e.default && !e.is_transformers());
    by_name.or_else(by_arch).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_means_timms_default_tag() {
        assert_eq!(find("resnet50").unwrap().name, "resnet50.a1_in1k");
        let tv = find("resnet50.tv_in1k").unwrap();
        assert_eq!(tv.hf_hub_id, "timm/resnet50.tv_in1k");
        let p = tv.preprocess();
        assert_eq!(
            (p.crop_pct, p.interpolation, p.resize_size()),
            (0.875, Interpolation::Bilinear, (256, 256))
        );
        assert!(find("resnet50.tv2_in1k").is_some());
        let ms = find("microsoft/resnet-50").unwrap();
        assert!(ms.is_transformers());
        assert_eq!(ms.arch, "resnet50");
        assert!(find("resnet51").is_none());
    }

    #[test]
    fn every_entry_has_sane_preprocessing() {
        for e in entries() {
            let p = e.preprocess();
            assert!(p.crop_pct > 0.5 && p.crop_pct <= 1.0, "{}", e.name);
            assert!(p.std.iter().all(|s| *s > 0.0), "{}", e.name);
        }
    }
}
