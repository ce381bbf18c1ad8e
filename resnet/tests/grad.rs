//! The backward pass against PyTorch: a small timm basic-block ResNet in train mode (fixture
//! `golden/grad.safetensors`, case `grad` of `scripts/gen_fixtures.py`): logits, cross-entropy loss, the
//! gradient of every parameter, and BatchNorm's running statistics after the forward.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use resnet::train::TrainableResNet;
use resnet::{BlockKind, ResNetConfig, ShortcutKind, StemKind};
use serde_json::Value;
use weights::PreprocessConfig;

struct Fixture {
    cfg: ResNetConfig,
    weights: HashMap<String, Tensor>,
    refs: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let (tensors, meta) = common::load(&common::fixture("golden/grad.safetensors"));
    let meta: Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(meta["block"], "basic");
    assert_eq!(meta["stem_type"], "classic");
    assert_eq!(meta["train"], true);
    let usizes = |k: &str| -> Vec<usize> { serde_json::from_value(meta[k].clone()).unwrap() };
    let cfg = ResNetConfig::imagenet(BlockKind::Basic, [1, 1, 1, 1])
        .with_depths(&usizes("layers"))
        .with_channels(&usizes("channels"))
        .with_stem(StemKind::Classic {
            width: meta["stem_width"].as_u64().unwrap() as usize,
        })
        .with_shortcut(if meta["avg_down"].as_bool().unwrap() {
            ShortcutKind::AvgDownProjection
        } else {
            ShortcutKind::Projection
        })
        .with_num_classes(meta["num_classes"].as_u64().unwrap() as usize)
        .with_bn_eps(meta["bn_eps"].as_f64().unwrap());
    let (mut weights, mut refs) = (HashMap::new(), HashMap::new());
    for (k, v) in tensors {
        match k.strip_prefix("model.") {
            Some(w) => weights.insert(w.to_string(), v),
            None => refs.insert(k, v),
        };
    }
    Fixture { cfg, weights, refs }
}

#[test]
fn backward_matches_pytorch() {
    let f = fixture();
    let net = TrainableResNet::from_tensors(
        "grad",
        &f.cfg,
        f.weights.clone(),
        PreprocessConfig::imagenet(),
        &Device::Cpu,
    )
    .unwrap();
    let x = &f.refs["input"];
    let targets = f.refs["targets"].to_dtype(DType::U32).unwrap();

    // The network's own train-mode forward: differentiable for every stem and shortcut.
    let logits = net.forward_train(x, resnet::train::Scope::All).unwrap();
    let logit_err = common::max_abs_diff(&logits, &f.refs["logits"]);
    assert!(logit_err <= 1e-4, "train-mode logits off by {logit_err}");

    let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
    let want_loss = f.refs["loss"].to_vec1::<f32>().unwrap()[0];
    let got_loss = loss.to_scalar::<f32>().unwrap();
    assert!(
        (got_loss - want_loss).abs() <= 1e-5,
        "loss {got_loss} vs PyTorch {want_loss}"
    );

    // Every parameter PyTorch has a gradient for must get one here, and match it.
    let grads = loss.backward().unwrap();
    let vars = net.trainable_vars(resnet::train::Scope::All);
    let by_name: HashMap<&str, &candle_core::Var> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut worst = (0f32, String::new());
    let mut checked = 0;
    for (key, want) in &f.refs {
        let Some(param) = key.strip_prefix("grad.") else {
            continue;
        };
        let var = by_name
            .get(param)
            .unwrap_or_else(|| panic!("no trainable variable `{param}`"));
        let got = grads.get(var).unwrap_or_else(|| panic!("no gradient for `{param}`"));
        let err = common::max_abs_diff(got, want);
        // Relative to the gradient's scale too, so a tiny gradient cannot hide a wrong sign.
        let scale = common::max_abs(want).max(1e-3);
        assert!(err <= 1e-4, "{param}: gradient off by {err} (max |grad| {scale})");
        if err > worst.0 {
            worst = (err, param.to_string());
        }
        checked += 1;
    }
    assert_eq!(checked, vars.len(), "PyTorch's parameters and ours differ in number");
    eprintln!(
        "{checked} parameter gradients, worst max error {:.2e} ({}); loss {got_loss:.6} vs {want_loss:.6}",
        worst.0, worst.1
    );

    // BatchNorm updated its running statistics during the forward (momentum 0.1, unbiased variance).
    let tensors = net.tensors();
    let mut stats = 0;
    for (key, want) in &f.refs {
        let Some(name) = key.strip_prefix("after.") else {
            continue;
        };
        let err = common::max_abs_diff(&tensors[name], want);
        assert!(err <= 1e-5, "{name} after the forward off by {err}");
        let before = common::max_abs_diff(&f.weights[name], want);
        assert!(before > 1e-4, "{name} did not change in PyTorch either?");
        stats += 1;
    }
    assert!(
        stats >= 2 * 5,
        "expected running statistics for every BatchNorm, found {stats}"
    );
}

#[test]
fn head_scope_freezes_the_backbone() {
    let f = fixture();
    let mut net = TrainableResNet::from_tensors(
        "grad",
        &f.cfg,
        f.weights.clone(),
        PreprocessConfig::imagenet(),
        &Device::Cpu,
    )
    .unwrap();
    net.replace_head(vec!["a".into(), "b".into(), "c".into()], 0).unwrap();
    let head: Vec<String> = net
        .trainable_vars(resnet::train::Scope::Head)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(head, ["fc.bias", "fc.weight"]);
    let x = &f.refs["input"];
    let before = net.tensors();
    let logits = net.forward_train(x, resnet::train::Scope::Head).unwrap();
    assert_eq!(logits.dims(), [4, 3]);
    let targets = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap();
    let grads = candle_nn::loss::cross_entropy(&logits, &targets)
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in net.trainable_vars(resnet::train::Scope::All) {
        assert_eq!(
            grads.get(&var).is_some(),
            name.starts_with("fc."),
            "{name}: gradient presence"
        );
    }
    // Frozen BatchNorm: running statistics untouched by a head-only forward.
    for (name, t) in net.tensors() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            assert_eq!(common::max_abs_diff(&t, &before[&name]), 0.0, "{name} moved");
        }
    }
}
