//! The one loader: any checkpoint file to a checked [`ResNet`], with its preprocessing and class names.
//!
//! Files: self-describing safetensors written by zoo, plain torchvision/timm/HF-transformers safetensors, and
//! PyTorch `.pth` state dicts (read without running any pickled code). The format is taken from the file's
//! first bytes. Stored names are mapped to the canonical torchvision/timm names ([`crate::keys`]).
//!
//! Where the architecture comes from, first match wins:
//! 1. the caller's config ([`LoadOptions::config`]) or architecture name ([`LoadOptions::arch`]);
//! 2. the file's own config (`zoo.config` metadata);
//! 3. the file's architecture name (`zoo.arch`);
//! 4. a fallback name, e.g. from the pretrained registry ([`LoadOptions::fallback_arch`]).
//!
//! When the caller names an architecture and the file records a different one, loading stops with
//! [`Error::ArchitectureConflict`] instead of building the wrong network. With a name rather than a full
//! config, the classifier's size is taken from the file's `fc.weight`. Then every stored tensor is checked
//! against the architecture (names, shapes, float dtypes; missing and extra tensors alike) before anything is
//! built, and every value must be finite.
//!
//! ```no_run
//! # fn main() -> resnet::Result<()> {
//! use candle_core::Device;
//! use resnet::load::{load, LoadOptions};
//! let loaded = load("resnet20.safetensors", &LoadOptions::arch("resnet20"), &Device::Cpu)?;
//! println!("{} from {:?}, classes: {:?}", loaded.info.arch, loaded.info.config_source, loaded.info.labels);
//! # Ok(()) }
//! ```

pub mod check;
mod int8;
pub mod meta;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use weights::checkpoint::{Checkpoint, TensorInfo};
use weights::PreprocessConfig;

use crate::error::{Error, Result};
use crate::keys::{canonical_name, KeyScheme};
use crate::{BnMode, ResNet, ResNetConfig};

pub use check::{check_tensors, expected_tensors, tensor_info};
pub use int8::save_int8;
pub use meta::{write_metadata, StoredMetadata};

/// What the loader should build, and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The architecture, overriding everything the file says (a conflict with the file's own is an error).
    pub config: Option<ResNetConfig>,
    /// The architecture by name ([`crate::variants::by_name`]), when `config` is not given.
    pub arch: Option<String>,
    /// The architecture when neither the caller nor the file names one (e.g. a registry entry's).
    pub fallback_arch: Option<String>,
    /// Keep the later stages at this output stride (see [`ResNetConfig::output_stride`]).
    pub output_stride: Option<usize>,
    /// Fold BatchNorm for inference (default) or keep it for training.
    pub bn_mode: BnMode,
    /// The dtype of the weights in memory (f32 by default).
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            config: None,
            arch: None,
            fallback_arch: None,
            output_stride: None,
            bn_mode: BnMode::Fold,
            dtype: DType::F32,
        }
    }
}

impl LoadOptions {
    /// Options naming the architecture, everything else default.
    pub fn arch(name: impl Into<String>) -> Self {
        Self {
            arch: Some(name.into()),
            ..Self::default()
        }
    }
}

/// The file formats the loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// safetensors, with or without zoo's metadata.
    Safetensors,
    /// A PyTorch zip-format state dict (`torch.save(model.state_dict(), f)`).
    Pth,
}

impl WeightsFormat {
    /// The format of the file at `path`, from its first bytes: a zip archive is PyTorch's format, anything
    /// else is read as safetensors (whose parser then reports what is wrong).
    pub fn detect(path: &Path) -> Result<Self> {
        let io = |source| weights::checkpoint::CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = [0u8; 4];
        let mut file = std::fs::File::open(path).map_err(io)?;
        let n = file.read(&mut head).map_err(io)?;
        Ok(match &head[..n] {
            b"PK\x03\x04" => WeightsFormat::Pth,
            _ => WeightsFormat::Safetensors,
        })
    }
}

/// Where the architecture of a loaded checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// [`LoadOptions::config`] or [`LoadOptions::arch`].
    Caller,
    /// The file's `zoo.config`.
    FileConfig,
    /// The file's `zoo.arch`.
    FileArch,
    /// [`LoadOptions::fallback_arch`].
    Fallback,
}

/// What a checkpoint holds besides its weights.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: WeightsFormat,
    /// The architecture's name (a variant name, or `custom` for a config that names none).
    pub arch: String,
    /// The architecture the model is built with.
    pub config: ResNetConfig,
    /// Where `config` came from.
    pub config_source: ConfigSource,
    /// The eval preprocessing stored in the file, if any.
    pub preprocess: Option<PreprocessConfig>,
    /// The class names: stored, or the standard set for the head's size; `None` when unknown.
    pub labels: Option<Vec<String>>,
    /// How the stored names were mapped to canonical ones.
    pub key_scheme: KeyScheme,
    /// Whether the file names its own architecture (zoo's `zoo.config` or `zoo.arch` metadata): then its
    /// preprocessing and class names take precedence over any other source's.
    pub self_describing: bool,
}

impl CheckpointInfo {
    /// The stored preprocessing, else the default for the architecture ([`default_preprocess`]).
    pub fn preprocess_or_default(&self) -> PreprocessConfig {
        self.preprocess
            .clone()
            .unwrap_or_else(|| default_preprocess(&self.config))
    }
}

/// A checked network and what its file says.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The network, built as [`LoadOptions::bn_mode`] says.
    pub model: ResNet,
    /// Where it came from and what it expects.
    pub info: CheckpointInfo,
}

/// Loads the checkpoint at `path` into a checked [`ResNet`] on `device` (see the module docs).
///
/// On the CPU, a bf16 or f16 [`LoadOptions::dtype`] with BatchNorm folded reads the tensors as f32, folds,
/// and rounds only the convolution weights, once ([`ResNet::load_with_weight_dtype`]).
pub fn load(path: impl AsRef<Path>, opts: &LoadOptions, device: &Device) -> Result<Loaded> {
    if let Some(raw) = int8::open_if_int8(path.as_ref())? {
        return int8::load(&raw, opts, device);
    }
    let reduced_cpu = device.is_cpu() && opts.bn_mode == BnMode::Fold && matches!(opts.dtype, DType::BF16 | DType::F16);
    if reduced_cpu {
        let f32_opts = LoadOptions {
            dtype: DType::F32,
            ..opts.clone()
        };
        let (tensors, info) = load_tensors(path.as_ref(), &f32_opts, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = ResNet::load_with_weight_dtype(&info.config, vb, opts.dtype)?;
        return Ok(Loaded { model, info });
    }
    let (tensors, info) = load_tensors(path.as_ref(), opts, device)?;
    let vb = VarBuilder::from_tensors(tensors, opts.dtype, device);
    let model = ResNet::load(&info.config, vb, opts.bn_mode)?;
    Ok(Loaded { model, info })
}

/// The checked tensors of a checkpoint under their canonical names (in [`LoadOptions::dtype`], all finite)
/// and what the file says: the loader's work without building the network (training builds its own).
pub fn load_tensors(
    path: &Path,
    opts: &LoadOptions,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointInfo)> {
    if int8::open_if_int8(path)?.is_some() {
        return Err(Error::Candle(candle_core::Error::Msg(format!(
            "{} is an int8 checkpoint: it runs (`load`), but its tensors are not f32 weights to train; use the f32 one",
            path.display()
        ))));
    }
    let (source, info) = open(path, opts)?;
    let raw = match source {
        Source::Safetensors(ck) => ck.load(device)?,
        Source::Pth(tensors) => tensors,
    };
    let mut tensors = HashMap::with_capacity(raw.len());
    for (stored, t) in raw {
        let Some(name) = canonical_name(info.key_scheme, &stored) else {
            continue;
        };
        crate::finite::ensure_finite(&t, || format!("tensor `{stored}` of {}", path.display()))?;
        tensors.insert(name, t.to_device(device)?.to_dtype(opts.dtype)?);
    }
    Ok((tensors, info))
}

/// What the file at `path` holds and what it would be built as, checked tensor by tensor, reading only the
/// header of a safetensors file (a `.pth` is read whole).
pub fn inspect(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<CheckpointInfo> {
    if let Some(raw) = int8::open_if_int8(path.as_ref())? {
        return int8::info(&raw, opts);
    }
    Ok(open(path.as_ref(), opts)?.1)
}

/// The opened file, header checked, tensors not yet read (safetensors) or read (pth).
enum Source {
    Safetensors(Checkpoint),
    Pth(HashMap<String, Tensor>),
}

fn open(path: &Path, opts: &LoadOptions) -> Result<(Source, CheckpointInfo)> {
    let format = WeightsFormat::detect(path)?;
    let (source, stored, metadata) = match format {
        WeightsFormat::Safetensors => {
            let ck = Checkpoint::open(path)?;
            let meta = StoredMetadata::read(path, ck.metadata())?;
            let stored = ck.tensors().to_vec();
            (Source::Safetensors(ck), stored, meta)
        }
        WeightsFormat::Pth => {
            let tensors = weights::pth::read_state_dict(path, &Device::Cpu)?;
            let stored = tensors.iter().map(|(n, t)| tensor_info(n, t)).collect();
            (Source::Pth(tensors), stored, StoredMetadata::default())
        }
    };
    let key_scheme = KeyScheme::detect(stored.iter().map(|t| t.name.as_str()));
    let canonical: Vec<TensorInfo> = stored
        .iter()
        .filter_map(|t| canonical_name(key_scheme, &t.name).map(|name| TensorInfo { name, ..t.clone() }))
        .collect();
    let (arch, mut config, config_source) = resolve_config(path, opts, &metadata, &canonical)?;
    if let Some(os) = opts.output_stride {
        config.output_stride = Some(os);
    }
    config.validate().map_err(Error::InvalidConfig)?;
    check_tensors(path, &arch, &expected_tensors(&config)?, &canonical)?;
    let labels = metadata.labels_for(path, config.num_classes)?;
    let info = CheckpointInfo {
        path: path.to_path_buf(),
        format,
        arch,
        config,
        config_source,
        preprocess: metadata.preprocess.clone(),
        labels,
        key_scheme,
        self_describing: metadata.config.is_some() || metadata.arch.is_some(),
    };
    Ok((source, info))
}

/// The size of the classifier the stored tensors hold (0 for a headless checkpoint).
fn stored_classes(stored: &[TensorInfo]) -> usize {
    stored
        .iter()
        .find(|t| t.name == "fc.weight")
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0)
}

/// The architecture by the precedence of the module docs, with its name and source.
fn resolve_config(
    path: &Path,
    opts: &LoadOptions,
    meta: &StoredMetadata,
    stored: &[TensorInfo],
) -> Result<(String, ResNetConfig, ConfigSource)> {
    let by_name = |name: &str| -> Result<ResNetConfig> {
        Ok(crate::variants::by_name(name)?.with_num_classes(stored_classes(stored)))
    };
    // What the file itself says it is.
    let file = match (&meta.config, &meta.arch) {
        (Some(cfg), arch) => Some((
            arch.clone().unwrap_or_else(|| "custom".into()),
            cfg.clone(),
            ConfigSource::FileConfig,
        )),
        (None, Some(arch)) => {
            let cfg = by_name(arch).map_err(|e| Error::BadMetadata {
                path: path.to_path_buf(),
                key: weights::checkpoint::META_ARCH.to_string(),
                reason: e.to_string(),
            })?;
            Some((arch.clone(), cfg, ConfigSource::FileArch))
        }
        (None, None) => None,
    };
    let asked = match (&opts.config, &opts.arch) {
        (Some(cfg), name) => Some((name.clone().unwrap_or_else(|| "custom".into()), cfg.clone(), true)),
        (None, Some(name)) => Some((name.clone(), by_name(name)?, false)),
        (None, None) => None,
    };
    match (asked, file) {
        (Some((name, cfg, explicit)), Some((stored_name, stored_cfg, _))) => {
            if !same_network(&cfg, &stored_cfg) {
                return Err(Error::ArchitectureConflict {
                    path: path.to_path_buf(),
                    asked: name,
                    stored: stored_name,
                });
            }
            // A name stands for the family member; the file's config has its exact details (BN eps, head).
            Ok((name, if explicit { cfg } else { stored_cfg }, ConfigSource::Caller))
        }
        (Some((name, cfg, _)), None) => Ok((name, cfg, ConfigSource::Caller)),
        (None, Some(file)) => Ok(file),
        (None, None) => match &opts.fallback_arch {
            Some(name) => Ok((name.clone(), by_name(name)?, ConfigSource::Fallback)),
            None => Err(Error::NoArchitecture {
                path: path.to_path_buf(),
                candidates: check::fitting_variants(stored),
            }),
        },
    }
}

/// Whether two configs describe the same network up to the classifier's size, BatchNorm's epsilon and the
/// output stride (which change no weight's shape or meaning).
fn same_network(a: &ResNetConfig, b: &ResNetConfig) -> bool {
    let norm = |c: &ResNetConfig| ResNetConfig {
        num_classes: 0,
        bn_eps: 1e-5,
        output_stride: None,
        ..c.clone()
    };
    norm(a) == norm(b)
}

/// The preprocessing to assume for weights that record none: CIFAR nets see 32x32 inputs, everything else
/// ImageNet's 224 with its mean and std.
pub fn default_preprocess(config: &ResNetConfig) -> PreprocessConfig {
    match config.stem {
        crate::StemKind::Cifar { .. } => PreprocessConfig::cifar(),
        _ => PreprocessConfig::imagenet(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_tensors(cfg: &ResNetConfig) -> HashMap<String, Tensor> {
        expected_tensors(cfg)
            .unwrap()
            .into_iter()
            .map(|(name, shape)| {
                let t = match name.ends_with("running_var") {
                    true => Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap(),
                    false => Tensor::randn(0f32, 0.1, shape, &Device::Cpu).unwrap(),
                };
                (name, t)
            })
            .collect()
    }

    fn save(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>, meta: HashMap<String, String>) -> PathBuf {
        let path = dir.join(name);
        weights::checkpoint::save(&path, tensors, &meta).unwrap();
        path
    }

    #[test]
    fn precedence_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::variants::resnet20();
        let t = random_tensors(&cfg);
        let plain = save(dir.path(), "plain.safetensors", &t, HashMap::new());
        let described = save(
            dir.path(),
            "described.safetensors",
            &t,
            write_metadata("resnet20", &cfg, &PreprocessConfig::cifar(), None),
        );

        // A plain file needs a name; the error says which variants fit.
        let err = load(&plain, &LoadOptions::default(), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not say which architecture") && err.contains("resnet20"),
            "{err}"
        );
        let l = load(&plain, &LoadOptions::arch("resnet20"), &Device::Cpu).unwrap();
        assert_eq!(
            (l.info.config_source, l.info.labels.as_ref().map(Vec::len)),
            (ConfigSource::Caller, Some(10))
        );
        let l = load(
            &plain,
            &LoadOptions {
                fallback_arch: Some("resnet20".into()),
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(l.info.config_source, ConfigSource::Fallback);

        // The file's own config; the same name agrees with it; another architecture conflicts.
        let l = load(&described, &LoadOptions::default(), &Device::Cpu).unwrap();
        assert_eq!(
            (l.info.arch.as_str(), l.info.config_source),
            ("resnet20", ConfigSource::FileConfig)
        );
        assert!(load(&described, &LoadOptions::arch("resnet20"), &Device::Cpu).is_ok());
        let err = load(&described, &LoadOptions::arch("resnet32"), &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::ArchitectureConflict { .. }), "{err}");

        // A deeper network's weights under a shallower name: extra tensors are an error, not ignored.
        let t32 = random_tensors(&crate::variants::resnet32());
        let deeper = save(dir.path(), "r32.safetensors", &t32, HashMap::new());
        let err = load(&deeper, &LoadOptions::arch("resnet20"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected tensor `layer1.3"), "{err}");
    }

    #[test]
    fn non_finite_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::variants::resnet20();
        let mut t = random_tensors(&cfg);
        let w = t["layer2.1.conv1.weight"].clone();
        let nan = Tensor::full(f32::NAN, w.shape(), &Device::Cpu).unwrap();
        t.insert("layer2.1.conv1.weight".into(), nan);
        let path = save(dir.path(), "nan.safetensors", &t, HashMap::new());
        let err = load(&path, &LoadOptions::arch("resnet20"), &Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { what, .. } if what.contains("layer2.1.conv1.weight")),
            "{err}"
        );
    }
}
