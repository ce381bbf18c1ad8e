//! `zoo run` zero-shot and `zoo embed`, against the libraries they stand on.
//!
//! The CLIP model is the tiny one of `clip/tests/fixtures/clip_tiny.safetensors` (OpenCLIP's own weights and
//! outputs, random init; `clip/tests/load.rs` checks the loader against those outputs), published on a fake
//! hub as OpenCLIP publishes a model, under the repo `zoo run resnet50_clip` fetches: its
//! `open_clip_config.json` says what it is. No real CLIP checkpoint can be fetched here.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use clip::ClipLoadOptions;
use common::{assert_clean_error, data, json_lines, run, stderr, stdout, zoo};
use serde_json::{json, Value};
use weights::hub::HubOptions;
use zoo_testkit::hub::{FakeHub, FakeRepo};

const REPO: &str = "timm/resnet50_clip.openai";

/// The fixture's OpenCLIP state dict and config, written as `open_clip_model.safetensors` and
/// `open_clip_config.json` into `dir`; returns the weights file.
fn publish(dir: &Path) -> PathBuf {
    let path = common::root().join("clip/tests/fixtures/clip_tiny.safetensors");
    let raw = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let weights: HashMap<String, Tensor> = raw
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("model.").map(|k| (k.to_string(), v)))
        .collect();
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config: Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    let file = dir.join(clip::load::OPEN_CLIP_WEIGHTS);
    candle_core::safetensors::save(&weights, &file).unwrap();
    let open_clip_config = json!({"model_cfg": config["model_cfg"], "preprocess_cfg": {
        "mean": clip::config::OPENAI_CLIP_MEAN, "std": clip::config::OPENAI_CLIP_STD}});
    std::fs::write(dir.join(clip::load::OPEN_CLIP_CONFIG), open_clip_config.to_string()).unwrap();
    file
}

fn hub_with_clip(dir: &Path) -> FakeHub {
    let file = publish(dir);
    FakeHub::start(vec![FakeRepo::new(
        REPO,
        vec![
            (clip::load::OPEN_CLIP_WEIGHTS, std::fs::read(&file).unwrap()),
            (
                clip::load::OPEN_CLIP_CONFIG,
                std::fs::read(dir.join(clip::load::OPEN_CLIP_CONFIG)).unwrap(),
            ),
        ],
    )])
}

fn offline_opts(home: &Path) -> HubOptions {
    HubOptions {
        endpoint: zoo_testkit::unreachable_endpoint(),
        cache_dir: home.join("hub"),
        token: None,
        offline: true,
        progress: false,
        download_timeout: Duration::from_secs(10),
        etag_timeout: Duration::from_secs(10),
        invalid: None,
    }
}

/// One image preprocessed as `cfg` says, as a batch of one.
fn batch_of(img: &Path, cfg: &weights::PreprocessConfig) -> Tensor {
    resnet::data::preprocess_file(img, cfg, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn zero_shot_run_online_then_offline_equals_the_library() {
    let Some(img) = data("chelsea.png") else {
        return;
    };
    let published = tempfile::tempdir().unwrap();
    let hub = hub_with_clip(published.path());
    let home = tempfile::tempdir().unwrap();
    let labels = ["cat", "dog", "cup of coffee"];
    let cmd = |offline: bool| {
        let mut c = zoo();
        c.env("HF_HOME", home.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .args(["run", "resnet50_clip", "--json", "--labels", &labels.join(",")])
            .arg(&img);
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c
    };
    let online = run(&mut cmd(false));
    assert!(online.status.success(), "{}", stderr(&online));
    let served = hub.request_count();
    let offline = run(&mut cmd(true));
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert_eq!(hub.request_count(), served, "offline mode asked the hub");
    assert_eq!(stdout(&online), stdout(&offline));

    // The library, on the files the CLI cached.
    let p = clip::load::pretrained_with(
        "resnet50_clip",
        &ClipLoadOptions::new(&Device::Cpu),
        &offline_opts(home.path()),
    )
    .unwrap();
    let x = batch_of(&img, &p.preprocess);
    let want = p
        .model
        .zero_shot(&p.tokenizer, &x, &labels, &[clip::SINGLE_TEMPLATE])
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let line = &json_lines(&online)[0];
    let top = line["top"].as_array().unwrap();
    assert_eq!(top.len(), labels.len(), "--top 5 shows the 3 labels there are");
    for t in top {
        let class = t["class"].as_u64().unwrap() as usize;
        assert_eq!(t["label"], labels[class]);
        let prob = t["prob"].as_f64().unwrap() as f32;
        assert!((prob - want[class]).abs() <= 1e-5, "{prob} vs {}", want[class]);
    }
    let probs: Vec<f32> = top.iter().map(|t| t["prob"].as_f64().unwrap() as f32).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "ranked: {probs:?}");
}

#[test]
fn zero_shot_from_a_local_checkpoint_with_templates_and_a_labels_file() {
    let Some(img) = data("coffee.png") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = publish(dir.path());
    let labels_file = dir.path().join("labels.txt");
    std::fs::write(&labels_file, "cat\n\n  dog \ncup of coffee\n").unwrap();
    let probs = |extra: &[&str]| -> Vec<f32> {
        let out = run(zoo()
            .arg("run")
            .arg(&file)
            .arg(&img)
            .args(["--json", "--labels-file"])
            .arg(&labels_file)
            .args(extra));
        assert!(out.status.success(), "{}", stderr(&out));
        let line = &json_lines(&out)[0];
        let mut p = vec![0f32; 3];
        for t in line["top"].as_array().unwrap() {
            p[t["class"].as_u64().unwrap() as usize] = t["prob"].as_f64().unwrap() as f32;
        }
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        p
    };
    let single = probs(&[]);
    let two = probs(&["--template", "a photo of a {}.", "--template", "a drawing of a {}."]);
    let ensemble = probs(&["--templates", "openai-imagenet"]);

    let p = clip::PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap();
    let x = batch_of(&img, &p.preprocess);
    let labels = ["cat", "dog", "cup of coffee"];
    let lib = |templates: &[&str]| {
        p.model
            .zero_shot(&p.tokenizer, &x, &labels, templates)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert!(max_abs_diff(&single, &lib(&[clip::SINGLE_TEMPLATE])) <= 1e-5);
    assert!(max_abs_diff(&two, &lib(&["a photo of a {}.", "a drawing of a {}."])) <= 1e-5);
    assert!(max_abs_diff(&ensemble, &lib(&clip::openai_imagenet_templates())) <= 1e-5);
    assert!(
        max_abs_diff(&single, &two) > 1e-6,
        "the templates change the classifier"
    );
}

#[test]
fn zero_shot_usage_errors_are_clean() {
    let Some(img) = data("chelsea.png") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = publish(dir.path());
    let cifar = common::cifar20();
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (vec!["resnet50_clip".into()], &["--labels"]),
        (vec![file.display().to_string()], &["--labels"]),
        (
            vec![
                "resnet20".into(),
                "--weights".into(),
                cifar.clone(),
                "--labels".into(),
                "a,b".into(),
            ],
            &["CLIP model"],
        ),
        (
            vec![
                "resnet20".into(),
                "--weights".into(),
                cifar,
                "--template".into(),
                "a {}".into(),
            ],
            &["--labels"],
        ),
        (
            vec![file.display().to_string(), "--labels".into(), "a,b,a".into()],
            &["`a` is given twice"],
        ),
        (
            vec![file.display().to_string(), "--labels".into(), " , ".into()],
            &["no labels"],
        ),
        (
            vec![
                file.display().to_string(),
                "--labels".into(),
                "a".into(),
                "--template".into(),
                "no slot".into(),
            ],
            &["--template", "exactly once"],
        ),
        (
            vec![
                file.display().to_string(),
                "--labels".into(),
                "a".into(),
                "--dtype".into(),
                "f16".into(),
            ],
            &["f32"],
        ),
    ];
    for (args, mentions) in cases {
        let out = run(zoo().arg("run").args(&args).arg(&img));
        assert_clean_error(&out, mentions);
    }
}

#[test]
fn embed_equals_the_libraries() {
    let (Some(a), Some(b)) = (data("chelsea.png"), data("coffee.png")) else {
        return;
    };
    // A ResNet: pooled last-stage features (the classifier's input), for two images in one batch.
    let cifar = common::cifar20();
    let out = run(zoo().args(["embed", "resnet20", "--weights", &cifar]).arg(&a).arg(&b));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    let opts = resnet::load::LoadOptions {
        arch: Some("resnet20".into()),
        ..Default::default()
    };
    let p = resnet::Pretrained::from_file(&cifar, &opts, &Device::Cpu).unwrap();
    for (line, img) in lines.iter().zip([&a, &b]) {
        assert_eq!(line["input"], img.display().to_string());
        let x = p.preprocess_file(img).unwrap().unsqueeze(0).unwrap();
        let features = p.model.forward_features(&x).unwrap();
        let want = features
            .mean((2, 3))
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = floats(&line["embedding"]);
        assert_eq!(got.len(), 64);
        assert!(max_abs_diff(&got, &want) <= 1e-5);
        // And the classifier of those features gives the model's logits.
        let logits = p.logits(&x).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let fc = p.model.classifier().unwrap();
        let from_embedding = fc
            .forward_pooled(&Tensor::new(got.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(max_abs_diff(&from_embedding, &logits) <= 1e-4);
    }

    // A chosen stage, pooled: ResNet-20's second stage has 32 channels.
    let out = run(zoo()
        .args(["embed", "resnet20", "--weights", &cifar, "--stage", "2"])
        .arg(&a));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = floats(&json_lines(&out)[0]["embedding"]);
    let x = p.preprocess_file(&a).unwrap().unsqueeze(0).unwrap();
    let stage2 = p.model.forward_intermediates(&x, &[2]).unwrap().pop().unwrap();
    let want = stage2
        .mean((2, 3))
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got.len(), 32);
    assert!(max_abs_diff(&got, &want) <= 1e-5);
    assert_clean_error(
        &run(zoo()
            .args(["embed", "resnet20", "--weights", &cifar, "--stage", "4"])
            .arg(&a)),
        &["3 stages"],
    );

    // CLIP: image and text embeddings, normalized.
    let dir = tempfile::tempdir().unwrap();
    let file = publish(dir.path());
    let out =
        run(zoo()
            .arg("embed")
            .arg(&file)
            .arg(&a)
            .args(["--text", "a photo of a cat.", "--text", "", "--normalize"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    let c = clip::PretrainedClip::from_file(&file, &ClipLoadOptions::new(&Device::Cpu)).unwrap();
    let x = batch_of(&a, &c.preprocess);
    let img = clip::model::normalize(&c.model.encode_image(&x).unwrap()).unwrap();
    let txt = clip::model::normalize(&c.model.encode_texts(&c.tokenizer, &["a photo of a cat.", ""]).unwrap()).unwrap();
    let img = img.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    let txt = txt.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
    assert!(max_abs_diff(&floats(&lines[0]["embedding"]), &img) <= 1e-5);
    assert_eq!(lines[1]["text"], "a photo of a cat.");
    assert!(max_abs_diff(&floats(&lines[1]["embedding"]), &txt[0]) <= 1e-5);
    assert_eq!(lines[2]["text"], "");
    assert!(max_abs_diff(&floats(&lines[2]["embedding"]), &txt[1]) <= 1e-5);

    assert_clean_error(&run(zoo().args(["embed", "resnet20", "--text", "x"])), &["CLIP"]);
    assert_clean_error(&run(zoo().args(["embed", "resnet20"])), &["nothing to embed"]);
}

#[test]
fn bench_times_the_attention_pool_and_the_text_tower() {
    let dir = tempfile::tempdir().unwrap();
    let file = publish(dir.path());
    let out = run(zoo().arg("bench").arg(&file).args([
        "--layers", "--json", "--iters", "2", "--warmup", "0", "--size", "64", "--batch", "2",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let names = |layers: &Value| -> Vec<String> {
        layers
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&j["layers"]).contains(&"attnpool".to_string()), "{j}");
    let text = &j["text_tower"];
    assert_eq!(text["batch"], 2);
    // The fixture's text tower: 2 blocks of attention and MLP, between the embedding and the projection.
    assert_eq!(
        names(&text["layers"]),
        [
            "token_embedding",
            "transformer.resblocks.0.attn",
            "transformer.resblocks.0.mlp",
            "transformer.resblocks.1.attn",
            "transformer.resblocks.1.mlp",
            "ln_final",
            "text_projection"
        ]
    );
    // "a photo of a cat." is 6 tokens between the start and end tokens.
    assert_eq!(text["tokens"], 8);
    assert!(text["median_ms"].as_f64().unwrap() > 0.0);
}
