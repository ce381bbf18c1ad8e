//! The head: global average pooling and one linear layer (`fc`), or CLIP's attention pool (`attnpool`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::attention_pool::AttentionPool;
use crate::layers::pool;

/// What turns the last stage's feature map into the network's output (see [`crate::config::HeadKind`]).
#[derive(Debug, Clone)]
pub enum Head {
    /// Logits of a classifier.
    Linear(Classifier),
    /// CLIP's image embedding.
    AttentionPool(AttentionPool),
}

impl Head {
    /// Learnable parameters, as the checkpoint stores them.
    pub fn num_params(&self) -> usize {
        match self {
            Head::Linear(c) => c.num_params(),
            Head::AttentionPool(a) => a.num_params(),
        }
    }

    /// Size of the output: classes, or the embedding.
    pub fn out_dim(&self) -> usize {
        match self {
            Head::Linear(c) => c.num_classes,
            Head::AttentionPool(a) => a.out_dim,
        }
    }

    /// The classifier, when the head is one.
    pub fn classifier(&self) -> Option<&Classifier> {
        match self {
            Head::Linear(c) => Some(c),
            Head::AttentionPool(_) => None,
        }
    }
}

impl Module for Head {
    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        match self {
            Head::Linear(c) => c.forward(features),
            Head::AttentionPool(a) => a.forward(features),
        }
    }
}

/// Pools the last stage's features and maps them to class logits.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// The linear layer (`fc.weight`, `fc.bias`).
    pub fc: Linear,
    /// Outputs.
    pub num_classes: usize,
}

impl Classifier {
    /// Loads `fc.weight` (num_classes, num_features) and `fc.bias` from `vb` (already at `fc`).
    pub fn load(num_features: usize, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc: candle_nn::linear(num_features, num_classes, vb)?,
            num_classes,
        })
    }

    /// Learnable parameters.
    pub fn num_params(&self) -> usize {
        self.fc.weight().elem_count() + self.fc.bias().map_or(0, Tensor::elem_count)
    }

    /// Logits from already pooled features (N, C).
    pub fn forward_pooled(&self, pooled: &Tensor) -> Result<Tensor> {
        self.fc.forward(pooled)
    }
}

impl Module for Classifier {
    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        self.forward_pooled(&pool::global_avg_pool(features)?)
    }
}
