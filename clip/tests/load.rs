//! Loading CLIP checkpoints from files and from a (fake) Hub, checked against OpenCLIP's outputs: the tiny
//! model of `tests/fixtures/clip_tiny.safetensors` (written by `scripts/gen_clip_fixtures.py`) saved the way
//! OpenCLIP publishes a model (`open_clip_model.safetensors` + `open_clip_config.json`).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use clip::{ClipConfig, ClipLoadOptions, PretrainedClip};
use serde_json::{json, Value};
use weights::hub::HubOptions;
use zoo_testkit::hub::{FakeHub, FakeRepo};

/// The fixture's OpenCLIP state dict (stored dtypes kept), its `open_clip_config.json`, and OpenCLIP's outputs.
struct Published {
    weights: HashMap<String, Tensor>,
    config_json: Value,
    refs: HashMap<String, Tensor>,
    labels: Vec<String>,
    template: String,
}

fn published() -> Published {
    let path = common::fixture("clip_tiny.safetensors");
    let raw = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let (_, meta) = common::load(&path);
    let (mut weights, mut refs) = (HashMap::new(), HashMap::new());
    for (k, v) in raw {
        match k.strip_prefix("model.") {
            Some(w) => weights.insert(w.to_string(), v),
            None => refs.insert(k, v.to_dtype(DType::F32).unwrap()),
        };
    }
    let config_json = json!({
        "model_cfg": meta["model_cfg"],
        "preprocess_cfg": {"mean": [0.5, 0.25, 0.125], "std": [0.2, 0.3, 0.4], "interpolation": "bicubic"},
    });
    Published {
        weights,
        config_json,
        refs,
        labels: serde_json::from_value(meta["labels"].clone()).unwrap(),
        template: meta["single_template"].as_str().unwrap().to_string(),
    }
}

fn write_dir(dir: &Path, weights: &HashMap<String, Tensor>, config: Option<&Value>) -> std::path::PathBuf {
    let file = dir.join(clip::load::OPEN_CLIP_WEIGHTS);
    candle_core::safetensors::save(weights, &file).unwrap();
    if let Some(c) = config {
        std::fs::write(dir.join(clip::load::OPEN_CLIP_CONFIG), c.to_string()).unwrap();
    }
    file
}

/// Image embeddings and single-template zero-shot probabilities within 1e-4 of OpenCLIP's.
fn assert_matches_open_clip(p: &PretrainedClip, f: &Published) {
    let img = p.model.encode_image(&f.refs["images"]).unwrap();
    let err = common::max_abs_diff(&img, &f.refs["image_embeds"]);
    assert!(
        err <= 1e-4 * common::max_abs(&f.refs["image_embeds"]).max(1.0),
        "image embeddings: {err:e}"
    );
    let probs = p
        .model
        .zero_shot(&p.tokenizer, &f.refs["images"], &f.labels, &[f.template.as_str()])
        .unwrap();
    let err = common::max_abs_diff(&probs, &f.refs["zeroshot_single_probs"]);
    assert!(err <= 1e-4, "zero-shot probabilities: {err:e}");
}

#[test]
fn an_open_clip_directory_loads_with_its_config_and_preprocessing() {
    let f = published();
    let dir = tempfile::tempdir().unwrap();
    let file = write_dir(dir.path(), &f.weights, Some(&f.config_json));
    let p = PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap();
    assert_matches_open_clip(&p, &f);
    assert_eq!(p.preprocess.mean, [0.5, 0.25, 0.125]);
    assert_eq!(p.preprocess.std, [0.2, 0.3, 0.4]);
    assert_eq!(p.preprocess.input_size, [3, 64, 64]);
}

#[test]
fn the_config_comes_from_the_caller_or_the_file_and_they_must_agree() {
    let f = published();
    let dir = tempfile::tempdir().unwrap();
    let file = write_dir(dir.path(), &f.weights, None);
    let err = PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap_err();
    assert!(err.to_string().contains("open_clip_config.json"), "{err}");

    let config = ClipConfig::from_open_clip_json(&f.config_json.to_string()).unwrap();
    let opts = ClipLoadOptions {
        config: Some(config),
        device: Device::Cpu,
    };
    let p = PretrainedClip::from_file(&file, &opts).unwrap();
    assert_matches_open_clip(&p, &f);
    // Without a preprocess_cfg: OpenAI's.
    assert_eq!(p.preprocess.mean, clip::config::OPENAI_CLIP_MEAN);

    write_dir(dir.path(), &f.weights, Some(&f.config_json));
    let other = ClipLoadOptions {
        config: Some(ClipConfig::by_name("resnet50_clip").unwrap()),
        device: Device::Cpu,
    };
    let err = PretrainedClip::from_file(&file, &other).unwrap_err();
    assert!(err.to_string().contains("another CLIP model"), "{err}");
}

#[test]
fn every_tensor_is_checked_against_the_model() {
    let f = published();
    let dir = tempfile::tempdir().unwrap();
    let mut w = f.weights.clone();
    w.remove("visual.layer1.0.conv2.weight").unwrap();
    w.insert(
        "visual.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let ln = w["ln_final.weight"].clone();
    w.insert("ln_final.weight".into(), Tensor::cat(&[&ln, &ln], 0).unwrap());
    let file = write_dir(dir.path(), &w, Some(&f.config_json));
    let err = PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, clip::Error::Mismatch { .. }), "{msg}");
    for needle in ["visual.layer1.0.conv2.weight", "visual.extra.weight", "ln_final.weight"] {
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }

    let mut w = f.weights.clone();
    let t = w["text_projection"].to_dtype(DType::F32).unwrap();
    let nan = Tensor::full(f32::NAN, t.shape(), &Device::Cpu).unwrap();
    w.insert("text_projection".into(), t.broadcast_add(&nan).unwrap());
    let file = write_dir(dir.path(), &w, Some(&f.config_json));
    let err = PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");

    std::fs::write(dir.path().join(clip::load::OPEN_CLIP_CONFIG), "{\"model_cfg\": ").unwrap();
    let err = PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap_err();
    assert!(err.to_string().contains("open_clip_config.json"), "{err}");
}

#[test]
fn names_map_to_timm_repos() {
    for (spec, repo, rev) in [
        ("resnet50_clip", "timm/resnet50_clip.openai", None),
        ("resnet50_clip.openai", "timm/resnet50_clip.openai", None),
        ("RN50x4", "timm/resnet50x4_clip.openai", None),
        ("resnet50_clip.yfcc15m@main", "timm/resnet50_clip.yfcc15m", Some("main")),
        ("someone/my-clip", "someone/my-clip", None),
    ] {
        let (r, _) = clip::load::repo_of(spec).unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_deref()), (repo, rev), "{spec}");
    }
    assert!(clip::load::repo_of("resnet50").is_err());
    assert!(clip::load::is_clip_name("resnet50x16_clip.openai"));
    assert!(!clip::load::is_clip_name("resnet50"));
    assert!(!clip::load::is_clip_name("timm/resnet50_clip.openai"));
}

fn hub_opts(endpoint: &str, cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline,
        progress: false,
        download_timeout: Duration::from_secs(10),
        etag_timeout: Duration::from_secs(10),
        invalid: None,
    }
}

#[test]
fn an_open_clip_repo_loads_online_then_offline() {
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    let f = published();
    let dir = tempfile::tempdir().unwrap();
    let file = write_dir(dir.path(), &f.weights, Some(&f.config_json));
    let repo = FakeRepo::new(
        "zoo-test/tiny-clip",
        vec![
            (clip::load::OPEN_CLIP_WEIGHTS, std::fs::read(&file).unwrap()),
            (clip::load::OPEN_CLIP_CONFIG, f.config_json.to_string().into_bytes()),
        ],
    );
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let opts = ClipLoadOptions::new(&Device::Cpu);
    let online = clip::load::pretrained_with(
        "zoo-test/tiny-clip",
        &opts,
        &hub_opts(&hub.endpoint(), cache.path(), false),
    )
    .unwrap();
    assert_matches_open_clip(&online, &f);
    assert_eq!(online.preprocess.mean, [0.5, 0.25, 0.125]);
    let served = hub.request_count();
    let offline = clip::load::pretrained_with(
        "zoo-test/tiny-clip",
        &opts,
        &hub_opts(&hub.endpoint(), cache.path(), true),
    )
    .unwrap();
    assert_matches_open_clip(&offline, &f);
    assert_eq!(hub.request_count(), served, "offline mode asked the hub");

    // A repo whose config cannot be parsed is an error, not OpenAI's defaults.
    let bad = FakeRepo::new(
        "zoo-test/bad-clip",
        vec![
            (clip::load::OPEN_CLIP_WEIGHTS, std::fs::read(&file).unwrap()),
            (clip::load::OPEN_CLIP_CONFIG, b"{\"model_cfg\": [".to_vec()),
        ],
    );
    let hub = FakeHub::start(vec![bad]);
    let err = clip::load::pretrained_with(
        "zoo-test/bad-clip",
        &opts,
        &hub_opts(&hub.endpoint(), cache.path(), false),
    )
    .unwrap_err();
    assert!(err.to_string().contains("open_clip_config.json"), "{err}");
}
