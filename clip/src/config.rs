//! The shape of a CLIP model: its ResNet image tower, its text transformer, the shared embedding size.
//!
//! [`ClipConfig::by_name`] knows OpenAI's five ResNet models; [`ClipConfig::from_open_clip_json`] reads the
//! `open_clip_config.json` a model repository ships (or one of OpenCLIP's `model_configs/*.json`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weights::{CropMode, Interpolation, PreprocessConfig};

use crate::error::{invalid, Error, Result};
use resnet::ResNetConfig;

/// The nonlinearity inside the text transformer's MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x Φ(x)`, PyTorch's exact `nn.GELU()`: OpenCLIP's default for the models it trains.
    #[default]
    Gelu,
    /// `x sigmoid(1.702 x)`: what OpenAI trained its CLIP models with (OpenCLIP's `*-quickgelu` configs).
    QuickGelu,
}

/// The text tower: a causal transformer over byte-level BPE tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Tokens per text, start and end tokens included (77).
    pub context_length: usize,
    /// Token ids (49408: 256 bytes, the same with `</w>`, 48894 merges, start and end).
    pub vocab_size: usize,
    /// Channels of the residual stream.
    pub width: usize,
    /// Attention heads per layer (`width / 64` in OpenAI's models).
    pub heads: usize,
    /// Residual attention blocks.
    pub layers: usize,
    /// Hidden width of each MLP over `width`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub activation: Activation,
}

fn default_mlp_ratio() -> f64 {
    4.0
}

impl TextConfig {
    /// OpenAI's text tower: 77 tokens of a 49408-token vocabulary, 12 layers of `width / 64` heads, QuickGELU.
    pub fn openai(width: usize) -> Self {
        Self {
            context_length: 77,
            vocab_size: 49408,
            width,
            heads: width / 64,
            layers: 12,
            mlp_ratio: 4.0,
            activation: Activation::QuickGelu,
        }
    }

    /// Hidden channels of the MLPs (`int(width * mlp_ratio)`, as OpenCLIP rounds).
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }

    /// Checks that the sizes fit together (heads divide the width, a context holds start and end tokens, ...).
    pub fn validate(&self) -> Result<()> {
        let ok = self.context_length >= 2
            && self.vocab_size >= 2
            && self.width > 0
            && self.layers > 0
            && self.heads > 0
            && self.width.is_multiple_of(self.heads)
            && self.mlp_ratio.is_finite()
            && self.mlp_width() > 0;
        if ok {
            Ok(())
        } else {
            Err(invalid(format!("invalid CLIP text config {self:?}")))
        }
    }
}

/// A whole CLIP model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Size of the joint embedding both towers project to.
    pub embed_dim: usize,
    /// The image tower (its `num_classes` is `embed_dim`).
    pub vision: ResNetConfig,
    pub text: TextConfig,
}

/// The models [`ClipConfig::by_name`] knows.
pub const NAMES: &[&str] = &[
    "resnet50_clip",
    "resnet101_clip",
    "resnet50x4_clip",
    "resnet50x16_clip",
    "resnet50x64_clip",
];

impl ClipConfig {
    /// OpenAI's CLIP ResNets by zoo's name (timm's: `resnet50_clip`, ..., a pretrained tag such as `.openai` is
    /// ignored) or OpenCLIP's (`RN50`, `RN50-quickgelu`, ...): the image tower of [`resnet::variants`] and
    /// OpenAI's text tower with QuickGELU.
    pub fn by_name(name: &str) -> Result<Self> {
        let arch = name.split_once('.').map_or(name, |(a, _)| a);
        let arch = match arch.trim_end_matches("-quickgelu") {
            "RN50" => "resnet50_clip",
            "RN101" => "resnet101_clip",
            "RN50x4" => "resnet50x4_clip",
            "RN50x16" => "resnet50x16_clip",
            "RN50x64" => "resnet50x64_clip",
            other => other,
        };
        let text_width = match arch {
            "resnet50_clip" | "resnet101_clip" => 512,
            "resnet50x4_clip" => 640,
            "resnet50x16_clip" => 768,
            "resnet50x64_clip" => 1024,
            _ => {
                return Err(invalid(format!(
                    "unknown CLIP model `{name}`; known: {}",
                    NAMES.join(", ")
                )))
            }
        };
        let vision = resnet::variants::by_name(arch)?;
        Ok(Self {
            embed_dim: vision.num_classes,
            vision,
            text: TextConfig::openai(text_width),
        })
    }

    /// Reads OpenCLIP's model config: an `open_clip_config.json` (`{"model_cfg": {...}, ...}`) or a bare model
    /// config (`{"embed_dim": 1024, "vision_cfg": {...}, "text_cfg": {...}}`). Only ResNet image towers with
    /// OpenCLIP's standard text tower are accepted; anything else is an error naming the setting.
    pub fn from_open_clip_json(json: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(json).map_err(|source| Error::Json {
            what: "OpenCLIP config".to_string(),
            source,
        })?;
        let cfg = root.get("model_cfg").unwrap_or(&root);
        // Sizes past a million are a corrupt file, not a model (and would overflow the arithmetic below).
        let uint = |v: &Value, key: &str, default: usize| -> Result<usize> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_u64().filter(|&n| n <= 1 << 20).map(|n| n as usize).ok_or_else(|| {
                    invalid(format!(
                        "OpenCLIP config: `{key}` must be a whole number up to 2^20, got {x}"
                    ))
                }),
            }
        };
        let embed_dim = uint(cfg, "embed_dim", 0)?;
        let quick_gelu = cfg.get("quick_gelu").and_then(Value::as_bool).unwrap_or(false);
        for key in ["init_logit_bias", "custom_text", "multimodal_cfg"] {
            if cfg.get(key).is_some_and(|v| !v.is_null() && v != &Value::Bool(false)) {
                return Err(invalid(format!(
                    "OpenCLIP config: `{key}` is not supported (CLIP ResNets only)"
                )));
            }
        }
        let empty = Value::Object(Default::default());
        let v = cfg.get("vision_cfg").unwrap_or(&empty);
        let t = cfg.get("text_cfg").unwrap_or(&empty);
        if v.get("timm_model_name").is_some_and(|x| !x.is_null()) {
            return Err(invalid(
                "OpenCLIP config: timm image towers (`timm_model_name`) are not supported",
            ));
        }
        let layers: Vec<usize> = match v.get("layers") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|n| n.min(1 << 20) as usize)
                .collect(),
            _ => {
                return Err(invalid(
                    "OpenCLIP config: `vision_cfg.layers` is not a list of four stages (a ViT?)",
                ))
            }
        };
        let layers: [usize; 4] = layers
            .try_into()
            .map_err(|l| invalid(format!("OpenCLIP config: a ResNet image tower has 4 stages, got {l:?}")))?;
        let image_size = match v.get("image_size") {
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => a[0].as_u64().unwrap_or(0).min(1 << 20) as usize,
            Some(Value::Array(a)) => return Err(invalid(format!("OpenCLIP config: non-square image size {a:?}"))),
            _ => uint(v, "image_size", 224)?,
        };
        let width = uint(v, "width", 64)?;
        let head_width = uint(v, "head_width", 64)?.max(1);
        let vision = ResNetConfig::clip(layers, width, embed_dim, width * 32 / head_width, image_size);

        if t.get("hf_model_name").is_some_and(|x| !x.is_null()) {
            return Err(invalid(
                "OpenCLIP config: Hugging Face text towers (`hf_model_name`) are not supported",
            ));
        }
        // Settings that change what the standard text tower computes, with the only values supported.
        let standard = [
            ("pool_type", Value::from("argmax")),
            ("proj_type", Value::from("linear")),
            ("proj_bias", Value::Bool(false)),
            ("no_causal_mask", Value::Bool(false)),
            ("embed_cls", Value::Bool(false)),
            ("final_ln_after_pool", Value::Bool(false)),
        ];
        for (key, want) in standard {
            if let Some(got) = t.get(key).filter(|x| !x.is_null() && **x != want) {
                return Err(invalid(format!(
                    "OpenCLIP config: text_cfg.{key} = {got} is not supported (only {want})"
                )));
            }
        }
        for key in ["ls_init_value", "act_kwargs", "norm_kwargs", "block_type"] {
            if t.get(key).is_some_and(|x| !x.is_null()) {
                return Err(invalid(format!("OpenCLIP config: text_cfg.{key} is not supported")));
            }
        }
        let text = TextConfig {
            context_length: uint(t, "context_length", 77)?,
            vocab_size: uint(t, "vocab_size", 49408)?,
            width: uint(t, "width", 512)?,
            heads: uint(t, "heads", 8)?,
            layers: uint(t, "layers", 12)?,
            mlp_ratio: t.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0),
            activation: if quick_gelu {
                Activation::QuickGelu
            } else {
                Activation::Gelu
            },
        };
        let config = Self {
            embed_dim,
            vision,
            text,
        };
        config.validate()?;
        Ok(config)
    }

    /// The config as OpenCLIP writes it into a repo's `open_clip_config.json` (`{"model_cfg": ...,
    /// "preprocess_cfg": ...}`), the inverse of [`ClipConfig::from_open_clip_json`]. Only CLIP's own ResNet
    /// shape (three-conv stem, widths doubling from the stem's, attention pool) can be written.
    pub fn to_open_clip_json(&self, preprocess: &PreprocessConfig) -> Result<Value> {
        let v = &self.vision;
        let expected = match (v.stem, v.head, <[usize; 4]>::try_from(v.depths.as_slice())) {
            (
                resnet::config::StemKind::Clip { width },
                resnet::config::HeadKind::AttentionPool { num_heads, grid },
                Ok(layers),
            ) => {
                let c = ResNetConfig::clip(layers, width, self.embed_dim, num_heads, grid * 32);
                (c == *v && num_heads > 0 && (width * 32).is_multiple_of(num_heads))
                    .then_some((layers, width, num_heads, grid))
            }
            _ => None,
        };
        let Some((layers, width, num_heads, grid)) = expected else {
            return Err(invalid(
                "only CLIP's own ResNet image towers can be written as an OpenCLIP config",
            ));
        };
        let t = &self.text;
        Ok(serde_json::json!({
            "model_cfg": {
                "embed_dim": self.embed_dim,
                "quick_gelu": t.activation == Activation::QuickGelu,
                "vision_cfg": {"image_size": grid * 32, "layers": layers, "width": width, "head_width": width * 32 / num_heads},
                "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                             "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio},
            },
            "preprocess_cfg": {
                "mean": preprocess.mean,
                "std": preprocess.std,
                "interpolation": match preprocess.interpolation {
                    Interpolation::Bilinear => "bilinear",
                    _ => "bicubic",
                },
                "resize_mode": "shortest",
            },
        }))
    }

    /// Checks both towers and that they meet in one embedding size.
    pub fn validate(&self) -> Result<()> {
        self.vision
            .validate()
            .map_err(|e| invalid(format!("CLIP image tower: {e}")))?;
        self.text.validate()?;
        if self.embed_dim == 0 || self.vision.num_classes != self.embed_dim {
            return Err(invalid(format!(
                "the image tower embeds to {} values but the model's embedding has {}",
                self.vision.num_classes, self.embed_dim
            )));
        }
        Ok(())
    }

    /// The image side the model takes (224 for RN50, 288 for RN50x4, ...).
    pub fn image_size(&self) -> usize {
        self.vision.fixed_input_size().unwrap_or(224)
    }

    /// OpenAI's preprocessing: bicubic resize of the short side to the input size, centre crop, CLIP's mean/std.
    pub fn preprocess(&self) -> PreprocessConfig {
        let size = self.image_size();
        PreprocessConfig {
            input_size: [3, size, size],
            crop_pct: 1.0,
            crop_mode: CropMode::Center,
            interpolation: Interpolation::Bicubic,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
        }
    }
}

/// Per-channel mean of OpenAI's CLIP training images (RGB, 0..1 units).
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// Per-channel standard deviation of OpenAI's CLIP training images.
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_open_clip_names_agree() {
        for (ours, theirs) in NAMES
            .iter()
            .zip(["RN50", "RN101-quickgelu", "RN50x4", "RN50x16", "RN50x64.openai"])
        {
            assert_eq!(ClipConfig::by_name(ours).unwrap(), ClipConfig::by_name(theirs).unwrap());
            ClipConfig::by_name(ours).unwrap().validate().unwrap();
        }
        assert!(ClipConfig::by_name("resnet50")
            .unwrap_err()
            .to_string()
            .contains("resnet50_clip"));
    }

    #[test]
    fn open_clip_json_round_trips() {
        for name in NAMES {
            let c = ClipConfig::by_name(name).unwrap();
            let json = c.to_open_clip_json(&c.preprocess()).unwrap();
            assert_eq!(ClipConfig::from_open_clip_json(&json.to_string()).unwrap(), c, "{name}");
        }
        let mut not_clip = ClipConfig::by_name("resnet50_clip").unwrap();
        not_clip.vision = resnet::variants::by_name("resnet50").unwrap();
        assert!(not_clip.to_open_clip_json(&not_clip.preprocess()).is_err());
    }

    #[test]
    fn open_clip_json() {
        let json = r#"{"model_cfg": {"embed_dim": 1024, "quick_gelu": true,
            "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "patch_size": null},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}},
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073]}}"#;
        assert_eq!(
            ClipConfig::from_open_clip_json(json).unwrap(),
            ClipConfig::by_name("resnet50_clip").unwrap()
        );
        let vit =
            r#"{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}}"#;
        assert!(ClipConfig::from_open_clip_json(vit)
            .unwrap_err()
            .to_string()
            .contains("ViT"));
        let huge = r#"{"embed_dim": 512, "vision_cfg": {"layers": [3, 4, 6, 3], "width": 1e30}}"#;
        assert!(ClipConfig::from_open_clip_json(huge).is_err());
        let huge = r#"{"embed_dim": 512, "vision_cfg": {"layers": [3, 4, 6, 3], "width": 9007199254740993}}"#;
        assert!(ClipConfig::from_open_clip_json(huge).is_err());
        let tiny = r#"{"embed_dim": 512, "vision_cfg": {"layers": [3, 4, 6, 3], "image_size": 16}}"#;
        assert!(ClipConfig::from_open_clip_json(tiny).is_err());
        let siglip = r#"{"embed_dim": 512, "init_logit_bias": -10, "vision_cfg": {"layers": [3, 4, 6, 3]}}"#;
        assert!(ClipConfig::from_open_clip_json(siglip)
            .unwrap_err()
            .to_string()
            .contains("init_logit_bias"));
        assert!(ClipConfig::from_open_clip_json("{").is_err());
    }
}
