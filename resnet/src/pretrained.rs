//! A network together with the preprocessing its weights expect and its class names: what torchvision's
//! `Weights` entries and timm's `pretrained_cfg` give Python users.
//!
//! [`Pretrained::from_file`] reads any checkpoint the [loader](crate::load) reads. With the `hub` feature,
//! [`pretrained()`] and [`Pretrained::from_hub`] also take registry names (`resnet50`, `resnet50.tv2_in1k`,
//! `microsoft/resnet-50`) and Hugging Face Hub repos (`owner/name`, `owner/name@revision`), downloaded into
//! the Hugging Face cache (Python's layout, so a file fetched by either is found by the other).
//!
//! Where each part comes from, first match wins:
//! - architecture: the weights file's own metadata, else the registry entry, else the repo's `config.json`
//!   (timm's `architecture`, or HF transformers' `depths`/`layer_type`);
//! - preprocessing: the file's metadata, else the repo's `config.json` (`pretrained_cfg`) or
//!   `preprocessor_config.json`, else the registry entry, else the architecture's default;
//! - class names: the file's metadata, else the repo's `id2label`, else the registry's label set, else the
//!   standard set for the head's size.
//!
//! A repo config that exists but cannot be downloaded or parsed is an error, never silently replaced by
//! defaults; one the repo does not have is simply absent.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use weights::PreprocessConfig;

use crate::error::Result;
use crate::load::{self, LoadOptions};
use crate::model::ResNet;

/// One predicted class; serialized as `{"class": 285, "label": "Egyptian cat", "prob": 0.78}`, the form of
/// `zoo run --json` and of `zoo serve`'s answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Index of the class (the classifier's output).
    pub class: usize,
    /// Its name, or `class N` when the model's class names are unknown.
    pub label: String,
    /// Softmax probability.
    pub prob: f32,
}

/// A network ready to classify, with what it expects and predicts.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// The network (BatchNorm folded unless loaded otherwise).
    pub model: ResNet,
    /// The eval preprocessing the weights expect.
    pub preprocess: PreprocessConfig,
    /// One name per classifier output, when known.
    pub labels: Option<Vec<String>>,
    /// Where the weights came from, for messages (`timm/resnet50.a1_in1k (path)`, a file path).
    pub source: String,
}

impl Pretrained {
    /// Loads a checkpoint file (see [`crate::load`] for formats and the architecture rule); preprocessing and
    /// class names from its metadata, else the architecture's defaults.
    pub fn from_file(path: impl AsRef<Path>, opts: &LoadOptions, device: &Device) -> Result<Self> {
        let loaded = load::load(path.as_ref(), opts, device)?;
        Ok(Self {
            preprocess: loaded.info.preprocess_or_default(),
            labels: loaded.info.labels,
            source: path.as_ref().display().to_string(),
            model: loaded.model,
        })
    }

    /// The name of class `i`: its label, or `class i` when labels are unknown.
    pub fn label(&self, i: usize) -> String {
        self.labels
            .as_ref()
            .and_then(|l| l.get(i).cloned())
            .unwrap_or_else(|| format!("class {i}"))
    }

    /// Logits of a batch (N, C, H, W), or of one input (C, H, W) as a batch of one. Every logit must be
    /// finite: weights or inputs that produce NaN or infinity are an error, not a ranking.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = match x.rank() {
            3 => x.unsqueeze(0)?,
            _ => x.clone(),
        };
        let x = x.to_device(self.model.device())?.to_dtype(self.model.compute_dtype())?;
        let logits = self.model.forward(&x)?.to_dtype(DType::F32)?;
        crate::finite::ensure_finite(&logits, || format!("the logits of {}", self.source))?;
        Ok(logits)
    }

    /// The `top` most probable classes of one input (C, H, W), most probable first.
    pub fn classify(&self, x: &Tensor, top: usize) -> Result<Vec<Prediction>> {
        Ok(self.classify_batch(&x.unsqueeze(0)?, top)?.pop().unwrap_or_default())
    }

    /// The `top` most probable classes of each input of a batch (N, C, H, W).
    pub fn classify_batch(&self, x: &Tensor, top: usize) -> Result<Vec<Vec<Prediction>>> {
        let probs = candle_nn::ops::softmax(&self.logits(x)?, D::Minus1)?.to_vec2::<f32>()?;
        Ok(probs.iter().map(|p| self.top_k(p, top)).collect())
    }

    /// The `k` largest of `probs` as predictions, most probable first.
    pub fn top_k(&self, probs: &[f32], k: usize) -> Vec<Prediction> {
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        idx.into_iter()
            .take(k)
            .map(|c| Prediction {
                class: c,
                label: self.label(c),
                prob: probs[c],
            })
            .collect()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The model's input for one image: decoded (the format from its bytes), resized, cropped and normalized
    /// as [`Pretrained::preprocess`] says, as a (3, H, W) f32 tensor on the CPU.
    #[cfg(feature = "image")]
    pub fn preprocess_file(&self, path: impl AsRef<Path>) -> Result<Tensor> {
        Ok(crate::data::preprocess_file(
            path.as_ref(),
            &self.preprocess,
            &Device::Cpu,
        )?)
    }

    /// [`Pretrained::preprocess_file`] for an image already decoded to RGB.
    #[cfg(feature = "image")]
    pub fn preprocess_image(&self, img: &image::RgbImage) -> Result<Tensor> {
        Ok(crate::data::eval_transform(img, &self.preprocess, &Device::Cpu)?)
    }
}

#[cfg(feature = "hub")]
pub use hub::*;

#[cfg(feature = "hub")]
mod hub {
    use std::path::PathBuf;

    use candle_core::Device;
    use serde_json::Value;
    use weights::hub::{Hub, HubError, HubOptions};
    use weights::registry::Entry;
    use weights::{CropMode, Interpolation, PreprocessConfig};

    use super::Pretrained;
    use crate::error::{Error, Result};
    use crate::load::{self, LoadOptions};

    /// A registry name or Hub repo, downloaded if needed, with its preprocessing and labels: the three-line
    /// path of the crate docs. Uses the Hugging Face environment (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`,
    /// `HF_TOKEN`, `HF_HUB_OFFLINE`) and f32 weights with BatchNorm folded.
    pub fn pretrained(name: &str, device: &Device) -> Result<Pretrained> {
        Pretrained::from_hub(name, &PretrainedOptions::from_env(), device)
    }

    /// How [`Pretrained::from_hub`] reaches the Hub and builds the network.
    #[derive(Debug, Clone)]
    pub struct PretrainedOptions {
        /// Endpoint, cache, token, offline mode.
        pub hub: HubOptions,
        /// Dtype, BatchNorm mode, output stride (the architecture fields are filled from the name).
        pub load: LoadOptions,
    }

    impl PretrainedOptions {
        /// The Hugging Face environment and default load options.
        pub fn from_env() -> Self {
            Self {
                hub: HubOptions::from_env(),
                load: LoadOptions::default(),
            }
        }
    }

    /// A Hub location: `owner/name`, optionally `@revision` (branch, tag or commit sha).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RepoRef {
        /// `owner/name`.
        pub repo: String,
        /// Branch, tag or commit; `None` means `main`.
        pub revision: Option<String>,
    }

    impl RepoRef {
        /// Splits `owner/name@revision`.
        pub fn parse(spec: &str) -> Self {
            match spec.split_once('@') {
                Some((repo, rev)) => Self {
                    repo: repo.into(),
                    revision: Some(rev.into()),
                },
                None => Self {
                    repo: spec.into(),
                    revision: None,
                },
            }
        }
    }

    /// What a name resolves to before anything is downloaded.
    #[derive(Debug, Clone)]
    pub struct Target {
        /// Where the files are.
        pub repo: RepoRef,
        /// The registry's entry, when the name is in the registry.
        pub entry: Option<Entry>,
    }

    /// Resolves a registry name (`resnet50`, `resnet50.tv_in1k`, `microsoft/resnet-50`, with an optional
    /// `@revision`) or a repo id (`owner/name`). Anything else is [`Error::UnknownModel`] with the closest names.
    pub fn target(spec: &str) -> Result<Target> {
        let r = RepoRef::parse(spec);
        if let Some(entry) = weights::registry::find(&r.repo) {
            let repo = RepoRef {
                repo: entry.hf_hub_id.clone(),
                revision: r.revision,
            };
            return Ok(Target {
                repo,
                entry: Some(entry),
            });
        }
        if r.repo.contains('/') {
            return Ok(Target { repo: r, entry: None });
        }
        let entries = weights::registry::entries();
        let known = entries
            .iter()
            .map(|e| e.name.as_str())
            .chain(crate::variants::NAMES.iter().copied());
        Err(Error::UnknownModel {
            name: spec.to_string(),
            suggestions: crate::variants::suggest(&r.repo, known),
        })
    }

    /// The downloaded (or cached) files of a target.
    #[derive(Debug, Clone)]
    pub struct Fetched {
        /// The weights: `model.safetensors`, else `pytorch_model.bin`.
        pub weights: PathBuf,
        /// The repo's `config.json` merged with its `preprocessor_config.json`, when it has either.
        pub repo_config: Option<Value>,
    }

    /// The repo's configs (`config.json`, `preprocessor_config.json`) merged, `None` when it has neither.
    /// A config the repo has but that fails to download or parse is an error.
    pub fn fetch_config(hub: &Hub, t: &Target) -> Result<Option<Value>> {
        let mut merged: Option<Value> = None;
        for file in ["config.json", "preprocessor_config.json"] {
            let path = match hub.get(&t.repo.repo, t.repo.revision.as_deref(), file) {
                Ok(p) => p,
                Err(HubError::FileNotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let bad = |reason: String| Error::BadMetadata {
                path: path.clone(),
                key: file.to_string(),
                reason,
            };
            let text = read_small(&path).map_err(bad)?;
            let value: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            if !value.is_object() {
                return Err(bad("not a JSON object".into()));
            }
            match (&mut merged, value) {
                (Some(Value::Object(a)), Value::Object(b)) => a.extend(b),
                (m, v) => *m = Some(v),
            }
        }
        Ok(merged)
    }

    /// A config file's text; repo configs are small, so anything over 16 MiB is refused unread.
    fn read_small(path: &std::path::Path) -> std::result::Result<String, String> {
        let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        if len > 16 << 20 {
            return Err(format!("{len} bytes; a config file is expected to be small"));
        }
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }

    /// Downloads (or finds in the cache) the weights of a target and its configs.
    pub fn fetch(hub: &Hub, t: &Target) -> Result<Fetched> {
        let rev = t.repo.revision.as_deref();
        let weights = match hub.get(&t.repo.repo, rev, "model.safetensors") {
            Err(HubError::FileNotFound { available, .. }) if available.iter().any(|f| f == "pytorch_model.bin") => {
                hub.get(&t.repo.repo, rev, "pytorch_model.bin")?
            }
            other => other?,
        };
        Ok(Fetched {
            weights,
            repo_config: fetch_config(hub, t)?,
        })
    }

    impl Pretrained {
        /// Loads a registry name or Hub repo (see the module docs for where each part comes from).
        pub fn from_hub(name: &str, opts: &PretrainedOptions, device: &Device) -> Result<Self> {
            let t = target(name)?;
            let hub = Hub::new(opts.hub.clone())?;
            let fetched = fetch(&hub, &t)?;
            let repo_cfg = fetched.repo_config.as_ref();
            let fallback_arch = match &t.entry {
                Some(e) => Some(e.arch.clone()),
                None => repo_cfg
                    .map(|c| arch_from_repo_config(c, &t.repo.repo))
                    .transpose()?
                    .flatten(),
            };
            let load_opts = LoadOptions {
                fallback_arch,
                ..opts.load.clone()
            };
            let loaded = load::load(&fetched.weights, &load_opts, device)?;
            let info = &loaded.info;
            let preprocess = match &info.preprocess {
                Some(p) => p.clone(),
                None => repo_preprocess(&t, repo_cfg)?.unwrap_or_else(|| load::default_preprocess(&info.config)),
            };
            let labels = match info.self_describing {
                true => info.labels.clone(),
                false => repo_labels(&t, repo_cfg, info.config.num_classes)?.or_else(|| info.labels.clone()),
            };
            Ok(Self {
                labels,
                preprocess,
                source: format!("{} ({})", t.repo.repo, fetched.weights.display()),
                model: loaded.model,
            })
        }
    }

    /// The preprocessing of a registry name, Hub repo or local checkpoint without loading any weights (for
    /// `zoo preprocess`): a file's metadata (header only); a repo's config, downloaded if needed; offline
    /// with nothing cached, the registry's entry.
    pub fn preprocess_config(name: &str, opts: &PretrainedOptions) -> Result<PreprocessConfig> {
        let path = std::path::Path::new(name);
        if path.is_file() {
            return Ok(load::inspect(path, &opts.load)?.preprocess_or_default());
        }
        let t = target(name)?;
        let hub = Hub::new(opts.hub.clone())?;
        let cfg = match fetch_config(&hub, &t) {
            Err(Error::Hub(e)) if matches!(*e, HubError::OfflineNotCached { .. }) && t.entry.is_some() => None,
            other => other?,
        };
        // A self-describing weights file already in the cache says it best.
        if let Some(w) = hub.cached(&t.repo.repo, t.repo.revision.as_deref(), "model.safetensors") {
            if let Some(p) = load::inspect(
                &w,
                &LoadOptions {
                    fallback_arch: t.entry.as_ref().map(|e| e.arch.clone()),
                    ..opts.load.clone()
                },
            )?
            .preprocess
            {
                return Ok(p);
            }
        }
        match repo_preprocess(&t, cfg.as_ref())? {
            Some(p) => Ok(p),
            None => {
                let arch = match cfg
                    .as_ref()
                    .map(|c| arch_from_repo_config(c, &t.repo.repo))
                    .transpose()?
                    .flatten()
                {
                    Some(a) => a,
                    None => {
                        return Err(Error::NoArchitecture {
                            path: t.repo.repo.clone().into(),
                            candidates: vec![],
                        })
                    }
                };
                Ok(load::default_preprocess(&crate::variants::by_name(&arch)?))
            }
        }
    }

    /// The repo config's preprocessing, else the registry entry's; validated.
    fn repo_preprocess(t: &Target, cfg: Option<&Value>) -> Result<Option<PreprocessConfig>> {
        let from_repo = cfg
            .map(preprocess_from_repo_config)
            .transpose()
            .map_err(|reason| Error::BadMetadata {
                path: t.repo.repo.clone().into(),
                key: "config.json".into(),
                reason,
            })?;
        let p = from_repo.flatten().or_else(|| t.entry.as_ref().map(Entry::preprocess));
        if let Some(p) = &p {
            p.validate().map_err(|reason| Error::BadMetadata {
                path: t.repo.repo.clone().into(),
                key: "preprocessing".into(),
                reason,
            })?;
        }
        Ok(p)
    }

    /// Class names from the repo's `id2label` (HF transformers), else the registry's label set.
    fn repo_labels(t: &Target, cfg: Option<&Value>, num_classes: usize) -> Result<Option<Vec<String>>> {
        let bad = |reason: String| Error::BadMetadata {
            path: t.repo.repo.clone().into(),
            key: "id2label".into(),
            reason,
        };
        if let Some(map) = cfg.and_then(|c| c.get("id2label")).and_then(Value::as_object) {
            let mut names = vec![None; num_classes];
            for (k, v) in map {
                let i: usize = k.parse().map_err(|_| bad(format!("key `{k}` is not a class index")))?;
                let slot = names
                    .get_mut(i)
                    .ok_or_else(|| bad(format!("class {i} of a {num_classes}-class head")))?;
                *slot = Some(
                    v.as_str()
                        .ok_or_else(|| bad(format!("class {i} has no string name")))?
                        .to_string(),
                );
            }
            return match names.iter().all(Option::is_some) {
                true => Ok(Some(names.into_iter().flatten().collect())),
                false => Err(bad(format!("{} names for a {num_classes}-class head", map.len()))),
            };
        }
        let set = t.entry.as_ref().and_then(|e| e.label_set.as_deref());
        Ok(set
            .and_then(weights::labels::label_set)
            .filter(|l| l.len() == num_classes))
    }

    /// The architecture a repo config names: timm's `architecture`, or the ResNet that HF transformers'
    /// `layer_type` and `depths` describe. `None` when it names none we know.
    fn arch_from_repo_config(c: &Value, repo: &str) -> Result<Option<String>> {
        if let Some(arch) = c.get("architecture").and_then(Value::as_str) {
            crate::variants::by_name(arch).map_err(|e| Error::BadMetadata {
                path: repo.into(),
                key: "config.json `architecture`".into(),
                reason: e.to_string(),
            })?;
            return Ok(Some(arch.to_string()));
        }
        let depths: Option<Vec<u64>> = c
            .get("depths")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect());
        let name = match (c.get("layer_type").and_then(Value::as_str), depths.as_deref()) {
            (Some("basic"), Some([2, 2, 2, 2])) => "resnet18",
            (Some("basic"), Some([3, 4, 6, 3])) => "resnet34",
            (Some("bottleneck"), Some([3, 4, 6, 3])) => "resnet50",
            (Some("bottleneck"), Some([3, 4, 23, 3])) => "resnet101",
            (Some("bottleneck"), Some([3, 8, 36, 3])) => "resnet152",
            _ => return Ok(None),
        };
        Ok(Some(name.to_string()))
    }

    /// Preprocessing from a timm `config.json` (`pretrained_cfg`) or an HF `preprocessor_config.json`;
    /// `Ok(None)` when the config describes none, an error when it describes one badly.
    pub fn preprocess_from_repo_config(c: &Value) -> std::result::Result<Option<PreprocessConfig>, String> {
        let f3 = |v: &Value, what: &str| -> std::result::Result<[f32; 3], String> {
            let a = v
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| format!("`{what}` is not 3 numbers"))?;
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().ok_or_else(|| format!("`{what}` is not 3 numbers"))? as f32;
            }
            Ok(out)
        };
        let size = |v: Option<u64>, what: &str| -> std::result::Result<usize, String> {
            let n = v.ok_or_else(|| format!("`{what}` is not a number"))?;
            usize::try_from(n)
                .ok()
                .filter(|&n| n <= PreprocessConfig::MAX_SIDE)
                .ok_or_else(|| format!("`{what}` is {n}"))
        };
        if let Some(p) = c.get("pretrained_cfg") {
            let s = p["input_size"]
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or("`input_size` is not [c, h, w]")?;
            let interpolation = match p["interpolation"].as_str() {
                Some("bicubic") => Interpolation::Bicubic,
                Some("nearest") => Interpolation::Nearest,
                _ => Interpolation::Bilinear,
            };
            return Ok(Some(PreprocessConfig {
                input_size: [
                    size(s[0].as_u64(), "input_size")?,
                    size(s[1].as_u64(), "input_size")?,
                    size(s[2].as_u64(), "input_size")?,
                ],
                crop_pct: p.get("crop_pct").and_then(Value::as_f64).unwrap_or(0.875),
                crop_mode: if p["crop_mode"] == "squash" {
                    CropMode::Squash
                } else {
                    CropMode::Center
                },
                interpolation,
                mean: f3(&p["mean"], "mean")?,
                std: f3(&p["std"], "std")?,
            }));
        }
        let Some(mean) = c.get("image_mean") else {
            return Ok(None);
        };
        let interpolation = if c["resample"] == 3 {
            Interpolation::Bicubic
        } else {
            Interpolation::Bilinear
        };
        let side = match c.get("size") {
            Some(s) if s.get("shortest_edge").is_some() => size(s["shortest_edge"].as_u64(), "size.shortest_edge")?,
            Some(s) if s.is_u64() => size(s.as_u64(), "size")?,
            _ => 224,
        };
        Ok(Some(PreprocessConfig {
            input_size: [3, side, side],
            crop_pct: c.get("crop_pct").and_then(Value::as_f64).unwrap_or(0.875),
            crop_mode: CropMode::Center,
            interpolation,
            mean: f3(mean, "image_mean")?,
            std: f3(c.get("image_std").unwrap_or(&Value::Null), "image_std")?,
        }))
    }
}
