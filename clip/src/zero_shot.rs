//! Zero-shot classification: any list of labels becomes a classifier through prompt templates.
//!
//! Each label is written into every template (`"a photo of a {}."`), the prompts are encoded, each embedding
//! normalized, their mean over the templates normalized again: one row per label (OpenCLIP's
//! `build_zero_shot_classifier`). An image's logits are `logit_scale` times the cosines with those rows; the
//! probabilities are their softmax.
//!
//! Templates: [`SINGLE_TEMPLATE`], or OpenCLIP's ImageNet ensembles [`openai_imagenet_templates`] (80) and
//! [`simple_imagenet_templates`] (7), kept as data in `data/` (written by `scripts/gen_clip_tokenizer.py`).

use candle_core::{Tensor, D};

use crate::error::{invalid, Result};
use crate::model::{normalize, Clip, TEXT_BATCH};
use crate::tokenizer::ClipTokenizer;

/// The prompt of CLIP's paper for a single template.
pub const SINGLE_TEMPLATE: &str = "a photo of a {}.";

const OPENAI_IMAGENET: &str = include_str!("../data/templates_openai_imagenet.txt");
const SIMPLE_IMAGENET: &str = include_str!("../data/templates_simple_imagenet.txt");

/// OpenCLIP's 80 ImageNet templates (`OPENAI_IMAGENET_TEMPLATES`, from the CLIP paper's prompt engineering).
pub fn openai_imagenet_templates() -> Vec<&'static str> {
    OPENAI_IMAGENET.lines().filter(|l| !l.is_empty()).collect()
}

/// OpenCLIP's 7-template subset (`SIMPLE_IMAGENET_TEMPLATES`).
pub fn simple_imagenet_templates() -> Vec<&'static str> {
    SIMPLE_IMAGENET.lines().filter(|l| !l.is_empty()).collect()
}

/// A template with the label in place of its `{}`, as Python's `template.format(label)`: `{{` and `}}` stand
/// for braces; any other brace, or a number of `{}` other than one, is an error.
pub fn fill_template(template: &str, label: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len() + label.len());
    let mut slots = 0;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('{', Some('{')) | ('}', Some('}')) => {
                out.push(c);
                chars.next();
            }
            ('{', Some('}')) => {
                out.push_str(label);
                chars.next();
                slots += 1;
            }
            ('{', _) | ('}', _) => {
                return Err(invalid(format!(
                    "template {template:?}: a lone brace (write {{{{ or }}}} for a literal one)"
                )))
            }
            _ => out.push(c),
        }
    }
    if slots != 1 {
        return Err(invalid(format!(
            "template {template:?} must hold the label's place `{{}}` exactly once, has {slots}"
        )));
    }
    Ok(out)
}

/// The labels' text embeddings, ready to score images.
#[derive(Debug, Clone)]
pub struct ZeroShotClassifier {
    labels: Vec<String>,
    /// `(N_labels, embed_dim)`, rows of unit length.
    weights: Tensor,
    logit_scale: f64,
}

impl ZeroShotClassifier {
    /// Encodes every label in every template. Prompts go through the text tower [`TEXT_BATCH`] at a time, and
    /// only one running sum per label is kept, so memory is flat in the number of labels and templates.
    pub fn new<L: AsRef<str>, T: AsRef<str>>(
        clip: &Clip,
        tokenizer: &ClipTokenizer,
        labels: &[L],
        templates: &[T],
    ) -> Result<Self> {
        if labels.is_empty() || templates.is_empty() {
            return Err(invalid(
                "zero-shot classification needs at least one label and one template",
            ));
        }
        for t in templates {
            fill_template(t.as_ref(), "")?;
        }
        let mut rows = Vec::with_capacity(labels.len());
        for label in labels {
            let mut sum: Option<Tensor> = None;
            for chunk in templates.chunks(TEXT_BATCH) {
                let prompts = chunk
                    .iter()
                    .map(|t| fill_template(t.as_ref(), label.as_ref()))
                    .collect::<Result<Vec<_>>>()?;
                let embeds = normalize(&clip.encode_text(&tokenizer.tokenize(&prompts, clip.device())?)?)?;
                let part = embeds.sum_keepdim(0)?;
                sum = Some(match sum {
                    Some(s) => (s + part)?,
                    None => part,
                });
            }
            let sum = sum.ok_or_else(|| invalid("no templates"))?;
            rows.push(normalize(&(sum / templates.len() as f64)?)?);
        }
        let labels = labels.iter().map(|l| l.as_ref().to_string()).collect();
        Ok(Self {
            labels,
            weights: Tensor::cat(&rows, 0)?,
            logit_scale: clip.logit_scale,
        })
    }

    /// The labels, in the order of the columns of [`Self::logits`] and [`Self::probs`].
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// `(N_labels, embed_dim)` unit rows.
    pub fn weights(&self) -> &Tensor {
        &self.weights
    }

    /// `logit_scale * cos(image, label)`: `(N_images, N_labels)`.
    pub fn logits(&self, image_embeds: &Tensor) -> Result<Tensor> {
        Ok((normalize(image_embeds)?.matmul(&self.weights.t()?)? * self.logit_scale)?)
    }

    /// Label probabilities of preprocessed images: `(N_images, N_labels)`.
    pub fn probs(&self, clip: &Clip, images: &Tensor) -> Result<Tensor> {
        let logits = self.logits(&clip.encode_image(images)?)?;
        Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_like_python_format() {
        assert_eq!(fill_template("a photo of a {}.", "cat").unwrap(), "a photo of a cat.");
        assert_eq!(fill_template("{{{}}}", "x{}").unwrap(), "{x{}}");
        for bad in ["no slot", "{} and {}", "{0}", "a { b {}", "}{}"] {
            assert!(fill_template(bad, "x").is_err(), "{bad}");
        }
        assert_eq!(openai_imagenet_templates().len(), 80);
        assert_eq!(simple_imagenet_templates().len(), 7);
        for t in openai_imagenet_templates()
            .into_iter()
            .chain(simple_imagenet_templates())
        {
            fill_template(t, "x").unwrap();
        }
    }
}
