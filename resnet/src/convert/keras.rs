//! Keras ResNets (TF.js layers format) to plain canonical checkpoints.
//!
//! Keras' ImageNet ResNet-50 is the original "v1" network trained in Caffe: stride on the first 1x1
//! conv, convolutions with a bias, BatchNorm eps 1e-3, BGR input with the Caffe mean subtracted. The
//! importer turns it into an ordinary `resnet50_v1` checkpoint that needs none of those knobs:
//!
//! - conv biases and the eps go into the BN statistics, exactly: `BN_eps(conv(x) + b)` equals
//!   `BN_1e-5(conv(x))` with `running_mean' = mean - b` and `running_var' = var + eps - 1e-5`;
//! - BGR input becomes RGB by reversing `conv1`'s input channels;
//! - the Caffe preprocessing (`x * 255 - mean_bgr`) is stored as mean/std in 0..1 units
//!   (`(x - m) / (1/255)`, `m` the RGB mean / 255), which the usual normalization computes.
//!
//! Both Keras namings are understood: the Keras 2.2 one of `keras.applications.ResNet50`
//! (`res2a_branch2a`, `bn2a_branch1`, `fc1000`) and the later one (`conv2_block1_1_conv`,
//! `conv2_block1_0_bn`, `predictions`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use weights::checkpoint::TensorInfo;
use weights::tfjs::TfjsModel;
use weights::{CropMode, Interpolation, PreprocessConfig};

use crate::error::Error as ConvertError;
use crate::load::{check_tensors, expected_tensors, tensor_info, write_metadata};
use crate::{ResNetConfig, StridePlacement};

/// The BatchNorm eps of the converted checkpoint (PyTorch's default, the config default).
const TARGET_EPS: f64 = 1e-5;
/// Keras' BatchNormalization default, used when a layer's config omits `epsilon`.
const KERAS_DEFAULT_EPS: f64 = 1e-3;
/// Caffe's ImageNet mean, in RGB order and 0..255 units.
const CAFFE_MEAN_RGB: [f64; 3] = [123.68, 116.779, 103.939];

/// What a Keras layer is in the canonical network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalLayer {
    /// A convolution at this module path (`conv1`, `layer1.0.conv2`, `layer1.0.downsample.0`).
    Conv(String),
    /// A BatchNorm at this module path (`bn1`, `layer1.0.bn2`, `layer1.0.downsample.1`).
    BatchNorm(String),
    /// The classifier (`fc`).
    Fc,
}

/// The canonical layer of a Keras ResNet layer name, or `None` for a name of neither Keras naming.
pub fn canonical_layer(keras: &str) -> Option<CanonicalLayer> {
    match keras {
        "conv1" | "conv1_conv" => return Some(CanonicalLayer::Conv("conv1".into())),
        "bn_conv1" | "conv1_bn" => return Some(CanonicalLayer::BatchNorm("bn1".into())),
        "fc1000" | "predictions" => return Some(CanonicalLayer::Fc),
        _ => {}
    }
    old_style(keras).or_else(|| new_style(keras))
}

/// `res{S}{block}_branch{2a,2b,2c,1}` and `bn...`: stage S >= 2 is `layer{S-1}`; block `a` is 0, `b` 1,
/// ... (deeper Caffe models number them `b1`, `b2`, ... after `a`).
fn old_style(name: &str) -> Option<CanonicalLayer> {
    let (is_bn, rest) = match name.strip_prefix("bn") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("res")?),
    };
    let (stage_block, branch) = rest.split_once("_branch")?;
    let stage_len = stage_block.find(|c: char| !c.is_ascii_digit())?;
    let stage: usize = stage_block[..stage_len].parse().ok()?;
    let block = block_index(&stage_block[stage_len..])?;
    let unit = match branch {
        "2a" => 1,
        "2b" => 2,
        "2c" => 3,
        "1" => 0,
        _ => return None,
    };
    block_layer(stage, block, unit, is_bn)
}

fn block_index(letters: &str) -> Option<usize> {
    let mut chars = letters.chars();
    let first = chars.next()?;
    let tail = chars.as_str();
    match (first, tail) {
        ('a'..='z', "") => Some(first as usize - 'a' as usize),
        ('b', n) => n.parse().ok(),
        _ => None,
    }
}

/// `conv{S}_block{B}_{U}_{conv,bn}`: stage S >= 2, block B from 1, unit 1..3 or 0 for the shortcut.
fn new_style(name: &str) -> Option<CanonicalLayer> {
    let rest = name.strip_prefix("conv")?;
    let (stage, rest) = rest.split_once("_block")?;
    let mut parts = rest.split('_');
    let block: usize = parts.next()?.parse().ok()?;
    let unit: usize = parts.next()?.parse().ok()?;
    let is_bn = match parts.next()? {
        "bn" => true,
        "conv" => false,
        _ => return None,
    };
    if parts.next().is_some() || unit > 3 {
        return None;
    }
    block_layer(stage.parse().ok()?, block.checked_sub(1)?, unit, is_bn)
}

/// Unit 0 is the projection shortcut, units 1..3 the bottleneck's convs.
fn block_layer(stage: usize, block: usize, unit: usize, is_bn: bool) -> Option<CanonicalLayer> {
    let prefix = format!("layer{}.{block}", stage.checked_sub(1).filter(|s| *s >= 1)?);
    let path = match (unit, is_bn) {
        (0, false) => format!("{prefix}.downsample.0"),
        (0, true) => format!("{prefix}.downsample.1"),
        (u, false) => format!("{prefix}.conv{u}"),
        (u, true) => format!("{prefix}.bn{u}"),
    };
    Some(if is_bn {
        CanonicalLayer::BatchNorm(path)
    } else {
        CanonicalLayer::Conv(path)
    })
}

/// The BatchNorm that follows the convolution at `conv`.
fn bn_after(conv: &str) -> String {
    if conv == "conv1" {
        return "bn1".into();
    }
    if let Some(block) = conv.strip_suffix(".downsample.0") {
        return format!("{block}.downsample.1");
    }
    let (block, unit) = conv.rsplit_once(".conv").expect("bottleneck conv path");
    format!("{block}.bn{unit}")
}

/// The converted checkpoint, not yet written.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Canonical names, PyTorch layouts, f32.
    pub tensors: HashMap<String, Tensor>,
    /// `zoo.arch`, `zoo.config`, `zoo.preprocess`, `zoo.label_set`.
    pub metadata: HashMap<String, String>,
    /// The architecture's name (`resnet50_v1`).
    pub arch: String,
    /// The architecture.
    pub config: ResNetConfig,
    /// How many conv biases were folded into BN statistics.
    pub folded_biases: usize,
}

/// What [`convert_tfjs`] wrote.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    /// The file written.
    pub out: PathBuf,
    /// The architecture's name.
    pub arch: String,
    /// The architecture.
    pub config: ResNetConfig,
    /// Tensors written.
    pub num_tensors: usize,
    /// Stored values (BN running statistics included).
    pub num_values: usize,
    /// Conv biases folded into BatchNorm statistics.
    pub folded_biases: usize,
}

/// Converts a Keras ResNet TF.js model (`model.json` + shards) and writes it as a safetensors checkpoint.
pub fn convert_tfjs(model_json: &Path, out: &Path) -> Result<ConvertSummary, ConvertError> {
    let c = convert_tfjs_tensors(model_json)?;
    weights::checkpoint::save(out, &c.tensors, &c.metadata)?;
    Ok(ConvertSummary {
        out: out.to_path_buf(),
        num_tensors: c.tensors.len(),
        num_values: c.tensors.values().map(Tensor::elem_count).sum(),
        arch: c.arch,
        config: c.config,
        folded_biases: c.folded_biases,
    })
}

/// Converts a Keras ResNet TF.js model into canonical tensors and metadata, checked against the
/// architecture they claim, without writing anything.
pub fn convert_tfjs_tensors(model_json: &Path) -> Result<Converted, ConvertError> {
    let model = TfjsModel::open(model_json)?;
    let raw = model.load_torch_layout(&Device::Cpu)?;
    let err = |reason: String| ConvertError::Import {
        path: model_json.to_path_buf(),
        reason,
    };
    let mut parts = Parts::default();
    for w in &model.weights {
        let layer = canonical_layer(w.layer_name())
            .ok_or_else(|| err(format!("weight `{}` belongs to no known Keras ResNet layer", w.name)))?;
        parts
            .add(&layer, w.variable(), raw[&w.name].clone())
            .map_err(|r| err(format!("`{}`: {r}", w.name)))?;
        if let (CanonicalLayer::BatchNorm(bn), Some(l)) = (&layer, model.layer_of(w)) {
            let eps = l
                .config
                .get("epsilon")
                .and_then(Value::as_f64)
                .unwrap_or(KERAS_DEFAULT_EPS);
            parts.bn_eps.insert(bn.clone(), eps);
        }
    }
    let folded_biases = parts.fold_conv_biases().map_err(err)?;
    reverse_input_channels(&mut parts.tensors).map_err(|e| err(e.to_string()))?;
    let (arch, config) = infer_config(&model, &parts.tensors).map_err(err)?;
    let infos: Vec<TensorInfo> = parts.tensors.iter().map(|(name, t)| tensor_info(name, t)).collect();
    check_tensors(model_json, &arch, &expected_tensors(&config)?, &infos)?;
    // Keras' ImageNet heads use the standard class order (checked against assets/labels.json in tests).
    let metadata = write_metadata(&arch, &config, &caffe_preprocess(), None);
    Ok(Converted {
        tensors: parts.tensors,
        metadata,
        arch,
        config,
        folded_biases,
    })
}

/// The Caffe preprocessing of Keras' ImageNet ResNets, for RGB input: `x * 255 - mean_rgb`, written as
/// `(x - mean_rgb / 255) / (1 / 255)`. Resize 256, centre crop 224, bilinear.
pub fn caffe_preprocess() -> PreprocessConfig {
    PreprocessConfig {
        input_size: [3, 224, 224],
        crop_pct: 0.875,
        crop_mode: CropMode::Center,
        interpolation: Interpolation::Bilinear,
        mean: CAFFE_MEAN_RGB.map(|m| (m / 255.0) as f32),
        std: [(1.0 / 255.0) as f32; 3],
    }
}

/// Canonical tensors being assembled, with what is still to fold.
#[derive(Default)]
struct Parts {
    tensors: HashMap<String, Tensor>,
    /// Conv bias by conv path, to be folded into the following BN.
    conv_bias: BTreeMap<String, Tensor>,
    /// Keras eps by BN path.
    bn_eps: HashMap<String, f64>,
}

impl Parts {
    fn add(&mut self, layer: &CanonicalLayer, variable: &str, t: Tensor) -> Result<(), String> {
        let name = match (layer, variable) {
            (CanonicalLayer::Conv(p), "kernel") => format!("{p}.weight"),
            (CanonicalLayer::Conv(p), "bias") => {
                self.conv_bias.insert(p.clone(), t);
                return Ok(());
            }
            (CanonicalLayer::BatchNorm(p), v) => format!("{p}.{}", bn_variable(v)?),
            (CanonicalLayer::Fc, "kernel") => "fc.weight".into(),
            (CanonicalLayer::Fc, "bias") => "fc.bias".into(),
            (_, v) => return Err(format!("unknown variable `{v}`")),
        };
        self.tensors.insert(name, t);
        Ok(())
    }

    /// `BN_eps(conv(x) + b)` = `BN_1e-5(conv(x))` with `mean - b` and `var + eps - 1e-5`, in f64 so the
    /// stored statistics round once. Every BN is adjusted, with or without a conv bias before it.
    fn fold_conv_biases(&mut self) -> Result<usize, String> {
        for (bn, eps) in &self.bn_eps {
            let var = self
                .tensors
                .get(&format!("{bn}.running_var"))
                .ok_or(format!("`{bn}` has no moving_variance"))?;
            let adjusted = (var.to_dtype(DType::F64).map_err(|e| e.to_string())? + (eps - TARGET_EPS))
                .and_then(|v| v.to_dtype(DType::F32))
                .map_err(|e| e.to_string())?;
            self.tensors.insert(format!("{bn}.running_var"), adjusted);
        }
        for (conv, bias) in &self.conv_bias {
            let key = format!("{}.running_mean", bn_after(conv));
            let mean = self
                .tensors
                .get(&key)
                .ok_or(format!("conv `{conv}` has a bias but no BatchNorm after it"))?;
            let f64 = |t: &Tensor| t.to_dtype(DType::F64);
            let shifted = (f64(mean).and_then(|m| m - f64(bias)?)).and_then(|m| m.to_dtype(DType::F32));
            self.tensors
                .insert(key, shifted.map_err(|e| format!("conv `{conv}` bias: {e}"))?);
        }
        Ok(self.conv_bias.len())
    }
}

fn bn_variable(keras: &str) -> Result<&'static str, String> {
    Ok(match keras {
        "gamma" => "weight",
        "beta" => "bias",
        "moving_mean" => "running_mean",
        "moving_variance" => "running_var",
        other => return Err(format!("unknown BatchNorm variable `{other}`")),
    })
}

/// Keras' ResNets see BGR; reversing the first conv's input channels makes the network take RGB.
fn reverse_input_channels(tensors: &mut HashMap<String, Tensor>) -> candle_core::Result<()> {
    let Some(w) = tensors.get("conv1.weight") else {
        return Ok(());
    };
    let channels = w.dim(1)? as u32;
    let order = Tensor::new((0..channels).rev().collect::<Vec<u32>>(), w.device())?;
    let reversed = w.index_select(&order, 1)?;
    tensors.insert("conv1.weight".into(), reversed);
    Ok(())
}

/// Depths from the block indices present, classes from the classifier, stride placement from the
/// stored strides of `layer2.0`'s first conv; named after the matching variant.
fn infer_config(model: &TfjsModel, tensors: &HashMap<String, Tensor>) -> Result<(String, ResNetConfig), String> {
    let mut depths = [0usize; 4];
    for name in tensors.keys() {
        let Some((stage, block)) = stage_block(name) else {
            continue;
        };
        let d = depths
            .get_mut(stage - 1)
            .ok_or(format!("`{name}`: a ResNet has four stages"))?;
        *d = (*d).max(block + 1);
    }
    let fc = tensors
        .get("fc.weight")
        .ok_or("no classifier (`fc1000`/`predictions`) found")?;
    let placement = stride_placement(model)?;
    let depth = match depths {
        [3, 4, 6, 3] => "50",
        [3, 4, 23, 3] => "101",
        [3, 8, 36, 3] => "152",
        other => return Err(format!("stage depths {other:?} are no ResNet-50/101/152")),
    };
    let arch = match placement {
        StridePlacement::FirstOneByOne => format!("resnet{depth}_v1"),
        StridePlacement::ThreeByThree => format!("resnet{depth}"),
    };
    let config = crate::variants::by_name(&arch)
        .map_err(|e| e.to_string())?
        .with_num_classes(fc.dim(0).map_err(|e| e.to_string())?);
    Ok((arch, config))
}

/// `layer{S}.{B}.…` -> (S, B).
fn stage_block(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("layer")?;
    let mut parts = rest.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Where the stride sits: on the first 1x1 conv of `layer2.0` ("v1") or on its 3x3 ("v1.5").
fn stride_placement(model: &TfjsModel) -> Result<StridePlacement, String> {
    let first_conv = CanonicalLayer::Conv("layer2.0.conv1".into());
    let layer = model
        .layers
        .iter()
        .find(|l| canonical_layer(&l.name).as_ref() == Some(&first_conv))
        .ok_or("no first conv of the second stage in the topology")?;
    let strides = layer
        .config
        .get("strides")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .and_then(Value::as_u64);
    Ok(match strides {
        Some(2) => StridePlacement::FirstOneByOne,
        _ => StridePlacement::ThreeByThree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(p: &str) -> Option<CanonicalLayer> {
        Some(CanonicalLayer::Conv(p.into()))
    }

    fn bn(p: &str) -> Option<CanonicalLayer> {
        Some(CanonicalLayer::BatchNorm(p.into()))
    }

    #[test]
    fn keras_names_map_to_canonical_layers() {
        assert_eq!(canonical_layer("conv1"), conv("conv1"));
        assert_eq!(canonical_layer("bn_conv1"), bn("bn1"));
        assert_eq!(canonical_layer("res2a_branch2a"), conv("layer1.0.conv1"));
        assert_eq!(canonical_layer("bn2a_branch1"), bn("layer1.0.downsample.1"));
        assert_eq!(canonical_layer("res5c_branch2c"), conv("layer4.2.conv3"));
        assert_eq!(canonical_layer("bn4f_branch2b"), bn("layer3.5.bn2"));
        assert_eq!(canonical_layer("res4b22_branch2a"), conv("layer3.22.conv1"));
        assert_eq!(canonical_layer("conv3_block1_0_conv"), conv("layer2.0.downsample.0"));
        assert_eq!(canonical_layer("conv5_block3_3_bn"), bn("layer4.2.bn3"));
        assert_eq!(canonical_layer("fc1000"), Some(CanonicalLayer::Fc));
        for other in [
            "activation_3",
            "res1a_branch2a",
            "res2a_branch3",
            "conv2_block0_1_conv",
            "avg_pool",
        ] {
            assert_eq!(canonical_layer(other), None, "{other}");
        }
    }

    #[test]
    fn bn_follows_its_conv() {
        assert_eq!(bn_after("conv1"), "bn1");
        assert_eq!(bn_after("layer3.4.conv2"), "layer3.4.bn2");
        assert_eq!(bn_after("layer1.0.downsample.0"), "layer1.0.downsample.1");
    }

    /// y = BN_eps(x + b) against BN_1e-5 with the folded statistics, for a few values.
    #[test]
    fn folding_bias_and_eps_is_exact() {
        let (gamma, beta, mean, var, b, eps) = (1.7f64, -0.3, 0.25, 0.04, 0.6, 1e-3);
        let mut parts = Parts::default();
        let t = |v: f64| Tensor::new(&[v as f32], &Device::Cpu).unwrap();
        for (k, v) in [
            ("weight", gamma),
            ("bias", beta),
            ("running_mean", mean),
            ("running_var", var),
        ] {
            parts.tensors.insert(format!("layer1.0.bn2.{k}"), t(v));
        }
        parts.conv_bias.insert("layer1.0.conv2".into(), t(b));
        parts.bn_eps.insert("layer1.0.bn2".into(), eps);
        assert_eq!(parts.fold_conv_biases().unwrap(), 1);
        let get = |k: &str| parts.tensors[&format!("layer1.0.bn2.{k}")].to_vec1::<f32>().unwrap()[0] as f64;
        for x in [-2.0, 0.0, 0.5, 3.0] {
            let keras = gamma * (x + b - mean) / (var + eps).sqrt() + beta;
            let ours = gamma * (x - get("running_mean")) / (get("running_var") + TARGET_EPS).sqrt() + beta;
            assert!((keras - ours).abs() < 1e-6, "{x}: {keras} vs {ours}");
        }
    }

    #[test]
    fn caffe_preprocessing_in_unit_scale() {
        let p = caffe_preprocess();
        // A pixel of 200 (blue channel) becomes 200 - 103.939 under both formulas.
        let x = 200.0f32 / 255.0;
        let ours = (x - p.mean[2]) / p.std[2];
        assert!((ours - (200.0 - 103.939)).abs() < 1e-3, "{ours}");
    }
}
