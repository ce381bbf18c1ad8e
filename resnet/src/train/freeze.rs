//! Which parameters train, and how BatchNorm behaves while they do.

use candle_core::{Tensor, Var};

use super::TrainableResNet;

/// What part of the network a fine-tune updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Only the new classifier (`fc.*`). The backbone is frozen: its BatchNorm layers use their running
    /// statistics (eval mode, never updated) and no gradient flows into it.
    #[default]
    Head,
    /// Every weight. BatchNorm runs in train mode: batch statistics, running statistics updated.
    All,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(Scope::Head),
            "all" => Ok(Scope::All),
            other => Err(format!("unknown training scope `{other}` (head, all)")),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Head => "head",
            Scope::All => "all",
        })
    }
}

/// True for the BatchNorm buffers, which are tensors of the network but never parameters.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// True for the classifier's parameters.
pub fn is_head(name: &str) -> bool {
    name.starts_with("fc.")
}

impl Scope {
    /// Whether parameter `name` trains under this scope.
    pub fn trains(self, name: &str) -> bool {
        !is_buffer(name)
            && match self {
                Scope::Head => is_head(name),
                Scope::All => true,
            }
    }

    /// Whether the backbone's BatchNorm layers run in train mode.
    pub fn bn_train(self) -> bool {
        matches!(self, Scope::All)
    }
}

impl TrainableResNet {
    /// The variables the optimizer updates under `scope`, sorted by name.
    pub fn trainable_vars(&self, scope: Scope) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| scope.trains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The backbone as it stands, rebuilt for inference (BatchNorm folded, the CPU kernels' packed weights,
    /// no classifier): while only the head trains the backbone is a constant, and its features are computed
    /// several times faster this way than through the trainable layers.
    pub fn frozen_backbone(&self) -> crate::Result<crate::ResNet> {
        let cfg = self.config().clone().with_num_classes(0);
        let vb = candle_nn::VarBuilder::from_tensors(self.tensors(), candle_core::DType::F32, self.device());
        crate::ResNet::load(&cfg, vb, crate::BnMode::Fold)
    }

    /// Training-time logits under `scope`. With [`Scope::Head`] the backbone runs in eval mode and its
    /// output is detached, so the backward pass stops at the classifier.
    pub fn forward_train(&self, x: &Tensor, scope: Scope) -> candle_core::Result<Tensor> {
        match scope {
            Scope::Head => {
                let features = self.model.forward_features_t(x, false)?.detach();
                self.model.forward_head(&features)
            }
            Scope::All => candle_core::ModuleT::forward_t(&self.model, x, true),
        }
    }
}
