//! The classifier: global average pooling and one linear layer (`fc`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::layers::pool;

/// Pools the last stage's features and maps them to class logits.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub fc: Linear,
    pub num_classes: usize,
}

impl Classifier {
    /// Loads `fc.weight` (num_classes, num_features) and `fc.bias` from `vb` (already at `fc`).
    pub fn load(num_features: usize, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { fc: candle_nn::linear(num_features, num_classes, vb)?, num_classes })
    }

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
