//! The whole model: image tower, text tower and the temperature that turns cosines into logits.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use resnet::{BnMode, ResNet};

use crate::config::ClipConfig;
use crate::error::{invalid, Result};
use crate::text::TextTower;
use crate::tokenizer::ClipTokenizer;
use crate::zero_shot::ZeroShotClassifier;

/// Texts encoded per forward pass by [`Clip::encode_texts`]: memory stays flat in the number of texts.
pub const TEXT_BATCH: usize = 64;

/// A CLIP model with a ResNet image tower.
///
/// Checkpoint names are OpenCLIP's: the image tower under `visual.`, the text tower at the root, `logit_scale`
/// (the log of the temperature). [`crate::keys::canonical_name`] maps other layouts onto these.
#[derive(Debug, Clone)]
pub struct Clip {
    pub visual: ResNet,
    pub text: TextTower,
    /// `exp(logit_scale)`: logits are this times the cosine of image and text embeddings (100 for OpenAI's).
    pub logit_scale: f64,
    config: ClipConfig,
}

impl Clip {
    /// Builds the model for inference (BatchNorm folded into the image tower's convolutions).
    pub fn new(config: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(config, vb, BnMode::Fold)
    }

    /// Builds the model with the image tower's BatchNorm folded ([`BnMode::Fold`]) or kept apart.
    pub fn load(config: &ClipConfig, vb: VarBuilder, bn_mode: BnMode) -> Result<Self> {
        config.validate()?;
        let visual = ResNet::load(&config.vision, vb.pp("visual"), bn_mode)?;
        let text = TextTower::load(&config.text, config.embed_dim, vb.clone())?;
        // A scalar in OpenAI's and OpenCLIP's checkpoints, a 1-vector with OpenCLIP's `nonscalar_logit_scale`.
        let scale = vb.get((), "logit_scale").or_else(|_| vb.get(1, "logit_scale"))?;
        let log_scale = scale.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        if !log_scale.is_finite() || log_scale.exp() > 1e6 {
            return Err(invalid(format!(
                "logit_scale {log_scale} is not a usable log-temperature"
            )));
        }
        Ok(Self {
            visual,
            text,
            logit_scale: log_scale.exp(),
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Where the weights live (inputs must be there too).
    pub fn device(&self) -> &Device {
        self.text.positional_embedding.device()
    }

    /// Learnable parameters of both towers and `logit_scale`, as the checkpoint stores them.
    pub fn num_params(&self) -> usize {
        self.visual.num_params() + self.text.num_params() + 1
    }

    /// Image embeddings `(N, embed_dim)` (not normalized) of preprocessed `(N, 3, S, S)` images.
    pub fn encode_image(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.visual.forward(images)?)
    }

    /// Text embeddings `(N, embed_dim)` (not normalized) of `(N, L)` token ids.
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor> {
        Ok(self.text.forward(tokens)?)
    }

    /// Text embeddings of strings, tokenized and encoded [`TEXT_BATCH`] at a time.
    pub fn encode_texts<S: AsRef<str>>(&self, tokenizer: &ClipTokenizer, texts: &[S]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(invalid("no texts to encode"));
        }
        let mut out = Vec::with_capacity(texts.len().div_ceil(TEXT_BATCH));
        for chunk in texts.chunks(TEXT_BATCH) {
            out.push(self.encode_text(&tokenizer.tokenize(chunk, self.device())?)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// `logit_scale * cos(image, text)` for every pair: `(N_images, N_texts)`.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let cos = normalize(image_embeds)?.matmul(&normalize(text_embeds)?.t()?)?;
        Ok((cos * self.logit_scale)?)
    }

    /// Zero-shot classification: for each image, the probability of each label (softmax over
    /// `logit_scale * cosine` with the labels' text embeddings, each the normalized mean over `templates`).
    /// `(N_images, N_labels)`. To classify many batches against the same labels, build a
    /// [`ZeroShotClassifier`] once.
    pub fn zero_shot<L: AsRef<str>, T: AsRef<str>>(
        &self,
        tokenizer: &ClipTokenizer,
        images: &Tensor,
        labels: &[L],
        templates: &[T],
    ) -> Result<Tensor> {
        ZeroShotClassifier::new(self, tokenizer, labels, templates)?.probs(self, images)
    }
}

/// Each row divided by its L2 norm (at least 1e-12, as `F.normalize`).
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}
