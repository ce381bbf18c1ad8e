//! From what the user typed (`resnet50`, `timm/resnet50.a1_in1k`, `model.safetensors`, `resnet20 --weights
//! f.safetensors`) to a loaded model with its preprocessing and class names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use resnet::keys::{canonical_name, KeyScheme};
use resnet::{ResNet, ResNetConfig};
use weights::checkpoint::{Checkpoint, META_CONFIG, META_LABELS, META_LABEL_SET, META_PREPROCESS};
use weights::PreprocessConfig;

/// A model ready to run, and what it expects and predicts.
pub struct LoadedModel {
    pub model: ResNet,
    pub preprocess: PreprocessConfig,
    pub labels: Vec<String>,
    /// Where the weights came from, for messages.
    pub source: String,
}

/// Loads `spec` (with `weights` if given). With `allow_random`, a bare architecture name without weights
/// gets zero weights (for timing); otherwise it must name pretrained weights.
pub fn load_model(spec: &str, weights: Option<&str>, device: &Device, dtype: DType, allow_random: bool) -> Result<LoadedModel> {
    if let Some(w) = weights {
        let cfg = resnet::variants::by_name(spec).ok();
        return load_file(&locate(w)?, cfg, device, dtype);
    }
    if Path::new(spec).is_file() {
        return load_file(Path::new(spec), None, device, dtype);
    }
    if allow_random {
        if let Ok(cfg) = resnet::variants::by_name(spec) {
            let model = ResNet::new(&cfg, VarBuilder::zeros(dtype, device))?;
            let labels = (0..cfg.num_classes).map(|i| format!("class {i}")).collect();
            return Ok(LoadedModel { model, preprocess: PreprocessConfig::imagenet(), labels, source: "zero weights".into() });
        }
    }
    crate::hub::load_pretrained(spec, device, dtype)
}

/// A local file, or a Hub repo id whose `model.safetensors` is fetched.
fn locate(weights: &str) -> Result<PathBuf> {
    let p = Path::new(weights);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if weights.contains('/') && !weights.ends_with(".safetensors") {
        return crate::hub::fetch_weights(weights);
    }
    bail!("weights file {} does not exist", p.display())
}

/// Whether a Hub repo has any snapshot in the local cache.
pub fn is_cached(hub: &weights::hub::HubOptions, repo_id: &str) -> bool {
    let dir = hub.cache_dir.join(format!("models--{}", repo_id.replace('/', "--"))).join("snapshots");
    std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// Loads a safetensors checkpoint. The architecture comes from `cfg` when given, else from the file's
/// own metadata; preprocessing and labels from the metadata, else ImageNet defaults.
pub fn load_file(path: &Path, cfg: Option<ResNetConfig>, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let ck = Checkpoint::open(path)?;
    let cfg = match cfg {
        Some(c) => c,
        None => ck.metadata_json::<ResNetConfig>(META_CONFIG)?.with_context(|| {
            format!("{} does not say which architecture it holds: name one, e.g. `zoo run resnet50 --weights {}`", path.display(), path.display())
        })?,
    };
    let info = CheckpointMeta::read(&ck, &cfg)?;
    let tensors = canonical_tensors(ck.load(device)?, dtype)?;
    let model = build(&cfg, tensors, path, device, dtype)?;
    Ok(LoadedModel { model, preprocess: info.preprocess, labels: info.labels, source: path.display().to_string() })
}

/// Renames stored keys (DataParallel `module.`, a `linear` head, HF transformers names) to canonical ones.
pub fn canonical_tensors(tensors: HashMap<String, Tensor>, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let scheme = KeyScheme::detect(tensors.keys().map(String::as_str));
    let mut out = HashMap::with_capacity(tensors.len());
    for (k, v) in tensors {
        if let Some(name) = canonical_name(scheme, &k) {
            out.insert(name, v.to_dtype(dtype)?);
        }
    }
    Ok(out)
}

fn build(cfg: &ResNetConfig, tensors: HashMap<String, Tensor>, path: &Path, device: &Device, dtype: DType) -> Result<ResNet> {
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    ResNet::new(cfg, vb).with_context(|| format!("{} does not match the architecture", path.display()))
}

/// Preprocessing and class names recorded in a checkpoint.
pub struct CheckpointMeta {
    pub preprocess: PreprocessConfig,
    pub labels: Vec<String>,
}

impl CheckpointMeta {
    pub fn read(ck: &Checkpoint, cfg: &ResNetConfig) -> Result<Self> {
        let preprocess = ck.metadata_json::<PreprocessConfig>(META_PREPROCESS)?.unwrap_or_else(|| default_preprocess(cfg));
        let labels = match ck.metadata_json::<Vec<String>>(META_LABELS)? {
            Some(l) => l,
            None => {
                let set = ck.metadata().get(META_LABEL_SET).cloned();
                labels_for(set.as_deref(), cfg.num_classes)
            }
        };
        Ok(Self { preprocess, labels })
    }
}

pub use resnet::convert::default_preprocess;

/// Names of a label set, or the standard set for the class count, or numbers.
pub fn labels_for(set: Option<&str>, num_classes: usize) -> Vec<String> {
    set.or(weights::labels::standard_set(num_classes))
        .and_then(weights::labels::label_set)
        .filter(|l| l.len() == num_classes)
        .unwrap_or_else(|| (0..num_classes).map(|i| format!("class {i}")).collect())
}
