//! CLIP's image towers (OpenCLIP's `ModifiedResNet`) against OpenCLIP with random weights, folded and unfolded,
//! and timm's names for them. Fixtures: `tests/fixtures/golden/clip_*.safetensors`, made by
//! `scripts/gen_clip_fixtures.py`.

mod common;

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use resnet::keys::{canonical_name, KeyScheme};
use resnet::{BnMode, HeadKind, ResNet, ResNetConfig};
use serde_json::Value;

struct Case {
    cfg: ResNetConfig,
    meta: Value,
    weights: HashMap<String, Tensor>,
    refs: HashMap<String, Tensor>,
}

fn tower_config(meta: &Value) -> ResNetConfig {
    let int = |k: &str| meta[k].as_u64().unwrap() as usize;
    let layers: Vec<usize> = serde_json::from_value(meta["layers"].clone()).unwrap();
    let layers = [layers[0], layers[1], layers[2], layers[3]];
    ResNetConfig::clip(layers, int("width"), int("output_dim"), int("heads"), int("image_size"))
}

fn case(name: &str) -> Case {
    let (tensors, meta) = common::load(&common::fixture(&format!("golden/{name}.safetensors")));
    let meta: Value = serde_json::from_str(&meta["config"]).unwrap();
    let mut weights = HashMap::new();
    let mut refs = HashMap::new();
    for (k, v) in tensors {
        // Weights and inputs are stored in float16 (the references were computed from those exact values).
        let v = v.to_dtype(DType::F32).unwrap();
        match k.strip_prefix("model.") {
            Some(w) => weights.insert(w.to_string(), v),
            None => refs.insert(k, v),
        };
    }
    Case {
        cfg: tower_config(&meta),
        meta,
        weights,
        refs,
    }
}

/// Runs `name` folded and unfolded against every stored output; returns the worst error relative to the scale
/// of each output, and the worst absolute error of the embedding against PyTorch's float64 result.
fn check(name: &str) -> (f32, f32) {
    let c = case(name);
    let input = &c.refs["input"];
    let (mut worst, mut worst_f64) = (0f32, 0f32);
    for mode in [BnMode::Fold, BnMode::Keep] {
        let vb = VarBuilder::from_tensors(c.weights.clone(), DType::F32, &Device::Cpu);
        let model = ResNet::load(&c.cfg, vb, mode).unwrap();
        let mut outputs = vec![("embedding".to_string(), model.forward(input).unwrap())];
        outputs.push(("stem".to_string(), model.stem().forward_t(input, false).unwrap()));
        for (i, s) in model.forward_stages(input).unwrap().into_iter().enumerate() {
            outputs.push((format!("stage{}", i + 1), s));
        }
        let features = model.forward_features(input).unwrap();
        outputs.push(("stage4".to_string(), features.clone()));
        outputs.push(("embedding".to_string(), model.forward_head(&features).unwrap()));
        let mut checked = 0;
        for (key, got) in outputs {
            let Some(want) = c.refs.get(&key) else {
                continue;
            };
            let scale = common::max_abs(want).max(1.0);
            let err = common::max_abs_diff(&got, want);
            assert!(
                err <= 1e-4 * scale,
                "{name} {mode:?} {key}: max abs error {err:e} (scale {scale})"
            );
            worst = worst.max(err / scale);
            checked += 1;
        }
        assert!(checked >= 3, "{name}: only {checked} outputs compared");
        let got = model.forward(input).unwrap();
        worst_f64 = worst_f64.max(common::max_abs_diff(
            &got,
            &c.refs["embedding_f64"].to_dtype(DType::F32).unwrap(),
        ));
    }
    let pytorch_f32 = common::max_abs_diff(
        &c.refs["embedding"],
        &c.refs["embedding_f64"].to_dtype(DType::F32).unwrap(),
    );
    println!("{name}: max error vs PyTorch f32 {worst:.2e} (relative to each output's scale)");
    println!("    embedding vs float64: ours {worst_f64:.2e}, PyTorch f32 {pytorch_f32:.2e}");
    (worst, worst_f64)
}

#[test]
fn reduced_tower_matches_open_clip() {
    check("clip_rn");
}

#[test]
fn rn50x4_shape_odd_width_and_grid() {
    check("clip_rn_x4");
}

#[test]
fn clip_geometry_224_input_7x7_grid() {
    check("clip_rn_224");
}

/// The knobs OpenCLIP's fixture was built with map onto the family's typed knobs.
#[test]
fn clip_config_is_a_family_member() {
    let c = case("clip_rn");
    assert_eq!(c.cfg.head, HeadKind::AttentionPool { num_heads: 2, grid: 2 });
    assert_eq!(c.cfg.fixed_input_size(), Some(64));
    assert_eq!(c.cfg.num_features(), 4 * 32);
    assert_eq!(c.meta["image_size"], 64);
}

/// timm's names of every tensor (from timm's own converter, on a tower timm loads strictly and which computes
/// OpenCLIP's embedding) map back to OpenCLIP's, and they are exactly the names our model asks for.
#[test]
fn timm_names_map_to_canonical_names() {
    let c = case("clip_rn");
    let pairs: HashMap<String, String> = serde_json::from_value(c.meta["timm_keys"].clone()).unwrap();
    assert!(pairs.len() > 100, "{} pairs", pairs.len());
    assert_eq!(KeyScheme::detect(pairs.keys().map(String::as_str)), KeyScheme::TimmClip);
    for (timm, open_clip) in &pairs {
        assert_eq!(
            canonical_name(KeyScheme::TimmClip, timm).as_deref(),
            Some(open_clip.as_str()),
            "{timm}"
        );
    }
    // The names the twin's config loads, recorded by a VarMap.
    let twin = tower_config(&c.meta["timm_keys_config"]);
    let varmap = VarMap::new();
    ResNet::load(
        &twin,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        BnMode::Keep,
    )
    .unwrap();
    let asked: BTreeSet<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    let mapped: BTreeSet<String> = pairs.values().cloned().collect();
    assert_eq!(asked, mapped);
}

/// OpenCLIP's whole-model layout: the image tower under `visual.`, loaded through the key scheme.
#[test]
fn open_clip_layout_loads_through_the_key_scheme() {
    let c = case("clip_rn");
    let mut stored: HashMap<String, Tensor> = c
        .weights
        .iter()
        .map(|(k, v)| (format!("visual.{k}"), v.clone()))
        .collect();
    stored.insert("logit_scale".to_string(), Tensor::new(4.6f32, &Device::Cpu).unwrap());
    stored.insert(
        "token_embedding.weight".to_string(),
        Tensor::zeros((10, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    let scheme = KeyScheme::detect(stored.keys().map(String::as_str));
    assert_eq!(scheme, KeyScheme::OpenClip);
    let canonical: HashMap<String, Tensor> = stored
        .into_iter()
        .filter_map(|(k, v)| canonical_name(scheme, &k).map(|k| (k, v)))
        .collect();
    assert_eq!(canonical.len(), c.weights.len());
    let model = ResNet::new(&c.cfg, VarBuilder::from_tensors(canonical, DType::F32, &Device::Cpu)).unwrap();
    let err = common::max_abs_diff(&model.forward(&c.refs["input"]).unwrap(), &c.refs["embedding"]);
    assert!(err < 1e-4 * common::max_abs(&c.refs["embedding"]).max(1.0), "{err}");
}

/// The positional embedding fixes the input size: any other size is an error, not a panic.
#[test]
fn wrong_input_size_is_an_error() {
    let c = case("clip_rn");
    let model = ResNet::new(&c.cfg, VarBuilder::from_tensors(c.weights, DType::F32, &Device::Cpu)).unwrap();
    for side in [96, 32] {
        let x = Tensor::zeros((1, 3, side, side), DType::F32, &Device::Cpu).unwrap();
        let err = model.forward(&x).unwrap_err().to_string();
        assert!(err.contains("attention pool") && err.contains("64 px"), "{err}");
    }
    // The trunk itself takes any size.
    let x = Tensor::zeros((1, 3, 96, 96), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.forward_features(&x).unwrap().dims(), &[1, 128, 3, 3]);
}

/// The new knobs serialize like the old ones, and configs written before them still load (linear head).
#[test]
fn config_json_round_trip_and_old_json() {
    for name in ["resnet50_clip", "resnet50x4_clip"] {
        let cfg = resnet::variants::by_name(name).unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""head":{"kind":"attention_pool""#), "{json}");
        assert!(
            json.contains(r#""stem":{"kind":"clip""#) && json.contains(r#""avg_pool_projection""#),
            "{json}"
        );
        assert!(json.contains(r#""anti_alias":"avg_pool""#), "{json}");
        assert_eq!(serde_json::from_str::<ResNetConfig>(&json).unwrap(), cfg);
    }
    let old = r#"{"block":{"kind":"bottleneck","groups":1,"base_width":64},"stem":{"kind":"classic","width":64},
        "shortcut":"projection","depths":[3,4,6,3],"channels":[64,128,256,512],"num_classes":1000}"#;
    let cfg: ResNetConfig = serde_json::from_str(old).unwrap();
    assert_eq!(cfg, resnet::variants::resnet50());
    assert_eq!(cfg.head, HeadKind::Linear);
}

/// `zoo bench --layers` walks the tower op by op: the stem's average pool, the anti-aliasing pools, the
/// attention pool, and the walk's shapes agree with the forward pass.
#[test]
fn profile_times_the_attention_pool() {
    let c = case("clip_rn");
    let model = ResNet::new(
        &c.cfg,
        VarBuilder::from_tensors(c.weights.clone(), DType::F32, &Device::Cpu),
    )
    .unwrap();
    let timing = resnet::profile::Timing {
        repeats: 1,
        sync: &|| Ok(()),
    };
    let ops = resnet::profile::profile(&model, &c.refs["input"], &timing).unwrap();
    let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
    for expected in [
        "conv3",
        "avgpool",
        "layer2.0.avgpool",
        "layer2.0.downsample",
        "attnpool",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let head = ops.last().unwrap();
    assert_eq!(
        (head.name.as_str(), head.shape.as_slice()),
        ("attnpool", &[2usize, 24][..])
    );
    let pool = match model.head() {
        Some(resnet::head::Head::AttentionPool(p)) => p,
        other => panic!("expected an attention pool, got {other:?}"),
    };
    assert_eq!(head.params, pool.num_params());
    assert_eq!(head.params, 5 * 128 + 3 * (128 * 128 + 128) + 24 * 128 + 24);
    assert!(head.macs > 0);
    // Parameters of the walk add up to the model's.
    let walked: usize = ops.iter().map(|o| o.params).sum();
    assert_eq!(walked, model.num_params());
    let embed = pool
        .forward(&model.forward_features(&c.refs["input"]).unwrap())
        .unwrap();
    assert_eq!(embed.dims(), &[2, 24]);
}

/// A checkpoint's own config (`zoo.config`) is downloaded data: absurd CLIP knobs are errors before anything is
/// allocated, not panics.
#[test]
fn corrupt_clip_configs_are_errors() {
    let good = serde_json::to_value(resnet::variants::resnet50_clip()).unwrap();
    let cases = [
        (
            "head",
            serde_json::json!({"kind": "attention_pool", "num_heads": 32, "grid": 1u64 << 40}),
        ),
        (
            "head",
            serde_json::json!({"kind": "attention_pool", "num_heads": 0, "grid": 7}),
        ),
        (
            "head",
            serde_json::json!({"kind": "attention_pool", "num_heads": 3, "grid": 7}),
        ),
        ("stem", serde_json::json!({"kind": "clip", "width": 1})),
        ("block", serde_json::json!({"kind": "basic"})),
    ];
    for (key, value) in cases {
        let mut json = good.clone();
        json[key] = value.clone();
        let cfg: ResNetConfig = serde_json::from_value(json).unwrap();
        let err = ResNet::new(&cfg, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap_err();
        assert!(
            err.to_string().contains("invalid ResNet config"),
            "{key} = {value}: {err}"
        );
    }
}
