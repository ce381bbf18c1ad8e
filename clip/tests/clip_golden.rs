//! A whole CLIP model (reduced ResNet tower, 2-layer text tower over the full vocabulary, float16 weights)
//! against OpenCLIP with random weights: image and text embeddings, logits, zero-shot classifiers and
//! probabilities with one template and with the 80-template ImageNet ensemble, GELU and QuickGELU.
//! Fixture: `tests/fixtures/clip_tiny.safetensors`, made by `scripts/gen_clip_fixtures.py`.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clip::{Activation, Clip, ClipConfig, ClipTokenizer, ZeroShotClassifier};
use resnet::BnMode;
use serde_json::Value;

struct Fixture {
    config: ClipConfig,
    meta: Value,
    weights: HashMap<String, Tensor>,
    refs: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let (tensors, meta) = common::load(&common::fixture("clip_tiny.safetensors"));
    let config = ClipConfig::from_open_clip_json(&meta["model_cfg"].to_string()).unwrap();
    let (mut weights, mut refs) = (HashMap::new(), HashMap::new());
    for (k, v) in tensors {
        match k.strip_prefix("model.") {
            // Through the key mapping, as a checkpoint would be loaded.
            Some(w) => weights.insert(clip::keys::canonical_name(w).unwrap(), v),
            None => refs.insert(k, v),
        };
    }
    Fixture {
        config,
        meta,
        weights,
        refs,
    }
}

fn model(f: &Fixture, config: &ClipConfig, bn: BnMode) -> Clip {
    Clip::load(
        config,
        VarBuilder::from_tensors(f.weights.clone(), DType::F32, &Device::Cpu),
        bn,
    )
    .unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Asserts `got` is within 1e-4 of OpenCLIP's `key` (relative to the output's scale when it exceeds 1);
/// returns the error and, where the fixture has it, our error and PyTorch's against the float64 result.
fn close(f: &Fixture, key: &str, got: &Tensor) -> (f32, Option<(f32, f32)>) {
    let want = &f.refs[key];
    let scale = common::max_abs(want).max(1.0);
    let err = common::max_abs_diff(got, want);
    assert!(err <= 1e-4 * scale, "{key}: max abs error {err:e} (scale {scale})");
    let f64_key = format!("f64_{key}");
    let vs64 = f
        .refs
        .get(&f64_key)
        .map(|r| (common::max_abs_diff(got, r), common::max_abs_diff(want, r)));
    if let Some((ours, theirs)) = vs64 {
        println!("{key}: {err:.2e} vs PyTorch f32; vs float64: ours {ours:.2e}, PyTorch f32 {theirs:.2e}");
    } else {
        println!("{key}: {err:.2e} vs PyTorch f32");
    }
    (err, vs64)
}

#[test]
fn config_reads_open_clip_model_cfg() {
    let f = fixture();
    assert_eq!(f.config.embed_dim, 24);
    assert_eq!(f.config.text.activation, Activation::Gelu);
    assert_eq!(
        (f.config.text.width, f.config.text.heads, f.config.text.layers),
        (8, 2, 2)
    );
    assert_eq!(f.config.image_size(), 64);
    let m = model(&f, &f.config, BnMode::Fold);
    let stored: usize = f
        .weights
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, v)| v.elem_count())
        .sum();
    assert_eq!(m.num_params(), stored);
}

#[test]
fn tokens_equal_open_clip() {
    let f = fixture();
    let tok = ClipTokenizer::openai().unwrap();
    let ours = tok
        .tokenize(&strings(&f.meta["texts"]), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    assert_eq!(
        ours.to_vec2::<i64>().unwrap(),
        f.refs["tokens"].to_vec2::<i64>().unwrap()
    );
}

#[test]
fn embeddings_and_logits_match_open_clip() {
    let f = fixture();
    for bn in [BnMode::Fold, BnMode::Keep] {
        let m = model(&f, &f.config, bn);
        let img = m.encode_image(&f.refs["images"]).unwrap();
        close(&f, "image_embeds", &img);
        // OpenCLIP's int64 tokens, as stored (the end token is found per text; one text ends early).
        let txt = m.encode_text(&f.refs["tokens"]).unwrap();
        close(&f, "text_embeds", &txt);
        close(&f, "logits_per_image", &m.logits(&img, &txt).unwrap());
        let from_strings = m
            .encode_texts(&ClipTokenizer::openai().unwrap(), &strings(&f.meta["texts"]))
            .unwrap();
        assert!(common::max_abs_diff(&from_strings, &txt) == 0.0);
    }
}

#[test]
fn quick_gelu_text_tower_matches_open_clip() {
    let f = fixture();
    let mut config = f.config.clone();
    config.text.activation = Activation::QuickGelu;
    let m = model(&f, &config, BnMode::Fold);
    let txt = m.encode_text(&f.refs["tokens"]).unwrap();
    close(&f, "quickgelu_text_embeds", &txt);
    // And it is a different function: GELU's embeddings are far from these.
    assert!(common::max_abs_diff(&txt, &f.refs["text_embeds"]) > 1e-2);
}

#[test]
fn zero_shot_matches_open_clip() {
    let f = fixture();
    let m = model(&f, &f.config, BnMode::Fold);
    let tok = ClipTokenizer::openai().unwrap();
    let labels = strings(&f.meta["labels"]);
    let single = [f.meta["single_template"].as_str().unwrap()];
    let ensemble = clip::openai_imagenet_templates();
    for (name, templates) in [("single", &single[..]), ("ensemble", &ensemble[..])] {
        let zs = ZeroShotClassifier::new(&m, &tok, &labels, templates).unwrap();
        close(&f, &format!("zeroshot_{name}_classifier"), zs.weights());
        let img = m.encode_image(&f.refs["images"]).unwrap();
        close(&f, &format!("zeroshot_{name}_logits"), &zs.logits(&img).unwrap());
        let probs = zs.probs(&m, &f.refs["images"]).unwrap();
        close(&f, &format!("zeroshot_{name}_probs"), &probs);
        let direct = m.zero_shot(&tok, &f.refs["images"], &labels, templates).unwrap();
        assert_eq!(common::max_abs_diff(&direct, &probs), 0.0);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let f = fixture();
    let m = model(&f, &f.config, BnMode::Fold);
    let tok = ClipTokenizer::openai().unwrap();
    let images = &f.refs["images"];
    assert!(m.zero_shot(&tok, images, &["cat"], &["no slot"]).is_err());
    assert!(m.zero_shot::<&str, &str>(&tok, images, &[], &["a {}"]).is_err());
    assert!(m.zero_shot::<&str, &str>(&tok, images, &["cat"], &[]).is_err());
    let too_big = Tensor::new(&[[49406u32, 49408, 49407]], &Device::Cpu).unwrap();
    assert!(m.encode_text(&too_big).unwrap_err().to_string().contains("vocabulary"));
    let too_long = Tensor::zeros((1, 78), DType::U32, &Device::Cpu).unwrap();
    assert!(m.encode_text(&too_long).is_err());
    let empty = Tensor::zeros((0, 77), DType::U32, &Device::Cpu).unwrap();
    assert!(m.encode_text(&empty).is_err());
    let wrong_size = Tensor::zeros((1, 3, 96, 96), DType::F32, &Device::Cpu).unwrap();
    assert!(m
        .encode_image(&wrong_size)
        .unwrap_err()
        .to_string()
        .contains("attention pool"));
    // A checkpoint without a text tower (timm's image tower alone) fails to load, naming what is missing.
    let visual: HashMap<String, Tensor> = f
        .weights
        .iter()
        .filter(|(k, _)| k.starts_with("visual."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let err = Clip::new(&f.config, VarBuilder::from_tensors(visual, DType::F32, &Device::Cpu)).unwrap_err();
    assert!(err.to_string().contains("token_embedding"), "{err}");
}

/// The per-op walk of the text tower computes the forward pass.
#[test]
fn text_profile_walks_the_forward_pass() {
    let f = fixture();
    let m = model(&f, &f.config, BnMode::Fold);
    let timing = resnet::profile::Timing {
        repeats: 1,
        sync: &|| Ok(()),
    };
    let ops = clip::profile::profile_text(&m.text, &f.refs["tokens"], &timing).unwrap();
    let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"token_embedding"));
    assert!(names.contains(&"transformer.resblocks.1.attn") && names.contains(&"transformer.resblocks.1.mlp"));
    let last = ops.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.shape.as_slice()),
        ("text_projection", &[6usize, 24][..])
    );
    assert_eq!(ops.iter().map(|o| o.params).sum::<usize>(), m.text.num_params());
}

/// Zero tensors without memory (one value broadcast to each shape): RN50x64 is 623M parameters.
struct BroadcastZeros;

impl candle_nn::var_builder::SimpleBackend for BroadcastZeros {
    fn get(
        &self,
        s: candle_core::Shape,
        _: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The five named models have OpenCLIP's parameter counts, text tower and total
/// (`tests/fixtures/clip_param_counts.json`, from `scripts/gen_clip_fixtures.py`), and OpenCLIP's text configs.
#[test]
fn param_counts_match_open_clip() {
    let text = std::fs::read_to_string(common::fixture("clip_param_counts.json")).unwrap();
    let models: std::collections::BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(models.len(), clip::config::NAMES.len());
    for (name, m) in models {
        let config = ClipConfig::by_name(&name).unwrap();
        assert_eq!(ClipConfig::by_name(m["open_clip"].as_str().unwrap()).unwrap(), config);
        let t = &m["text_cfg"];
        let text = &config.text;
        let ours = [
            text.context_length,
            text.vocab_size,
            text.width,
            text.heads,
            text.layers,
        ];
        let theirs =
            ["context_length", "vocab_size", "width", "heads", "layers"].map(|k| t[k].as_u64().unwrap() as usize);
        assert_eq!(ours, theirs, "{name}");
        assert_eq!(config.embed_dim as u64, m["embed_dim"].as_u64().unwrap(), "{name}");
        let vb = VarBuilder::from_backend(Box::new(BroadcastZeros), DType::F32, Device::Cpu);
        let model = Clip::load(&config, vb, BnMode::Keep).unwrap();
        assert_eq!(
            model.text.num_params() + 1,
            m["text_params"].as_u64().unwrap() as usize,
            "{name} text"
        );
        assert_eq!(
            model.num_params(),
            m["total_params"].as_u64().unwrap() as usize,
            "{name} total"
        );
    }
}
