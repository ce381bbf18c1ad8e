//! Reduced networks of every family against PyTorch (timm) outputs, folded and unfolded, and folded with the
//! activations on NCHW16c (`Layout::Nchw16c`, where the CPU has the AVX-512 engine).
//! Fixtures: `tests/fixtures/golden/*.safetensors`, made by `scripts/gen_fixtures.py`.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use resnet::layers::{Engine, Layout};
use resnet::{BlockKind, BnMode, ResNet, ResNetConfig, ShortcutKind, StemKind, StridePlacement};
use serde_json::Value;

/// Translates the generator's timm-style description into our config.
fn config(meta: &Value) -> ResNetConfig {
    let usizes = |k: &str| -> Vec<usize> { serde_json::from_value(meta[k].clone()).unwrap() };
    let int = |k: &str| meta[k].as_u64().unwrap() as usize;
    let block = match meta["block"].as_str().unwrap() {
        "basic" => BlockKind::Basic,
        _ => BlockKind::Bottleneck {
            groups: int("cardinality"),
            base_width: int("base_width"),
        },
    };
    let width = int("stem_width");
    let stem = match meta["stem_type"].as_str().unwrap() {
        "classic" => StemKind::Classic { width },
        "deep" => StemKind::Deep { width },
        "deep_tiered" => StemKind::DeepTiered { width },
        other => panic!("stem {other}"),
    };
    let shortcut = if meta["avg_down"].as_bool().unwrap() {
        ShortcutKind::AvgDownProjection
    } else {
        ShortcutKind::Projection
    };
    let placement = match meta["stride_on"].as_str().unwrap() {
        "1x1" => StridePlacement::FirstOneByOne,
        _ => StridePlacement::ThreeByThree,
    };
    let cfg = ResNetConfig::imagenet(block, [1, 1, 1, 1])
        .with_depths(&usizes("layers"))
        .with_channels(&usizes("channels"))
        .with_stem(stem)
        .with_shortcut(shortcut)
        .with_stride_placement(placement)
        .with_num_classes(int("num_classes"))
        .with_bn_eps(meta["bn_eps"].as_f64().unwrap());
    let cfg = match meta.get("output_stride").and_then(Value::as_u64) {
        Some(32) | None => cfg,
        Some(os) => cfg.with_output_stride(os as usize),
    };
    assert_eq!(cfg.stem.out_channels(), int("stem_out_channels"));
    cfg
}

struct Case {
    cfg: ResNetConfig,
    weights: HashMap<String, Tensor>,
    refs: HashMap<String, Tensor>,
}

fn case(name: &str) -> Case {
    let (tensors, meta) = common::load(&common::fixture(&format!("golden/{name}.safetensors")));
    let meta: Value = serde_json::from_str(&meta["config"]).unwrap();
    let mut weights = HashMap::new();
    let mut refs = HashMap::new();
    for (k, v) in tensors {
        match k.strip_prefix("model.") {
            Some(w) => weights.insert(w.to_string(), v),
            None => refs.insert(k, v),
        };
    }
    Case {
        cfg: config(&meta),
        weights,
        refs,
    }
}

/// Held while a model loads under a layout other than the default (the choice is the process's): tests that
/// load meanwhile may take it too, and check it like any other.
static LAYOUT: Mutex<()> = Mutex::new(());

/// `cfg` loaded under [`Layout::Nchw16c`].
fn load_blocked(cfg: &ResNetConfig, vb: VarBuilder, mode: BnMode) -> ResNet {
    let _held = LAYOUT.lock().unwrap_or_else(|e| e.into_inner());
    Layout::set_default(Some(Layout::Nchw16c));
    let model = ResNet::load(cfg, vb, mode);
    Layout::set_default(None);
    model.unwrap()
}

/// Runs `name` folded and unfolded (and folded on NCHW16c where the CPU has the blocked kernel); returns the worst
/// absolute error over logits, features and stages.
fn check(name: &str) -> f32 {
    let c = case(name);
    // `ZOO_TEST_DEVICE=cuda:0` (a `--features cuda` build) runs the same comparison on a GPU.
    let dev = common::device();
    let input = &c.refs["input"].to_device(&dev).unwrap();
    let mut worst = 0f32;
    let blocked = dev.is_cpu() && Engine::current() == Engine::Avx512;
    let layouts = [
        (BnMode::Fold, Layout::Nchw),
        (BnMode::Keep, Layout::Nchw),
        (BnMode::Fold, Layout::Nchw16c),
    ];
    for (mode, layout) in layouts.into_iter().filter(|&(_, l)| l == Layout::Nchw || blocked) {
        let weights = c
            .weights
            .iter()
            .map(|(k, v)| (k.clone(), v.to_device(&dev).unwrap()))
            .collect();
        let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
        let model = match layout {
            Layout::Nchw => ResNet::load(&c.cfg, vb, mode).unwrap(),
            Layout::Nchw16c => {
                // The 1x1s with whole blocks of 16 channels on both sides hold their weights for the blocked kernel;
                // where every block suits the layout the blocks run on it (`families_on_nchw16c`), else those
                // convs convert around themselves.
                let model = load_blocked(&c.cfg, vb, mode);
                println!("{name}: blocks on {}", model.block_layout().name());
                model
            }
        };
        let mode = format!("{mode:?} {}", layout.name());
        let logits = model.forward(input).unwrap();
        let mut outputs = vec![("logits".to_string(), logits)];
        let stages = model.forward_stages(input).unwrap();
        outputs.push(("features".to_string(), stages.last().unwrap().clone()));
        for (i, s) in stages.into_iter().enumerate() {
            outputs.push((format!("stage{}", i + 1), s));
        }
        // timm's forward_intermediates: index 0 is the stem's activation, 1..=4 the stages.
        let inter = model.forward_intermediates(input, &[0, 1, 2, 3, 4]).unwrap();
        outputs.push(("act1".to_string(), inter[0].clone()));
        for (i, s) in inter.into_iter().enumerate().skip(1) {
            outputs.push((format!("stage{i}"), s));
        }
        if let Some(want) = c.refs.get("feature_info") {
            let want = want.to_vec2::<f32>().unwrap();
            let got: Vec<Vec<f32>> = model
                .feature_info()
                .iter()
                .map(|f| vec![f.num_chs as f32, f.reduction as f32])
                .collect();
            assert_eq!(got, want, "{name}: feature_info (channels, reduction)");
        }
        for (key, got) in outputs {
            let Some(want) = c.refs.get(&key) else { continue };
            let err = common::max_abs_diff(&got.to_device(&Device::Cpu).unwrap(), want);
            // Absolute 1e-4 on values of order 1; scaled for the few large logits (up to ~74).
            let tol = 1e-4 * common::max_abs(want).max(1.0);
            assert!(err <= tol, "{name} {mode} {key}: max abs error {err:e} > {tol:e}");
            worst = worst.max(err);
        }
    }
    println!("{name}: max abs error {worst:.2e}");
    worst
}

#[test]
fn basic() {
    check("basic");
}

#[test]
fn bottleneck() {
    check("bottleneck");
}

/// ResNet-50's shape (bottlenecks, and v1's stride on the first 1x1) with whole blocks of 16 channels in every
/// block conv: under NCHW16c its blocks run on that layout, the 1x1s on the blocked kernel.
#[test]
fn bottleneck_whole_channel_blocks() {
    check("bottleneck16");
    check("v1_16");
}

/// `zoo bench --layers`'s walk of a network on NCHW16c: the two conversions as ops around the blocks, every conv's
/// multiply-adds counted as on NCHW, the shapes shown as NCHW, and the logits the forward pass gives.
#[test]
fn the_op_walk_on_nchw16c_is_the_pass() {
    if Engine::current() != Engine::Avx512 {
        return;
    }
    use resnet::profile::{profile, OpKind, Timing};
    let c = case("bottleneck16");
    let input = &c.refs["input"];
    let sync = || Ok(());
    let timing = Timing {
        repeats: 1,
        sync: &sync,
    };
    let plain = ResNet::load(
        &c.cfg,
        VarBuilder::from_tensors(c.weights.clone(), DType::F32, &Device::Cpu),
        BnMode::Fold,
    )
    .unwrap();
    let blocked = load_blocked(
        &c.cfg,
        VarBuilder::from_tensors(c.weights.clone(), DType::F32, &Device::Cpu),
        BnMode::Fold,
    );
    let (a, b) = (
        profile(&plain, input, &timing).unwrap(),
        profile(&blocked, input, &timing).unwrap(),
    );
    let names: Vec<&str> = b
        .iter()
        .filter(|o| o.kind == OpKind::Reorder)
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, ["to_nchw16c", "to_nchw"]);
    let ops = |r: &[resnet::profile::OpRecord]| -> Vec<(String, Vec<usize>, u64)> {
        r.iter()
            .filter(|o| o.kind != OpKind::Reorder)
            .map(|o| (o.name.clone(), o.shape.clone(), o.macs))
            .collect()
    };
    assert_eq!(ops(&a), ops(&b));
    let logits = blocked.forward(input).unwrap();
    let err = common::max_abs_diff(&logits, &c.refs["logits"]);
    assert!(err <= 1e-4 * common::max_abs(&c.refs["logits"]).max(1.0), "{err:e}");
}

/// Which networks run their blocks on NCHW16c when loaded under it, folded: those whose every block has an
/// identity or projection shortcut, no pool, and whole blocks of 16 channels on both sides of every conv; not the
/// reduced fixtures' 8- and 24-channel blocks, nor ResNet-D's avg-down shortcut, nor an unfolded network.
#[test]
fn families_on_nchw16c() {
    if Engine::current() != Engine::Avx512 {
        return;
    }
    for (name, want) in [
        ("bottleneck16", Layout::Nchw16c),
        ("v1_16", Layout::Nchw16c),
        ("big256", Layout::Nchw16c),
        ("wide", Layout::Nchw16c),
        ("bottleneck", Layout::Nchw),
        ("resnet_d", Layout::Nchw),
    ] {
        let c = case(name);
        let vb = VarBuilder::from_tensors(c.weights, DType::F32, &Device::Cpu);
        assert_eq!(load_blocked(&c.cfg, vb, BnMode::Fold).block_layout(), want, "{name}");
        let vb = VarBuilder::from_tensors(case(name).weights, DType::F32, &Device::Cpu);
        assert_eq!(
            load_blocked(&c.cfg, vb, BnMode::Keep).block_layout(),
            Layout::Nchw,
            "{name} unfolded"
        );
    }
}

#[test]
fn resnext_grouped_conv() {
    check("resnext");
}

#[test]
fn wide() {
    check("wide");
}

#[test]
fn resnet_d_deep_stem_avg_down_odd_sizes() {
    check("resnet_d");
    check("resnet_d_basic");
}

#[test]
fn resnet_t_deep_tiered_stem() {
    check("resnet_t");
}

#[test]
fn v1_stride_on_first_1x1_with_eps_1e3() {
    check("v1");
}

/// timm's `output_stride=16` and `=8` (dilated instead of strided stages) on ResNet-50's and ResNet-50-D's
/// layouts: the dilated 3x3 convs, the first block's `first_dilation`, and the avg-down shortcut's
/// `AvgPool2dSame` in dilated stages.
#[test]
fn output_stride_16_and_8() {
    for name in ["resnet50_os16", "resnet50_os8", "resnet50d_os16", "resnet50d_os8"] {
        check(name);
    }
}

/// 256x256 input: 64 channels x 64 x 64 after the stem, where a Candle conv bug once hid.
#[test]
fn big256() {
    check("big256");
}

/// The same on one thread and on two, where (with AVX-512) the 64 x 64 maps' 3x3s run Winograd's F(4x4, 3x3): a
/// call runs it where it has two chunks of tiles per thread, which on more threads these maps may not have.
#[test]
fn big256_on_one_and_two_threads() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| check("big256"));
    }
}

#[test]
fn fixture_is_float32_accurate() {
    // The generator also stored the float64 result: PyTorch's own f32 error sets the scale of our tolerance.
    let c = case("basic");
    let err = common::max_abs_diff(&c.refs["logits"], &c.refs["logits_f64"].to_dtype(DType::F32).unwrap());
    assert!(err < 1e-4, "PyTorch f32 vs f64: {err:e}");
}
