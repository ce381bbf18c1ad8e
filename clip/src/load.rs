//! From a checkpoint to a ready model: [`PretrainedClip`] bundles the model, its tokenizer and its image
//! preprocessing, loaded from a file ([`PretrainedClip::from_file`]) or, with the `hub` feature, from a model
//! name or a Hugging Face Hub repo in OpenCLIP's layout ([`pretrained`]).
//!
//! Where each part comes from, first match wins:
//! - the config: the caller's ([`ClipLoadOptions::config`]), else `open_clip_config.json` (beside the file, or
//!   in the repo), else the model name (`resnet50_clip.openai`: OpenAI's RN50). A config that exists but
//!   cannot be read is an error, never replaced by the name's; a caller's config that contradicts the file's
//!   own is an error too;
//! - the preprocessing: the config file's `preprocess_cfg` (mean, std, interpolation), else OpenAI's;
//! - the tokenizer: the repo's `tokenizer.json` when it has one, else OpenAI's vocabulary (built in).
//!
//! Every tensor of the file must be used by the model and every tensor the model needs must be in the file
//! with its shape ([`Error::Mismatch`] lists what is not), and all weights must be finite.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use resnet::BnMode;
use serde_json::Value;
use weights::checkpoint::Checkpoint;
use weights::{Interpolation, PreprocessConfig};

use crate::config::ClipConfig;
use crate::error::{invalid, Error, Result};
use crate::model::Clip;
use crate::tokenizer::ClipTokenizer;

/// The config file OpenCLIP writes beside its weights (`{"model_cfg": ..., "preprocess_cfg": ...}`).
pub const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";
/// The weights file of an OpenCLIP repo on the Hub.
pub const OPEN_CLIP_WEIGHTS: &str = "open_clip_model.safetensors";
/// Config files above this size are refused unread.
const MAX_CONFIG_FILE: u64 = 16 << 20;
/// How many problems [`Error::Mismatch`] lists before it only counts.
const MAX_LISTED: usize = 20;

/// A CLIP model ready to embed and classify: what [`pretrained`] and [`PretrainedClip::from_file`] return.
#[derive(Debug, Clone)]
pub struct PretrainedClip {
    /// Both towers and the temperature.
    pub model: Clip,
    /// The tokenizer for its text tower (context length from its config).
    pub tokenizer: ClipTokenizer,
    /// The image preprocessing its weights expect.
    pub preprocess: PreprocessConfig,
    /// Where the weights came from, for messages.
    pub source: String,
}

/// How to load a CLIP checkpoint.
#[derive(Debug, Clone)]
pub struct ClipLoadOptions {
    /// The model's shape; `None` reads it from the checkpoint's config file (or the model name).
    pub config: Option<ClipConfig>,
    /// Where the model runs.
    pub device: Device,
}

impl ClipLoadOptions {
    /// The config from the checkpoint, on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            config: None,
            device: device.clone(),
        }
    }
}

impl PretrainedClip {
    /// Loads a safetensors checkpoint in any layout [`crate::keys`] maps (OpenCLIP's, OpenAI's, timm's image
    /// tower with a text tower). The config is the caller's, else the `open_clip_config.json` in the same
    /// directory; without either it is an error that says so.
    pub fn from_file(path: impl AsRef<Path>, opts: &ClipLoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let sibling = path.parent().map(|d| d.join(OPEN_CLIP_CONFIG)).filter(|p| p.is_file());
        let file_config = sibling.as_deref().map(read_config).transpose()?;
        let config =
            choose_config(opts.config.as_ref(), file_config.as_ref().map(|c| &c.0), path)?.ok_or_else(|| {
                invalid(format!(
                    "{}: which CLIP model it holds is not known: put its {OPEN_CLIP_CONFIG} beside it, or name the \
                 model (`resnet50_clip`, ...)",
                    path.display()
                ))
            })?;
        let preprocess = match &file_config {
            Some((_, root)) => preprocess_of(root, &config, sibling.as_deref().unwrap_or(path))?,
            None => config.preprocess(),
        };
        let tokenizer = ClipTokenizer::openai()?.with_context_length(config.text.context_length)?;
        Ok(Self {
            model: load_weights(path, &config, &opts.device)?,
            tokenizer,
            preprocess,
            source: path.display().to_string(),
        })
    }
}

/// The config to build: the caller's, the file's, or (if they disagree) an error.
fn choose_config(asked: Option<&ClipConfig>, stored: Option<&ClipConfig>, path: &Path) -> Result<Option<ClipConfig>> {
    match (asked, stored) {
        (Some(a), Some(s)) if a != s => Err(invalid(format!(
            "{} holds another CLIP model than the one asked for (its {OPEN_CLIP_CONFIG} says: image tower {:?} \
             at {} px, embedding {}, text width {}; asked: {:?} at {} px, embedding {}, text width {})",
            path.display(),
            s.vision.depths,
            s.image_size(),
            s.embed_dim,
            s.text.width,
            a.vision.depths,
            a.image_size(),
            a.embed_dim,
            a.text.width
        ))),
        (Some(a), _) => Ok(Some(a.clone())),
        (None, s) => Ok(s.cloned()),
    }
}

/// Reads an `open_clip_config.json`: the config and the whole JSON (for its `preprocess_cfg`).
fn read_config(path: &Path) -> Result<(ClipConfig, Value)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_CONFIG_FILE {
        return Err(invalid(format!(
            "{}: {len} bytes is too large for a config file",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let in_file = |e: Error| invalid(format!("{}: {e}", path.display()));
    let root: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    let config = ClipConfig::from_open_clip_json(&text).map_err(in_file)?;
    Ok((config, root))
}

/// OpenCLIP's `preprocess_cfg` (mean, std, interpolation, resize mode) over OpenAI's defaults. Values that
/// cannot be honoured are an error naming the key.
fn preprocess_of(root: &Value, config: &ClipConfig, path: &Path) -> Result<PreprocessConfig> {
    let mut p = config.preprocess();
    let Some(cfg) = root.get("preprocess_cfg").filter(|v| !v.is_null()) else {
        return Ok(p);
    };
    let bad = |key: &str, why: &str| invalid(format!("{}: preprocess_cfg.{key} {why}", path.display()));
    let triple = |key: &str| -> Result<Option<[f32; 3]>> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) if a.len() == 3 => {
                let mut out = [0f32; 3];
                for (o, v) in out.iter_mut().zip(a) {
                    *o = v
                        .as_f64()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| bad(key, "must hold finite numbers"))? as f32;
                }
                Ok(Some(out))
            }
            Some(_) => Err(bad(key, "must be a list of three numbers")),
        }
    };
    if let Some(mean) = triple("mean")? {
        p.mean = mean;
    }
    if let Some(std) = triple("std")? {
        if std.iter().any(|s| *s <= 0.0) {
            return Err(bad("std", "must be positive"));
        }
        p.std = std;
    }
    match cfg.get("interpolation").and_then(Value::as_str) {
        None | Some("bicubic") => {}
        Some("bilinear") => p.interpolation = Interpolation::Bilinear,
        Some(other) => return Err(bad("interpolation", &format!("`{other}` is not supported"))),
    }
    match cfg.get("resize_mode").and_then(Value::as_str) {
        None | Some("shortest") => {}
        Some(other) => {
            return Err(bad(
                "resize_mode",
                &format!("`{other}` is not supported (only `shortest`)"),
            ))
        }
    }
    Ok(p)
}

/// Reads every tensor of `path`, names mapped by [`crate::keys::canonical_name`], and builds the model from
/// them, checking that the file and the model agree tensor by tensor.
fn load_weights(path: &Path, config: &ClipConfig, device: &Device) -> Result<Clip> {
    let ck = Checkpoint::open(path)?;
    let mut tensors = HashMap::new();
    for (stored, t) in ck.load(&Device::Cpu)? {
        let Some(name) = crate::keys::canonical_name(&stored) else {
            continue;
        };
        if !t.dtype().is_float() {
            return Err(invalid(format!(
                "{}: tensor `{stored}` is {:?}, not floating point",
                path.display(),
                t.dtype()
            )));
        }
        let t = t.to_dtype(DType::F32)?;
        resnet::finite::ensure_finite(&t, || format!("{}: tensor `{stored}`", path.display()))?;
        if let Some(prev) = tensors.insert(name.clone(), t.to_device(device)?) {
            drop(prev);
            return Err(invalid(format!(
                "{}: two tensors map to `{name}` (one of them `{stored}`)",
                path.display()
            )));
        }
    }
    let backend = Checked::new(tensors);
    let vb = VarBuilder::from_backend(Box::new(backend.clone()), DType::F32, device.clone());
    let built = Clip::load(config, vb, BnMode::Fold);
    let problems = backend.problems();
    if !problems.is_empty() {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    built
}

/// A [`SimpleBackend`] over the file's tensors that records which were taken and what was missing or
/// misshapen, so that one error can list every difference.
#[derive(Clone)]
struct Checked {
    inner: std::sync::Arc<CheckedInner>,
}

struct CheckedInner {
    tensors: HashMap<String, Tensor>,
    used: Mutex<BTreeSet<String>>,
    problems: Mutex<Vec<String>>,
}

impl Checked {
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            inner: std::sync::Arc::new(CheckedInner {
                tensors,
                used: Mutex::default(),
                problems: Mutex::default(),
            }),
        }
    }

    fn note(&self, problem: String) {
        if let Ok(mut p) = self.inner.problems.lock() {
            p.push(problem);
        }
    }

    /// Missing and misshapen tensors met while building, then the file's tensors the model never asked for.
    fn problems(&self) -> Vec<String> {
        let used = self.inner.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut problems: Vec<String> = self.inner.problems.lock().map(|p| p.clone()).unwrap_or_default();
        let mut unused: Vec<&String> = self.inner.tensors.keys().filter(|k| !used.contains(*k)).collect();
        unused.sort();
        problems.extend(
            unused
                .into_iter()
                .map(|k| format!("`{k}`: in the file, not in the model")),
        );
        if problems.len() > MAX_LISTED {
            let more = problems.len() - MAX_LISTED;
            problems.truncate(MAX_LISTED);
            problems.push(format!("... and {more} more"));
        }
        problems
    }
}

impl SimpleBackend for Checked {
    /// The stored tensor; a missing or misshapen one is noted and replaced by zeros, so that the build goes on
    /// and every difference is found in one pass (a model with a noted problem is never returned).
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(t) = self.inner.tensors.get(name) else {
            self.note(format!(
                "`{name}`: the model needs {:?}, the file does not have it",
                s.dims()
            ));
            return Tensor::zeros(s, dtype, dev);
        };
        if let Ok(mut u) = self.inner.used.lock() {
            u.insert(name.to_string());
        }
        // `logit_scale` is a scalar in OpenAI's files and a 1-vector in some of OpenCLIP's.
        if name == "logit_scale" && t.elem_count() == 1 && s.elem_count() == 1 {
            return t.reshape(s)?.to_dtype(dtype)?.to_device(dev);
        }
        if t.shape() != &s {
            self.note(format!(
                "`{name}`: the model needs {:?}, the file has {:?}",
                s.dims(),
                t.dims()
            ));
            return Tensor::zeros(s, dtype, dev);
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .inner
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        if let Ok(mut u) = self.inner.used.lock() {
            u.insert(name.to_string());
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.tensors.contains_key(name)
    }
}

/// Whether `spec` names one of CLIP's ResNets (`resnet50_clip`, `resnet50_clip.openai`, `RN50x4`, ...),
/// with an optional `@revision`.
pub fn is_clip_name(spec: &str) -> bool {
    let name = spec.split_once('@').map_or(spec, |(n, _)| n);
    !name.contains('/') && ClipConfig::by_name(name).is_ok()
}

#[cfg(feature = "hub")]
mod hub {
    use std::path::PathBuf;

    use super::*;
    use resnet::pretrained::RepoRef;
    use weights::hub::{Hub, HubError, HubOptions};

    /// A CLIP ResNet by name (`resnet50_clip`, `resnet50_clip.openai`, `resnet50_clip.yfcc15m`, OpenCLIP's
    /// `RN50`), or an OpenCLIP repo on the Hub (`owner/name`, optionally `@revision`), downloaded into the
    /// Hugging Face cache: `open_clip_model.safetensors` and `open_clip_config.json` (and `tokenizer.json`
    /// when the repo has one). A name without a tag means OpenAI's weights (`.openai`, in timm's repos).
    ///
    /// ```no_run
    /// # fn main() -> anyhow::Result<()> {
    /// let clip = clip::pretrained("resnet50_clip", &clip::ClipLoadOptions::new(&candle_core::Device::Cpu))?;
    /// let image = resnet::data::preprocess_file("cat.jpg".as_ref(), &clip.preprocess, clip.model.device())?;
    /// let probs = clip.model.zero_shot(&clip.tokenizer, &image.unsqueeze(0)?, &["cat", "dog"], &[clip::SINGLE_TEMPLATE])?;
    /// # Ok(()) }
    /// ```
    pub fn pretrained(spec: &str, opts: &ClipLoadOptions) -> Result<PretrainedClip> {
        pretrained_with(spec, opts, &HubOptions::from_env())
    }

    /// The Hub repo (and revision) of a name or repo id, and the config its name implies, if any.
    pub fn repo_of(spec: &str) -> Result<(RepoRef, Option<ClipConfig>)> {
        let r = RepoRef::parse(spec);
        if r.repo.contains('/') {
            return Ok((r, None));
        }
        let config = ClipConfig::by_name(&r.repo)?;
        let (arch, tag) = r.repo.split_once('.').unwrap_or((&r.repo, "openai"));
        Ok((
            RepoRef {
                repo: format!("timm/{}.{tag}", canonical_arch(arch)),
                revision: r.revision,
            },
            Some(config),
        ))
    }

    /// `RN50` -> `resnet50_clip` (OpenCLIP's names to timm's, for the repo name).
    fn canonical_arch(arch: &str) -> String {
        match arch.trim_end_matches("-quickgelu") {
            "RN50" => "resnet50_clip",
            "RN101" => "resnet101_clip",
            "RN50x4" => "resnet50x4_clip",
            "RN50x16" => "resnet50x16_clip",
            "RN50x64" => "resnet50x64_clip",
            other => other,
        }
        .to_string()
    }

    /// [`pretrained`] with explicit hub options (endpoint, cache, token, offline mode).
    pub fn pretrained_with(spec: &str, opts: &ClipLoadOptions, hub_opts: &HubOptions) -> Result<PretrainedClip> {
        let (repo, named) = repo_of(spec)?;
        let hub = Hub::new(hub_opts.clone()).map_err(boxed)?;
        let rev = repo.revision.as_deref();
        let optional = |file: &str| -> Result<Option<PathBuf>> {
            match hub.get(&repo.repo, rev, file) {
                Ok(p) => Ok(Some(p)),
                Err(HubError::FileNotFound { .. }) => Ok(None),
                Err(e) => Err(boxed(e)),
            }
        };
        let config_file = optional(OPEN_CLIP_CONFIG)?;
        let file_config = config_file.as_deref().map(read_config).transpose()?;
        let weights = hub.get(&repo.repo, rev, OPEN_CLIP_WEIGHTS).map_err(boxed)?;
        let stored = file_config.as_ref().map(|c| &c.0).or(named.as_ref());
        let config = choose_config(opts.config.as_ref(), stored, &weights)?.ok_or_else(|| {
            invalid(format!(
                "{}: the repo has no {OPEN_CLIP_CONFIG}, so which CLIP model it holds is not known: name the model",
                repo.repo
            ))
        })?;
        let preprocess = match (&file_config, &config_file) {
            (Some((_, root)), Some(p)) => preprocess_of(root, &config, p)?,
            _ => config.preprocess(),
        };
        let tokenizer = match optional("tokenizer.json")? {
            Some(p) => ClipTokenizer::from_file(&p)?,
            None => ClipTokenizer::openai()?,
        }
        .with_context_length(config.text.context_length)?;
        Ok(PretrainedClip {
            model: load_weights(&weights, &config, &opts.device)?,
            tokenizer,
            preprocess,
            source: format!("{} ({})", repo.repo, weights.display()),
        })
    }

    fn boxed(e: HubError) -> Error {
        Error::Hub(Box::new(e))
    }
}

#[cfg(feature = "hub")]
pub use hub::{pretrained, pretrained_with, repo_of};
