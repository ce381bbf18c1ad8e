//! Checkpoints from elsewhere into ResNets: loading any safetensors checkpoint with its tensors checked
//! against the architecture first ([`load_checkpoint`]), and importers from other frameworks ([`keras`]).
//!
//! The check runs before anything is built so that a wrong checkpoint is reported by tensor name with
//! both shapes, instead of as the first failing `VarBuilder::get` deep inside a stage.

pub mod keras;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use weights::checkpoint::{
    Checkpoint, CheckpointError, TensorInfo, META_ARCH, META_CONFIG, META_LABELS, META_LABEL_SET, META_PREPROCESS,
};
use weights::PreprocessConfig;

use crate::keys::{canonical_name, KeyScheme};
use crate::{BnMode, ResNet, ResNetConfig};

/// Why a checkpoint could not be converted or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Tfjs(#[from] weights::tfjs::TfjsError),
    #[error(transparent)]
    Model(#[from] crate::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Neither the metadata nor the caller says which architecture the checkpoint is.
    #[error(
        "{path} names no architecture (no `{META_CONFIG}` or `{META_ARCH}` metadata): pass the model config explicitly"
    )]
    NoConfig { path: PathBuf },
    /// The tensors do not fit the architecture; every problem is listed.
    #[error("{path} does not fit the architecture ({} problem(s)):\n{}", problems.len(), list(problems))]
    Mismatch { path: PathBuf, problems: Vec<TensorProblem> },
    /// An importer met something it does not know how to translate.
    #[error("cannot import {path}: {reason}")]
    Import { path: PathBuf, reason: String },
}

/// One way a stored tensor disagrees with the architecture (canonical names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    Missing {
        name: String,
        expected: Vec<usize>,
    },
    Unexpected {
        name: String,
        found: Vec<usize>,
    },
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Weights must be floating point; an integer tensor means the wrong entry was mapped here.
    DType {
        name: String,
        found: DType,
    },
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Missing { name, expected } => {
                write!(f, "missing tensor `{name}` (expected shape {expected:?})")
            }
            TensorProblem::Unexpected { name, found } => write!(f, "unexpected tensor `{name}` of shape {found:?}"),
            TensorProblem::Shape { name, expected, found } => {
                write!(f, "tensor `{name}` has shape {found:?}, expected {expected:?}")
            }
            TensorProblem::DType { name, found } => {
                write!(f, "tensor `{name}` has dtype {found:?}, expected a float type")
            }
        }
    }
}

/// At most 20 problems, one a line: a checkpoint of the wrong family would otherwise list hundreds.
fn list(problems: &[TensorProblem]) -> String {
    let mut lines: Vec<String> = problems.iter().take(20).map(|p| format!("  {p}")).collect();
    if problems.len() > 20 {
        lines.push(format!("  ... and {} more", problems.len() - 20));
    }
    lines.join("\n")
}

/// What a checkpoint's metadata says besides the weights.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub path: PathBuf,
    /// `zoo.arch`, when stored.
    pub arch: Option<String>,
    /// The config the model was built with.
    pub config: ResNetConfig,
    /// The eval preprocessing, when stored.
    pub preprocess: Option<PreprocessConfig>,
    /// Class names: the stored list, else the named label set.
    pub labels: Option<Vec<String>>,
    /// How the stored names were mapped to canonical ones.
    pub key_scheme: KeyScheme,
}

/// Loads a safetensors checkpoint into a [`ResNet`] on `device` (f32).
///
/// The architecture is `cfg_override` when given, else the stored `zoo.config`, else the variant named by
/// `zoo.arch`. Stored names are mapped with [`KeyScheme::detect`] and [`canonical_name`]; every tensor is
/// checked against the architecture (name, shape, float dtype) before the network is built.
pub fn load_checkpoint(
    path: &Path,
    cfg_override: Option<&ResNetConfig>,
    bn_mode: BnMode,
    device: &Device,
) -> Result<(ResNet, CheckpointInfo), ConvertError> {
    let ck = Checkpoint::open(path)?;
    let config = checkpoint_config(&ck, cfg_override)?;
    let key_scheme = KeyScheme::detect(ck.tensors().iter().map(|t| t.name.as_str()));
    let stored = canonical_infos(&ck, key_scheme);
    check_tensors(path, &expected_tensors(&config)?, &stored)?;
    let mut tensors = HashMap::with_capacity(stored.len());
    for (stored_name, t) in ck.load(device)? {
        if let Some(name) = canonical_name(key_scheme, &stored_name) {
            tensors.insert(name, t);
        }
    }
    let model = ResNet::load(&config, VarBuilder::from_tensors(tensors, DType::F32, device), bn_mode)?;
    let info = CheckpointInfo {
        path: path.to_path_buf(),
        arch: ck.metadata().get(META_ARCH).cloned(),
        config,
        preprocess: ck.metadata_json(META_PREPROCESS)?,
        labels: checkpoint_labels(&ck)?,
        key_scheme,
    };
    Ok((model, info))
}

/// The override, else `zoo.config`, else the variant named by `zoo.arch`.
fn checkpoint_config(ck: &Checkpoint, cfg_override: Option<&ResNetConfig>) -> Result<ResNetConfig, ConvertError> {
    if let Some(cfg) = cfg_override {
        return Ok(cfg.clone());
    }
    if let Some(cfg) = ck.metadata_json::<ResNetConfig>(META_CONFIG)? {
        return Ok(cfg);
    }
    match ck.metadata().get(META_ARCH) {
        Some(arch) => Ok(crate::variants::by_name(arch)?),
        None => Err(ConvertError::NoConfig { path: ck.path().to_path_buf() }),
    }
}

fn checkpoint_labels(ck: &Checkpoint) -> Result<Option<Vec<String>>, ConvertError> {
    if let Some(labels) = ck.metadata_json::<Vec<String>>(META_LABELS)? {
        return Ok(Some(labels));
    }
    Ok(ck.metadata().get(META_LABEL_SET).and_then(|set| weights::labels::label_set(set)))
}

/// The stored tensors under their canonical names; entries that are no model tensors are dropped.
fn canonical_infos(ck: &Checkpoint, scheme: KeyScheme) -> Vec<TensorInfo> {
    ck.tensors()
        .iter()
        .filter_map(|t| canonical_name(scheme, &t.name).map(|name| TensorInfo { name, ..t.clone() }))
        .collect()
}

/// Every tensor the network asks for when built from `cfg`, with its shape (canonical names).
///
/// Found by building the network once on a backend that records each request and hands back a
/// broadcast zero (no memory is allocated for the weights).
pub fn expected_tensors(cfg: &ResNetConfig) -> Result<BTreeMap<String, Vec<usize>>, ConvertError> {
    let recorder = Recorder(Mutex::new(BTreeMap::new()));
    let vb = VarBuilder::from_backend(Box::new(&recorder), DType::F32, Device::Cpu);
    ResNet::load(cfg, vb, BnMode::Keep)?;
    Ok(recorder.0.into_inner().expect("recorder lock"))
}

struct Recorder(Mutex<BTreeMap<String, Vec<usize>>>);

impl SimpleBackend for &Recorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().expect("recorder lock").insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{name}` was requested without a shape, which the shape check cannot record")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The preprocessing to assume for weights that record none: CIFAR nets see 32x32 inputs, everything
/// else ImageNet's 224 with its mean and std.
pub fn default_preprocess(config: &ResNetConfig) -> PreprocessConfig {
    match config.stem {
        crate::StemKind::Cifar { .. } => PreprocessConfig::cifar(),
        _ => PreprocessConfig::imagenet(),
    }
}

/// Name, shape and dtype of a tensor in memory, for [`check_tensors`].
pub fn tensor_info(name: &str, t: &Tensor) -> TensorInfo {
    TensorInfo { name: name.to_string(), shape: t.dims().to_vec(), dtype: t.dtype() }
}

/// The metadata that makes a written checkpoint self-describing: architecture name and config, the
/// preprocessing its weights expect and, for a standard head size, the label set.
pub fn self_describing_metadata(arch: &str, config: &ResNetConfig, preprocess: &PreprocessConfig) -> HashMap<String, String> {
    let json = |v: serde_json::Result<String>| v.expect("configs serialize");
    let mut meta = HashMap::from([
        (META_ARCH.to_string(), arch.to_string()),
        (META_CONFIG.to_string(), json(serde_json::to_string(config))),
        (META_PREPROCESS.to_string(), json(serde_json::to_string(preprocess))),
    ]);
    if let Some(set) = weights::labels::standard_set(config.num_classes) {
        meta.insert(META_LABEL_SET.to_string(), set.to_string());
    }
    meta
}

/// Compares stored tensors (canonical names) with what the architecture expects.
pub fn check_tensors(
    path: &Path,
    expected: &BTreeMap<String, Vec<usize>>,
    stored: &[TensorInfo],
) -> Result<(), ConvertError> {
    let mut problems = Vec::new();
    let found: BTreeMap<&str, &TensorInfo> = stored.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, shape) in expected {
        match found.get(name.as_str()) {
            None => problems.push(TensorProblem::Missing { name: name.clone(), expected: shape.clone() }),
            Some(t) if &t.shape != shape => problems.push(TensorProblem::Shape {
                name: name.clone(),
                expected: shape.clone(),
                found: t.shape.clone(),
            }),
            Some(t) if !t.dtype.is_float() => {
                problems.push(TensorProblem::DType { name: name.clone(), found: t.dtype })
            }
            Some(_) => {}
        }
    }
    for t in stored.iter().filter(|t| !expected.contains_key(&t.name)) {
        problems.push(TensorProblem::Unexpected { name: t.name.clone(), found: t.shape.clone() });
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(ConvertError::Mismatch { path: path.to_path_buf(), problems }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tensors_of_resnet18() {
        let e = expected_tensors(&crate::variants::resnet18()).unwrap();
        assert_eq!(e["conv1.weight"], [64, 3, 7, 7]);
        assert_eq!(e["layer2.0.downsample.0.weight"], [128, 64, 1, 1]);
        assert_eq!(e["bn1.running_var"], [64]);
        assert_eq!(e["fc.weight"], [1000, 512]);
        assert!(!e.contains_key("layer1.0.downsample.0.weight"));
    }

    #[test]
    fn problems_name_tensor_and_shapes() {
        let expected = BTreeMap::from([("a".to_string(), vec![2, 3]), ("b".to_string(), vec![4])]);
        let info = |name: &str, shape: Vec<usize>, dtype| TensorInfo { name: name.into(), shape, dtype };
        let stored = [info("a", vec![3, 2], DType::F32), info("c", vec![1], DType::F32)];
        let err = check_tensors(Path::new("x.safetensors"), &expected, &stored).unwrap_err().to_string();
        assert!(err.contains("`a` has shape [3, 2], expected [2, 3]"), "{err}");
        assert!(err.contains("missing tensor `b`") && err.contains("unexpected tensor `c`"), "{err}");
        let stored = [info("a", vec![2, 3], DType::I64), info("b", vec![4], DType::F16)];
        let err = check_tensors(Path::new("x"), &expected, &stored).unwrap_err().to_string();
        assert!(err.contains("`a` has dtype I64") && !err.contains("`b`"), "{err}");
    }
}
