//! OpenAI's RN50 CLIP at full size (random weights, OpenCLIP's layout and config file) against OpenCLIP: image
//! and text embeddings, logits, zero-shot probabilities, and OpenAI's preprocessing of a real photo.
//!
//! The checkpoint is 400 MB, so it is generated, not committed: `scripts/fetch_test_data.sh` writes it to
//! `.data/clip_rn50/` when `ZOO_REF_PYTHON` names a Python with torch and open_clip_torch (see
//! `scripts/README.md`). Without it the test is skipped loudly, unless `ZOO_REQUIRE_CLIP_RN50` is set.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use clip::{Clip, ClipConfig, ClipTokenizer, ZeroShotClassifier};

fn data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data/clip_rn50");
    if dir.join("reference.safetensors").exists() {
        return Some(dir);
    }
    if std::env::var_os("ZOO_REQUIRE_CLIP_RN50").is_some() {
        panic!(
            "{} is missing: run scripts/fetch_test_data.sh with ZOO_REF_PYTHON set",
            dir.display()
        );
    }
    eprintln!(
        "\n*** SKIPPED: {} is missing; ZOO_REF_PYTHON=... scripts/fetch_test_data.sh writes it ***\n",
        dir.display()
    );
    None
}

#[test]
fn rn50_matches_open_clip_at_full_size() {
    let Some(dir) = data_dir() else { return };
    let (refs, meta) = common::load(&dir.join("reference.safetensors"));
    let config_json = std::fs::read_to_string(dir.join("open_clip_config.json")).unwrap();
    let config = ClipConfig::from_open_clip_json(&config_json).unwrap();
    assert_eq!(config, ClipConfig::by_name("resnet50_clip").unwrap());
    let weights = dir.join("open_clip_model.safetensors");
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu).unwrap() };
    let model = Clip::new(&config, vb).unwrap();
    let tok = ClipTokenizer::openai().unwrap();

    let check = |key: &str, got: &candle_core::Tensor| {
        let want = &refs[key];
        let scale = common::max_abs(want).max(1.0);
        let err = common::max_abs_diff(got, want);
        let ours64 = common::max_abs_diff(got, &refs[&format!("f64_{key}")]);
        let theirs64 = common::max_abs_diff(want, &refs[&format!("f64_{key}")]);
        println!("{key} (max |x| {scale:.3}): {err:.2e} vs PyTorch f32");
        println!("    vs float64: ours {ours64:.2e}, PyTorch f32 {theirs64:.2e}");
        assert!(err <= 1e-4 * scale, "{key}: {err:e} (scale {scale})");
    };
    let images = &refs["images"];
    let img = model.encode_image(images).unwrap();
    check("image_embeds", &img);
    let texts: Vec<String> = serde_json::from_value(meta["texts"].clone()).unwrap();
    let tokens = tok.tokenize(&texts, &Device::Cpu).unwrap();
    assert_eq!(
        tokens.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap(),
        refs["tokens"].to_vec2::<i64>().unwrap()
    );
    let txt = model.encode_text(&tokens).unwrap();
    check("text_embeds", &txt);
    check("logits_per_image", &model.logits(&img, &txt).unwrap());
    let labels: Vec<String> = serde_json::from_value(meta["labels"].clone()).unwrap();
    let zs = ZeroShotClassifier::new(&model, &tok, &labels, &clip::simple_imagenet_templates()).unwrap();
    check("zeroshot_simple_logits", &zs.logits(&img).unwrap());
    check("zeroshot_simple_probs", &zs.probs(&model, images).unwrap());

    // OpenAI's preprocessing of the cat photo (bicubic resize of the short side to 224, centre crop, CLIP's
    // mean and std), against OpenCLIP's transform on PIL.
    if meta["photo"] == "chelsea.png" {
        let photo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data/chelsea.png");
        let ours = resnet::data::preprocess_file(&photo, &config.preprocess(), &Device::Cpu).unwrap();
        let theirs = images.get(0).unwrap();
        let err = common::max_abs_diff(&ours, &theirs);
        println!("preprocessed chelsea.png: max abs difference {err:.2e}");
        // One 8-bit level is 1 / 255 / std ~ 0.015: the resize matches PIL to the level, the rest is f32 rounding.
        assert!(err < 1e-5, "{err}");
    }
}
