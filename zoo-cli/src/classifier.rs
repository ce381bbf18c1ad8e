//! What `zoo run` classifies with: a ResNet over its own classes, or a CLIP model over the labels the user
//! gives (zero-shot: each label written into prompt templates, scored by `logit_scale * cosine`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clip::{ClipLoadOptions, PretrainedClip, ZeroShotClassifier};
use resnet::{Prediction, Pretrained};
use weights::PreprocessConfig;

/// Labels files above this size are refused unread.
const MAX_LABELS_FILE: u64 = 16 << 20;

/// The zero-shot options of `zoo run` (and `zoo embed --text`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ZeroShotArgs {
    /// Zero-shot labels for a CLIP model, comma-separated ("cat,dog,a red car").
    #[arg(long, conflicts_with = "labels_file")]
    pub labels: Option<String>,
    /// Zero-shot labels for a CLIP model, one per line (blank lines skipped).
    #[arg(long)]
    pub labels_file: Option<std::path::PathBuf>,
    /// A prompt template with `{}` where the label goes (repeatable; the label's embedding is the mean over
    /// templates). Default "a photo of a {}.".
    #[arg(long, conflicts_with = "templates")]
    pub template: Vec<String>,
    /// A named template set instead: `openai-imagenet` (OpenCLIP's 80 ImageNet prompts) or `simple-imagenet`
    /// (its 7).
    #[arg(long, value_parser = ["openai-imagenet", "simple-imagenet"])]
    pub templates: Option<String>,
}

impl ZeroShotArgs {
    /// Whether any label was given (zero-shot mode).
    pub fn given(&self) -> bool {
        self.labels.is_some() || self.labels_file.is_some()
    }

    /// The labels: trimmed, non-empty, each once.
    pub fn labels(&self) -> Result<Vec<String>> {
        let labels: Vec<String> = match (&self.labels, &self.labels_file) {
            (Some(list), _) => list.split(',').map(|l| l.trim().to_string()).collect(),
            (None, Some(path)) => read_labels_file(path)?,
            (None, None) => Vec::new(),
        };
        let labels: Vec<String> = labels.into_iter().filter(|l| !l.is_empty()).collect();
        if labels.is_empty() {
            bail!("--labels/--labels-file: no labels given");
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
            bail!("--labels/--labels-file: `{dup}` is given twice");
        }
        Ok(labels)
    }

    /// The templates: `--template`s, a named set, or CLIP's single prompt.
    pub fn templates(&self) -> Result<Vec<String>> {
        let t: Vec<String> = match self.templates.as_deref() {
            Some("openai-imagenet") => clip::openai_imagenet_templates()
                .into_iter()
                .map(String::from)
                .collect(),
            Some("simple-imagenet") => clip::simple_imagenet_templates()
                .into_iter()
                .map(String::from)
                .collect(),
            Some(other) => bail!("--templates: unknown set `{other}`"),
            None if self.template.is_empty() => vec![clip::SINGLE_TEMPLATE.to_string()],
            None => self.template.clone(),
        };
        for template in &t {
            clip::zero_shot::fill_template(template, "x").with_context(|| format!("--template {template:?}"))?;
        }
        Ok(t)
    }
}

fn read_labels_file(path: &Path) -> Result<Vec<String>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("--labels-file {}", path.display()))?
        .len();
    if len > MAX_LABELS_FILE {
        bail!(
            "--labels-file {}: {len} bytes is too large for a list of labels",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("--labels-file {}", path.display()))?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

/// A model that turns a batch of preprocessed images into scores over named classes.
pub enum Classifier {
    /// A ResNet and its own classes.
    Classes(Box<Pretrained>),
    /// A CLIP model and the user's labels.
    ZeroShot {
        /// The model, tokenizer and preprocessing.
        clip: Box<PretrainedClip>,
        /// The labels' text embeddings.
        classifier: ZeroShotClassifier,
    },
}

impl Classifier {
    /// The preprocessing inputs need.
    pub fn preprocess(&self) -> &PreprocessConfig {
        match self {
            Self::Classes(p) => &p.preprocess,
            Self::ZeroShot { clip, .. } => &clip.preprocess,
        }
    }

    /// Finite logits (N, classes) of a batch (N, 3, H, W).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Classes(p) => Ok(p.logits(x)?),
            Self::ZeroShot { clip, classifier } => {
                let x = x.to_device(clip.model.device())?.to_dtype(DType::F32)?;
                let logits = classifier.logits(&clip.model.encode_image(&x)?)?;
                resnet::finite::ensure_finite(&logits, || format!("the logits of {}", clip.source))?;
                Ok(logits)
            }
        }
    }

    /// The `k` most probable classes, most probable first.
    pub fn top_k(&self, probs: &[f32], k: usize) -> Vec<Prediction> {
        match self {
            Self::Classes(p) => p.top_k(probs, k),
            Self::ZeroShot { classifier, .. } => {
                let mut idx: Vec<usize> = (0..probs.len()).collect();
                idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
                idx.into_iter()
                    .take(k)
                    .map(|c| Prediction {
                        class: c,
                        label: classifier.labels()[c].clone(),
                        prob: probs[c],
                    })
                    .collect()
            }
        }
    }
}

/// Loads a CLIP model: `MODEL --weights FILE` (MODEL names it), a checkpoint file (its config beside it), or a
/// name or Hub repo.
pub fn load_clip(spec: &str, weights: Option<&str>, device: &Device, dtype: DType) -> Result<PretrainedClip> {
    if dtype != DType::F32 {
        bail!("CLIP models run in f32 only for now (--dtype f32)");
    }
    let mut opts = ClipLoadOptions::new(device);
    if let Some(w) = weights {
        opts.config = Some(
            clip::ClipConfig::by_name(spec)
                .with_context(|| format!("with --weights, MODEL names the CLIP model, and `{spec}` is none"))?,
        );
        if !Path::new(w).is_file() {
            bail!("weights file {w} does not exist");
        }
        return Ok(PretrainedClip::from_file(w, &opts)?);
    }
    if Path::new(spec).is_file() {
        return Ok(PretrainedClip::from_file(spec, &opts)?);
    }
    Ok(clip::pretrained(spec, &opts)?)
}

/// Whether `spec` (with `weights`) is a CLIP model: a CLIP name, or a checkpoint with an
/// `open_clip_config.json` beside it.
pub fn is_clip(spec: &str) -> bool {
    clip::load::is_clip_name(spec)
        || Path::new(spec)
            .parent()
            .is_some_and(|d| Path::new(spec).is_file() && d.join(clip::load::OPEN_CLIP_CONFIG).is_file())
}

/// The classifier `zoo run` uses: zero-shot when labels are given (the model must be a CLIP model), the
/// model's own classes otherwise (a CLIP model then is an error that says what to add).
pub fn load(
    spec: &str,
    weights: Option<&str>,
    zero_shot: &ZeroShotArgs,
    device: &Device,
    dtype: DType,
) -> Result<Classifier> {
    if !zero_shot.given() {
        if is_clip(spec) {
            bail!(
                "{spec} is a CLIP model: it classifies against labels you give, with --labels \"cat,dog,...\" or \
                 --labels-file FILE"
            );
        }
        if !zero_shot.template.is_empty() || zero_shot.templates.is_some() {
            bail!("--template and --templates go with --labels or --labels-file (zero-shot, CLIP models)");
        }
        let p = crate::resolve::load_model(spec, weights, device, dtype, false)?;
        return Ok(Classifier::Classes(Box::new(p)));
    }
    let labels = zero_shot.labels()?;
    let templates = zero_shot.templates()?;
    let hub_repo = spec.contains('/') && !Path::new(spec).exists();
    if !is_clip(spec) && !hub_repo {
        bail!("--labels need a CLIP model (`resnet50_clip`, ...); {spec} classifies into its own classes");
    }
    let clip = load_clip(spec, weights, device, dtype)?;
    let classifier = ZeroShotClassifier::new(&clip.model, &clip.tokenizer, &labels, &templates)?;
    Ok(Classifier::ZeroShot {
        clip: Box::new(clip),
        classifier,
    })
}
