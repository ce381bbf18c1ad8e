//! Pretrained weights from the Hugging Face Hub (or its local cache): registry names and repo ids.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use resnet::ResNetConfig;
use serde_json::Value;
use weights::checkpoint::{Checkpoint, META_CONFIG};
use weights::hub::Hub;
use weights::{Interpolation, PreprocessConfig};

use crate::resolve::{labels_for, LoadedModel};

/// A Hub location: `owner/name`, optionally `@revision` (branch, tag or commit sha).
pub struct RepoRef {
    pub repo: String,
    pub revision: Option<String>,
}

impl RepoRef {
    pub fn parse(spec: &str) -> Self {
        match spec.split_once('@') {
            Some((repo, rev)) => Self { repo: repo.into(), revision: Some(rev.into()) },
            None => Self { repo: spec.into(), revision: None },
        }
    }
}

/// What a registry name or repo id resolves to before downloading.
pub struct Target {
    pub repo: RepoRef,
    /// The architecture and preprocessing the registry knows, if it knows the name.
    pub entry: Option<weights::registry::Entry>,
}

/// Resolves a registry name (`resnet50`, `resnet50.tv_in1k`, `microsoft/resnet-50`) or a repo id.
pub fn target(spec: &str) -> Result<Target> {
    let r = RepoRef::parse(spec);
    if let Some(entry) = weights::registry::find(&r.repo) {
        let repo = RepoRef { repo: entry.hf_hub_id.clone(), revision: r.revision };
        return Ok(Target { repo, entry: Some(entry) });
    }
    if r.repo.contains('/') {
        return Ok(Target { repo: r, entry: None });
    }
    let err = resnet::variants::by_name(&r.repo).err();
    let hint = match err {
        Some(e) => format!("{e}"),
        None => format!("`{spec}` is an architecture without pretrained weights in the registry: give --weights FILE|REPO"),
    };
    bail!("unknown model `{spec}`: not a pretrained name or a Hub repo (`owner/name`). {hint}. See `zoo list`.")
}

/// Downloads (or finds in the cache) the weights file of a target and the repo's config, if any.
pub fn fetch(t: &Target) -> Result<(PathBuf, Option<Value>)> {
    let hub = Hub::from_env()?;
    let rev = t.repo.revision.as_deref();
    let weights = hub.get(&t.repo.repo, rev, "model.safetensors")?;
    // timm repos describe preprocessing in config.json, HF transformers ones in preprocessor_config.json.
    let config = ["config.json", "preprocessor_config.json"]
        .iter()
        .filter_map(|f| hub.get(&t.repo.repo, rev, f).ok())
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| serde_json::from_str::<Value>(&s).ok())
        .reduce(|mut a, b| {
            merge(&mut a, b);
            a
        });
    Ok((weights, config))
}

fn merge(a: &mut Value, b: Value) {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
}

/// Fetches `model.safetensors` of a Hub repo (for `--weights owner/name`).
pub fn fetch_weights(spec: &str) -> Result<PathBuf> {
    Ok(fetch(&Target { repo: RepoRef::parse(spec), entry: None })?.0)
}

/// Loads a registry name or a Hub repo id, with the preprocessing its weights were evaluated with.
pub fn load_pretrained(spec: &str, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let t = target(spec)?;
    let (path, repo_config) = fetch(&t)?;
    let ck = Checkpoint::open(&path)?;
    let cfg = architecture(&t, &ck, repo_config.as_ref())?;
    let mut loaded = crate::resolve::load_file(&path, Some(cfg.clone()), device, dtype)?;
    let self_described = ck.metadata().contains_key(weights::checkpoint::META_PREPROCESS);
    if !self_described {
        let from_repo = repo_config.as_ref().and_then(preprocess_from_repo_config);
        let from_registry = t.entry.as_ref().map(|e| e.preprocess());
        if let Some(p) = from_repo.or(from_registry) {
            loaded.preprocess = p;
        }
        let set = t.entry.as_ref().and_then(|e| e.label_set.clone());
        loaded.labels = labels_for(set.as_deref(), cfg.num_classes);
    }
    loaded.source = format!("{} ({})", t.repo.repo, path.display());
    Ok(loaded)
}

/// The architecture: the file's own metadata, else the registry entry, else the repo's config.json.
fn architecture(t: &Target, ck: &Checkpoint, repo_config: Option<&Value>) -> Result<ResNetConfig> {
    if let Some(cfg) = ck.metadata_json::<ResNetConfig>(META_CONFIG)? {
        return Ok(cfg);
    }
    let (arch, classes) = match (&t.entry, repo_config) {
        (Some(e), _) => (e.arch.clone(), e.num_classes),
        (None, Some(c)) => {
            let arch = c["architecture"].as_str().context("the repo's config.json names no `architecture`")?;
            (arch.to_string(), c["num_classes"].as_u64().unwrap_or(1000) as usize)
        }
        (None, None) => bail!("{} has no config.json and its weights do not describe their architecture", t.repo.repo),
    };
    Ok(resnet::variants::by_name(&arch)?.with_num_classes(classes))
}

/// Preprocessing from a timm `config.json` (`pretrained_cfg`) or an HF `preprocessor_config.json`.
pub fn preprocess_from_repo_config(c: &Value) -> Option<PreprocessConfig> {
    let f3 = |v: &Value| -> Option<[f32; 3]> {
        let a = v.as_array()?;
        Some([a.first()?.as_f64()? as f32, a.get(1)?.as_f64()? as f32, a.get(2)?.as_f64()? as f32])
    };
    if let Some(p) = c.get("pretrained_cfg") {
        let size = p["input_size"].as_array()?;
        let interpolation = if p["interpolation"] == "bicubic" { Interpolation::Bicubic } else { Interpolation::Bilinear };
        return Some(PreprocessConfig {
            input_size: [3, size.get(1)?.as_u64()? as usize, size.get(2)?.as_u64()? as usize],
            crop_pct: p["crop_pct"].as_f64().unwrap_or(0.875),
            crop_mode: if p["crop_mode"] == "squash" { weights::CropMode::Squash } else { weights::CropMode::Center },
            interpolation,
            mean: f3(&p["mean"])?,
            std: f3(&p["std"])?,
        });
    }
    let mean = f3(c.get("image_mean")?)?;
    let interpolation = if c["resample"] == 3 { Interpolation::Bicubic } else { Interpolation::Bilinear };
    let size = c["size"]["shortest_edge"].as_u64().unwrap_or(224) as usize;
    Some(PreprocessConfig {
        input_size: [3, size, size],
        crop_pct: c["crop_pct"].as_f64().unwrap_or(0.875),
        crop_mode: weights::CropMode::Center,
        interpolation,
        mean,
        std: f3(c.get("image_std")?)?,
    })
}
