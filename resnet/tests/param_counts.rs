//! Parameter counts of every named variant against torchvision's and timm's own counts
//! (`tests/fixtures/param_counts.json`, written by `scripts/gen_param_counts.py`), and the timm
//! variants' knobs against the modules timm builds (`timm_archs.json`).

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use resnet::{BlockKind, BnMode, ResNet, ShortcutKind, StemKind};

fn count(name: &str) -> usize {
    let cfg = resnet::variants::by_name(name).unwrap();
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    ResNet::load(&cfg, vb, BnMode::Keep).unwrap().num_params()
}

#[test]
fn published_counts_of_torchvision_models() {
    // The numbers torchvision's documentation publishes.
    let published = [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("resnext50_32x4d", 25_028_904),
        ("resnext101_32x8d", 88_791_336),
        ("resnext101_64x4d", 83_455_272),
        ("wide_resnet50_2", 68_883_240),
        ("wide_resnet101_2", 126_886_696),
        ("resnet20", 269_722),
        ("resnet56", 853_018),
    ];
    for (name, expected) in published {
        assert_eq!(count(name), expected, "{name}");
    }
}

#[test]
fn counts_measured_from_timm_and_torchvision() {
    let text = std::fs::read_to_string(common::fixture("param_counts.json")).unwrap();
    let counts: std::collections::BTreeMap<String, usize> = serde_json::from_str(&text).unwrap();
    assert!(counts.len() >= 20, "fixture lists only {} models", counts.len());
    for (name, expected) in counts {
        let arch = name.trim_start_matches("timm/");
        assert_eq!(count(arch), expected, "{name}");
    }
}

#[test]
fn v1_layout_moves_the_stride_but_keeps_the_parameters() {
    assert_eq!(count("resnet50_v1"), 25_557_032);
    assert_eq!(count("resnet101_v1"), 44_549_160);
    assert_eq!(count("resnet152_v1"), 60_192_808);
}

#[test]
fn timm_knobs_match_timm() {
    let text = std::fs::read_to_string(common::fixture("timm_archs.json")).unwrap();
    let archs: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    for (name, arch) in archs {
        let cfg = resnet::variants::by_name(&name).unwrap();
        let layers: Vec<usize> = serde_json::from_value(arch["layers"].clone()).unwrap();
        assert_eq!(cfg.depths, layers, "{name} depths");
        let width = arch["stem_width"].as_u64().unwrap() as usize;
        let stem = match arch["stem_type"].as_str().unwrap() {
            "classic" => StemKind::Classic { width: 64 },
            "deep" => StemKind::Deep { width },
            "deep_tiered" => StemKind::DeepTiered { width },
            other => panic!("{name}: unknown stem {other}"),
        };
        assert_eq!(cfg.stem, stem, "{name} stem");
        let avg_down = arch["avg_down"].as_bool().unwrap();
        assert_eq!(
            cfg.shortcut == ShortcutKind::AvgDownProjection,
            avg_down,
            "{name} shortcut"
        );
        let block_is_basic = arch["block"] == "basic";
        assert_eq!(cfg.block == BlockKind::Basic, block_is_basic, "{name} block");
    }
}

#[test]
fn every_variant_builds_by_name() {
    for name in resnet::variants::NAMES {
        let cfg = resnet::variants::by_name(name).unwrap();
        cfg.validate().unwrap();
    }
    assert!(resnet::variants::by_name("resnet50.a1_in1k").is_ok());
    let err = resnet::variants::by_name("resnet51").unwrap_err().to_string();
    assert!(err.contains("resnet51") && err.contains("resnet50"), "{err}");
}

/// Zero tensors without memory (one value broadcast to each shape): RN50x64's tower is 420M parameters.
struct BroadcastZeros;

impl candle_nn::var_builder::SimpleBackend for BroadcastZeros {
    fn get(
        &self,
        s: candle_core::Shape,
        _: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<candle_core::Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn count_without_memory(name: &str) -> usize {
    let cfg = resnet::variants::by_name(name).unwrap();
    let vb = VarBuilder::from_backend(Box::new(BroadcastZeros), DType::F32, Device::Cpu);
    ResNet::load(&cfg, vb, BnMode::Keep).unwrap().num_params()
}

/// CLIP's image towers against OpenCLIP's `ModifiedResNet` and timm's `resnet*_clip` (equal counts), and their
/// knobs against OpenCLIP's model configs (`clip_param_counts.json`, written by `scripts/gen_clip_fixtures.py`).
#[test]
fn clip_towers_match_open_clip_and_timm() {
    let text = std::fs::read_to_string(common::fixture("clip_param_counts.json")).unwrap();
    let towers: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(towers.len(), 5);
    for (name, t) in towers {
        let int = |k: &str| t[k].as_u64().unwrap() as usize;
        assert_eq!(count_without_memory(&name), int("params"), "{name}");
        let cfg = resnet::variants::by_name(&name).unwrap();
        let layers: Vec<usize> = serde_json::from_value(t["layers"].clone()).unwrap();
        assert_eq!(cfg.depths, layers, "{name}");
        assert_eq!(cfg.stem, StemKind::Clip { width: int("width") }, "{name}");
        assert_eq!(cfg.num_classes, int("embed_dim"), "{name}");
        let grid = int("image_size") / 32;
        assert_eq!(
            cfg.head,
            resnet::HeadKind::AttentionPool {
                num_heads: int("heads"),
                grid
            },
            "{name}"
        );
        assert_eq!(cfg.fixed_input_size(), Some(int("image_size")), "{name}");
    }
}
