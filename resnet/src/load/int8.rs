//! Int8 checkpoints: a network quantized by [`ResNet::quantize_int8`], saved as self-describing safetensors
//! and loaded back ready to run.
//!
//! Per convolution (its checkpoint name, e.g. `layer1.0.conv1`, BatchNorm already folded in):
//! `NAME.weight` int8 OIHW, `NAME.weight_scale` f32 (one per output channel: `w = q * scale`), `NAME.bias`
//! f32, `NAME.input_scale` f32 `[1]` and `NAME.input_zero_point` u8 `[1]` (`x = (q - zero) * scale`); the
//! classifier `fc.weight` / `fc.bias` in f32. The metadata is zoo's (`zoo.config`, `zoo.preprocess`, labels)
//! plus [`META_QUANTIZATION`] (the scheme and the calibration), whose presence marks the file as int8.
//! Python's `safetensors` reads it as it is (`torch.int8` weights).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use weights::checkpoint::Dtype;
use weights::checkpoint::{RawCheckpoint, RawTensor, META_QUANTIZATION};
use weights::PreprocessConfig;

use super::{CheckpointInfo, ConfigSource, LoadOptions, Loaded, StoredMetadata, WeightsFormat};
use crate::error::{Error, Result};
use crate::head::Head;
use crate::keys::KeyScheme;
use crate::layers::{ActQuant, BnMode, Conv};
use crate::ResNet;

/// Writes `model` (quantized by [`ResNet::quantize_int8`]) to `path` atomically, with its architecture
/// name, preprocessing and labels, and `calibration` (how its input ranges were chosen) in the metadata.
pub fn save_int8(
    model: &ResNet,
    arch: &str,
    preprocess: &PreprocessConfig,
    labels: Option<&[String]>,
    calibration: &str,
    path: impl AsRef<Path>,
) -> Result<()> {
    let mut tensors = Vec::new();
    let f32s = |v: &[f32], shape: Vec<usize>| RawTensor {
        dtype: Dtype::F32,
        shape,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    for (name, layer) in model.conv_layers() {
        let conv = layer.conv();
        let act = conv
            .int8_quant()
            .ok_or_else(|| msg(format!("`{name}` is not quantized: quantize the network first")))?;
        let spec = *conv.spec();
        let (o, k) = (spec.out_channels, spec.depth());
        let w = conv.weight()?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        // The conv's weights are its int8 values times their scales: quantizing again gives them back.
        let (q, scales, _) = crate::layers::engine::reduced::quantize_int8(&w, k, k);
        let bias = match conv.bias() {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; o],
        };
        let (a, b, c, d) = spec.weight_shape();
        let mut push = |suffix: &str, t: RawTensor| tensors.push((format!("{name}.{suffix}"), t));
        push(
            "weight",
            RawTensor {
                dtype: Dtype::I8,
                shape: vec![a, b, c, d],
                data: q.iter().map(|&v| v as u8).collect(),
            },
        );
        push("weight_scale", f32s(&scales, vec![o]));
        push("bias", f32s(&bias, vec![o]));
        push("input_scale", f32s(&[act.scale], vec![1]));
        push(
            "input_zero_point",
            RawTensor {
                dtype: Dtype::U8,
                shape: vec![1],
                data: vec![act.zero],
            },
        );
    }
    match model.head() {
        Some(Head::Linear(c)) => {
            let w = c.fc.weight().to_dtype(DType::F32)?;
            let (classes, features) = w.dims2()?;
            tensors.push((
                "fc.weight".into(),
                f32s(&w.flatten_all()?.to_vec1::<f32>()?, vec![classes, features]),
            ));
            if let Some(b) = c.fc.bias() {
                tensors.push((
                    "fc.bias".into(),
                    f32s(&b.to_dtype(DType::F32)?.to_vec1::<f32>()?, vec![classes]),
                ));
            }
        }
        Some(Head::AttentionPool(_)) => return Err(msg("int8 checkpoints of CLIP towers are not supported".into())),
        None => {}
    }
    let mut metadata = super::write_metadata(arch, model.config(), preprocess, labels);
    let scheme = serde_json::json!({
        "format": "int8",
        "weights": "int8, symmetric, per output channel (w = q * weight_scale)",
        "activations": "uint8 per tensor with a zero point (x = (q - input_zero_point) * input_scale)",
        "batchnorm": "folded",
        "calibration": calibration,
    });
    metadata.insert(META_QUANTIZATION.to_string(), scheme.to_string());
    weights::checkpoint::save_raw(path, &tensors, &metadata)?;
    Ok(())
}

fn msg(m: String) -> Error {
    Error::Candle(candle_core::Error::Msg(m))
}

/// `Some` when `path` is an int8 checkpoint: the opened file.
pub(super) fn open_if_int8(path: &Path) -> Result<Option<RawCheckpoint>> {
    if WeightsFormat::detect(path)? != WeightsFormat::Safetensors {
        return Ok(None);
    }
    let raw = RawCheckpoint::open(path)?;
    Ok(raw.metadata().contains_key(META_QUANTIZATION).then_some(raw))
}

/// What an int8 checkpoint says it holds, checked against what the caller asked for.
pub(super) fn info(raw: &RawCheckpoint, opts: &LoadOptions) -> Result<CheckpointInfo> {
    let path = raw.path();
    let meta = StoredMetadata::read(path, raw.metadata())?;
    let bad = |reason: &str| Error::BadMetadata {
        path: path.to_path_buf(),
        key: weights::checkpoint::META_CONFIG.to_string(),
        reason: reason.to_string(),
    };
    let config = meta
        .config
        .clone()
        .ok_or_else(|| bad("an int8 checkpoint must carry its config"))?;
    let arch = meta.arch.clone().unwrap_or_else(|| "custom".into());
    let asked = match (&opts.config, &opts.arch) {
        (Some(c), _) => Some((c.clone(), "the given config".to_string())),
        (None, Some(a)) => Some((
            crate::variants::by_name(a)?.with_num_classes(config.num_classes),
            a.clone(),
        )),
        _ => None,
    };
    if let Some((c, name)) = asked {
        if c != config {
            return Err(Error::ArchitectureConflict {
                path: path.to_path_buf(),
                asked: name,
                stored: arch,
            });
        }
    }
    config.validate().map_err(Error::InvalidConfig)?;
    Ok(CheckpointInfo {
        path: path.to_path_buf(),
        format: WeightsFormat::Safetensors,
        labels: meta.labels_for(path, config.num_classes)?,
        arch,
        config,
        config_source: ConfigSource::FileConfig,
        preprocess: meta.preprocess.clone(),
        key_scheme: KeyScheme::TorchVision,
        self_describing: true,
    })
}

/// Builds the int8 network of `raw` on the CPU: every tensor checked (dtype, shape, finite, positive
/// scales) before it is used.
pub(super) fn load(raw: &RawCheckpoint, opts: &LoadOptions, device: &Device) -> Result<Loaded> {
    let path = raw.path();
    if !device.is_cpu() {
        return Err(msg(format!(
            "{}: int8 checkpoints run on the CPU (--device cpu)",
            path.display()
        )));
    }
    if opts.bn_mode == BnMode::Keep {
        return Err(msg(format!(
            "{}: an int8 checkpoint cannot be trained; use the f32 one",
            path.display()
        )));
    }
    let info = info(raw, opts)?;
    if info.config.head != crate::HeadKind::Linear {
        return Err(msg(format!(
            "{}: int8 checkpoints of CLIP towers are not supported",
            path.display()
        )));
    }
    let corrupt = |reason: String| {
        Error::Checkpoint(weights::checkpoint::CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
    };
    let floats = |name: &str, len: usize, positive: bool| -> Result<Vec<f32>> {
        let bytes = raw.tensor(name, Dtype::F32, &[len])?;
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // A scale must be a positive normal number (its reciprocal, the quantizer's step, then stays finite).
        let bad = |x: &f32| !x.is_finite() || (positive && (*x <= 0.0 || !x.is_normal()));
        if v.iter().any(bad) {
            let what = if positive { "positive normal numbers" } else { "finite" };
            return Err(corrupt(format!("`{name}` holds values that are not {what}")));
        }
        Ok(v)
    };
    // The architecture with placeholder weights, then each conv replaced by its int8 one.
    let mut model = ResNet::new(&info.config, VarBuilder::zeros(DType::F32, &Device::Cpu))?;
    let names: Vec<String> = model.conv_layers().into_iter().map(|(n, _)| n).collect();
    for (name, layer) in names.iter().zip(model.conv_layers_mut()) {
        let spec = *layer.conv().spec();
        let (o, k) = (spec.out_channels, spec.depth());
        let (a, b, c, d) = spec.weight_shape();
        let q = raw.tensor(&format!("{name}.weight"), Dtype::I8, &[a, b, c, d])?;
        let scales = floats(&format!("{name}.weight_scale"), o, true)?;
        let bias = floats(&format!("{name}.bias"), o, false)?;
        let input_scale = floats(&format!("{name}.input_scale"), 1, true)?[0];
        let zero = raw.tensor(&format!("{name}.input_zero_point"), Dtype::U8, &[1])?[0];
        let w: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| f32::from(v as i8) * scales[i / k.max(1)])
            .collect();
        let bias = Tensor::from_vec(bias, o, &Device::Cpu)?;
        let act = ActQuant {
            scale: input_scale,
            zero,
        };
        layer.set_folded_conv(Conv::new_int8(w, Some(bias), spec, act)?)?;
    }
    let classes = info.config.num_classes;
    if classes > 0 {
        let features = info.config.num_features();
        let fc_w = raw.tensor("fc.weight", Dtype::F32, &[classes, features])?;
        let w: Vec<f32> = fc_w
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if w.iter().any(|x| !x.is_finite()) {
            return Err(corrupt("`fc.weight` holds values that are not finite".into()));
        }
        let head = HashMap::from([
            (
                "weight".to_string(),
                Tensor::from_vec(w, (classes, features), &Device::Cpu)?,
            ),
            (
                "bias".to_string(),
                Tensor::from_vec(floats("fc.bias", classes, false)?, classes, &Device::Cpu)?,
            ),
        ]);
        model.replace_head(classes, VarBuilder::from_tensors(head, DType::F32, &Device::Cpu))?;
    }
    Ok(Loaded { model, info })
}
