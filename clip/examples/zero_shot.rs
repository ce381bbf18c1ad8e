//! Zero-shot classification of images against any labels with a CLIP ResNet.
//!
//! ```sh
//! cargo run --release -p clip --example zero_shot -- [--weights open_clip_model.safetensors] [--model resnet50_clip]
//!     [--labels "a cat,a dog,a car"] [--ensemble] [--save DIR] IMAGE...
//! ```
//!
//! `--weights` takes an OpenCLIP (or timm image tower + text tower) checkpoint in safetensors; without it the
//! model gets seeded random weights, which run every op but classify nothing (the output says so).
//! `--ensemble` uses OpenCLIP's 80 ImageNet templates instead of "a photo of a {}.". `--save DIR` writes the
//! random model as OpenCLIP publishes one (`open_clip_model.safetensors`, `open_clip_config.json`), for `zoo`:
//! `zoo run DIR/open_clip_model.safetensors IMAGE --labels ...`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clip::{Clip, ClipConfig, ClipTokenizer, ZeroShotClassifier, SINGLE_TEMPLATE};
use rand::{Rng, SeedableRng};
use resnet::BnMode;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut weights, mut model_name, mut labels, mut ensemble, mut images) = (
        None,
        "resnet50_clip".to_string(),
        "a cat,a dog,a car".to_string(),
        false,
        Vec::new(),
    );
    let mut save: Option<std::path::PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--weights" => weights = Some(args.next().context("--weights needs a path")?),
            "--model" => model_name = args.next().context("--model needs a name")?,
            "--labels" => labels = args.next().context("--labels needs a comma-separated list")?,
            "--ensemble" => ensemble = true,
            "--save" => save = Some(args.next().context("--save needs a directory")?.into()),
            _ => images.push(a),
        }
    }
    if images.is_empty() && save.is_none() {
        bail!("usage: zero_shot [--weights F] [--model NAME] [--labels a,b,c] [--ensemble] [--save DIR] IMAGE...")
    }
    let device = Device::Cpu;
    let config = ClipConfig::by_name(&model_name)?;
    let (model, source) = match &weights {
        // The library's loader: OpenCLIP's (or timm's, OpenAI's) names, every tensor checked.
        Some(path) => {
            let opts = clip::ClipLoadOptions {
                config: Some(config.clone()),
                device: device.clone(),
            };
            (clip::PretrainedClip::from_file(path, &opts)?.model, path.clone())
        }
        None => (
            random_model(&config, &device, save.as_deref())?,
            "random weights (seed 0): the probabilities mean nothing".into(),
        ),
    };
    let tokenizer = ClipTokenizer::openai()?;
    let labels: Vec<&str> = labels.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    let templates = if ensemble {
        clip::openai_imagenet_templates()
    } else {
        vec![SINGLE_TEMPLATE]
    };
    let classifier = ZeroShotClassifier::new(&model, &tokenizer, &labels, &templates)?;
    println!(
        "{model_name} ({} parameters, {source}); {} labels x {} templates",
        model.num_params(),
        labels.len(),
        templates.len()
    );
    for image in &images {
        let x = resnet::data::preprocess_file(image.as_ref(), &config.preprocess(), &device)?.unsqueeze(0)?;
        let probs = classifier.probs(&model, &x)?.squeeze(0)?.to_vec1::<f32>()?;
        let mut ranked: Vec<(f32, &str)> = probs.into_iter().zip(labels.iter().copied()).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("{image}");
        for (p, label) in ranked {
            println!("  {:7.2}%  {label}", 100.0 * p);
        }
    }
    Ok(())
}

/// The model with seeded random weights: every tensor the model asks for, registered in a `VarMap`, then
/// redrawn (BatchNorm statistics positive, LayerNorm and BatchNorm scales near 1, the rest scaled by fan-in).
/// With `save`, also written there in OpenCLIP's layout.
fn random_model(config: &ClipConfig, device: &Device, save: Option<&std::path::Path>) -> Result<Clip> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let varmap = VarMap::new();
    Clip::load(
        config,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        BnMode::Keep,
    )?;
    let mut vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock"))?
        .clone()
        .into_iter()
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in vars {
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let mut uniform = |lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
        let norm_scale = name.contains("bn") || name.contains("ln_") || name.contains("downsample.1");
        let values = if name == "logit_scale" {
            vec![100f32.ln()]
        } else if name.ends_with("running_var") || (norm_scale && name.ends_with("weight") && shape.rank() == 1) {
            uniform(0.5, 1.5)
        } else {
            // Uniform with the standard deviation of a fan-in scaled normal (0.1 for biases and BN means).
            let fan_in: usize = shape.dims().iter().skip(1).product::<usize>().max(1);
            let std = if shape.rank() == 1 {
                0.1
            } else {
                (1.0 / fan_in as f32).sqrt()
            };
            let half = std * 3f32.sqrt();
            uniform(-half, half)
        };
        var.set(&Tensor::from_vec(values, &shape, device)?)?;
    }
    if let Some(dir) = save {
        std::fs::create_dir_all(dir)?;
        varmap.save(dir.join(clip::load::OPEN_CLIP_WEIGHTS))?;
        let json = config.to_open_clip_json(&config.preprocess())?;
        std::fs::write(
            dir.join(clip::load::OPEN_CLIP_CONFIG),
            serde_json::to_string_pretty(&json)?,
        )?;
        eprintln!(
            "wrote {} and {}",
            clip::load::OPEN_CLIP_WEIGHTS,
            clip::load::OPEN_CLIP_CONFIG
        );
    }
    Ok(Clip::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?)
}
