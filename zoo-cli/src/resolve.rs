//! From what the user typed (`resnet50`, `timm/resnet50.a1_in1k`, `model.safetensors`, `resnet20 --weights
//! f.safetensors`) to a loaded model with its preprocessing and class names, through the library's one loader.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use resnet::load::LoadOptions;
use resnet::pretrained::PretrainedOptions;
use resnet::{Pretrained, ResNet};
use weights::PreprocessConfig;

/// Loads `spec` (with `weights` if given). With `allow_random`, a bare architecture name without weights
/// gets zero weights (for timing); otherwise it must name pretrained weights.
pub fn load_model(
    spec: &str,
    weights: Option<&str>,
    device: &Device,
    dtype: DType,
    allow_random: bool,
) -> Result<Pretrained> {
    let p = load_any(spec, weights, device, dtype, allow_random)?;
    crate::memory::release_freed();
    if device.is_cpu() && dtype != DType::F32 && p.model.dtype() == DType::F32 {
        eprintln!(
            "warning: this CPU has no kernel for {dtype:?} weights (it needs AVX2 and FMA): they are held and multiplied in f32"
        );
    }
    Ok(p)
}

fn load_any(
    spec: &str,
    weights: Option<&str>,
    device: &Device,
    dtype: DType,
    allow_random: bool,
) -> Result<Pretrained> {
    let load = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    if let Some(w) = weights {
        return load_with_weights(spec, w, load, device);
    }
    if Path::new(spec).is_file() {
        return Ok(Pretrained::from_file(spec, &load, device)?);
    }
    if allow_random {
        if let Ok(cfg) = resnet::variants::by_name(spec) {
            let model = ResNet::new(&cfg, VarBuilder::zeros(dtype, device))?;
            let preprocess = resnet::load::default_preprocess(&cfg);
            return Ok(Pretrained {
                model,
                preprocess,
                labels: None,
                source: "zero weights".into(),
            });
        }
    }
    if looks_like_a_path(spec) {
        bail!("{spec}: no such file");
    }
    Ok(Pretrained::from_hub(
        spec,
        &PretrainedOptions {
            hub: weights::hub::HubOptions::from_env(),
            load,
        },
        device,
    )?)
}

/// `MODEL --weights W`: MODEL names the architecture (a registry name also lends its preprocessing to weights
/// that record none); W is a file or a Hub repo.
fn load_with_weights(spec: &str, w: &str, load: LoadOptions, device: &Device) -> Result<Pretrained> {
    resnet::variants::by_name(spec)
        .with_context(|| format!("with --weights, MODEL names the architecture, and `{spec}` is none"))?;
    let load = LoadOptions {
        arch: Some(spec.to_string()),
        ..load
    };
    if Path::new(w).is_file() {
        let mut p = Pretrained::from_file(w, &load, device)?;
        let info = resnet::load::inspect(w, &load)?;
        if info.preprocess.is_none() {
            if let Some(e) = weights::registry::find(spec).filter(|e| e.name == spec) {
                p.preprocess = e.preprocess();
            }
        }
        return Ok(p);
    }
    if w.contains('/') && !looks_like_a_path(w) {
        return Ok(Pretrained::from_hub(
            w,
            &PretrainedOptions {
                hub: weights::hub::HubOptions::from_env(),
                load,
            },
            device,
        )?);
    }
    bail!("weights file {w} does not exist")
}

/// A spec with a file extension or a path separator that is no Hub id is meant as a file.
fn looks_like_a_path(spec: &str) -> bool {
    let p = Path::new(spec);
    spec.starts_with('.')
        || spec.starts_with('/')
        || spec.matches('/').count() > 1
        || p.extension()
            .is_some_and(|e| ["safetensors", "pth", "pt", "bin", "npy"].contains(&e.to_string_lossy().as_ref()))
}

/// The preprocessing of `spec` without loading weights (`zoo preprocess`): a file's metadata, a registry
/// entry or repo config, or with `--weights` the architecture's and the file's.
pub fn preprocess_for(spec: &str, weights: Option<&str>) -> Result<PreprocessConfig> {
    let opts = PretrainedOptions::from_env();
    match weights {
        Some(w) if Path::new(w).is_file() => {
            let load = LoadOptions {
                arch: Some(spec.to_string()),
                ..LoadOptions::default()
            };
            let info = resnet::load::inspect(w, &load)?;
            Ok(info.preprocess.clone().unwrap_or_else(|| {
                match weights::registry::find(spec).filter(|e| e.name == spec) {
                    Some(e) => e.preprocess(),
                    None => info.preprocess_or_default(),
                }
            }))
        }
        Some(w) => Ok(resnet::pretrained::preprocess_config(w, &opts)?),
        None => Ok(resnet::pretrained::preprocess_config(spec, &opts)?),
    }
}

/// Whether a Hub repo has any snapshot in the local cache.
pub fn is_cached(hub: &weights::hub::HubOptions, repo_id: &str) -> bool {
    let dir = hub
        .cache_dir
        .join(format!("models--{}", repo_id.replace('/', "--")))
        .join("snapshots");
    std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}
