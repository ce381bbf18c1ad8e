//! Real CIFAR-10 weights (`../shared/fixtures/cifar10-resnet/`) against the reference logits published in
//! `../shared/README.md`. Keys there carry `module.` and a `linear` head.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use resnet::keys::{canonical_name, KeyScheme};
use resnet::{BnMode, ResNet};

fn model(name: &str, mode: BnMode) -> ResNet {
    let path = common::shared(&format!("fixtures/cifar10-resnet/{name}.safetensors"));
    let (tensors, _) = common::load(&path);
    let scheme = KeyScheme::detect(tensors.keys().map(String::as_str));
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| canonical_name(scheme, &k).map(|k| (k, v.to_dtype(DType::F32).unwrap())))
        .collect();
    let vb = VarBuilder::from_tensors(renamed, DType::F32, &Device::Cpu);
    ResNet::load(&resnet::variants::by_name(name).unwrap(), vb, mode).unwrap()
}

/// x[0, c, h, w] = sin(0.01 * (c * 1024 + h * 32 + w)).
fn sine() -> Tensor {
    let v: Vec<f32> = (0..3 * 32 * 32).map(|i| (0.01 * i as f64).sin() as f32).collect();
    Tensor::from_vec(v, (1, 3, 32, 32), &Device::Cpu).unwrap()
}

fn zeros() -> Tensor {
    Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap()
}

fn check(name: &str, input: Tensor, want: [f32; 10]) {
    for mode in [BnMode::Fold, BnMode::Keep] {
        let got: Vec<f32> = model(name, mode)
            .forward(&input)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        // The README prints 4 decimals: allow that rounding plus 1e-3.
        assert!(err <= 1e-3 + 5e-5, "{name} {mode:?}: got {got:?}, max error {err}");
    }
}

#[test]
fn resnet20_zeros() {
    check(
        "resnet20",
        zeros(),
        [
            3.2760, -2.3189, 0.4191, 4.5202, -1.3386, 0.6449, 0.3349, -1.7288, 0.1667, -4.0055,
        ],
    );
}

#[test]
fn resnet20_sine() {
    check(
        "resnet20",
        sine(),
        [
            -0.7801, -0.9283, 1.0585, -3.8758, 6.5965, -2.8999, -0.1108, 2.4582, 0.5336, -2.1035,
        ],
    );
}

#[test]
fn resnet56_zeros() {
    check(
        "resnet56",
        zeros(),
        [
            -1.1280, -2.6475, -1.2870, 10.3389, -3.9263, 1.8281, 0.0394, -0.3955, -0.3370, -2.5494,
        ],
    );
}

#[test]
fn resnet56_sine() {
    check(
        "resnet56",
        sine(),
        [
            3.0012, 0.1265, -0.9947, 1.6753, -0.8788, -0.7700, 0.5399, -1.1083, 0.5041, -2.1230,
        ],
    );
}

#[test]
fn real_weights_have_the_published_parameter_counts() {
    assert_eq!(model("resnet20", BnMode::Fold).num_params(), 269_722);
    assert_eq!(model("resnet56", BnMode::Fold).num_params(), 853_018);
}
