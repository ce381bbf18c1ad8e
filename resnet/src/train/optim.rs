//! SGD with momentum and weight decay, PyTorch's `torch.optim.SGD`, on candle-nn's `Optimizer` trait
//! (candle-nn's own `SGD` has no momentum). AdamW is candle-nn's [`candle_nn::AdamW`].

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::Optimizer;

/// Hyper-parameters of [`SgdMomentum`].
#[derive(Debug, Clone, Copy)]
pub struct ParamsSgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 = plain SGD).
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for ParamsSgd {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// `g += wd * w; buf = momentum * buf + g; w -= lr * (nesterov ? g + momentum * buf : buf)`.
#[derive(Debug)]
pub struct SgdMomentum {
    vars: Vec<(Var, Option<Tensor>)>,
    params: ParamsSgd,
}

impl Optimizer for SgdMomentum {
    type Config = ParamsSgd;

    fn new(vars: Vec<Var>, params: ParamsSgd) -> Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|v| (v, None))
            .collect();
        Ok(Self { vars, params })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let p = self.params;
        for (var, buf) in self.vars.iter_mut() {
            let Some(g) = grads.get(var) else { continue };
            let mut g = g.clone();
            if p.weight_decay != 0.0 {
                g = (g + (var.as_tensor() * p.weight_decay)?)?;
            }
            let update = if p.momentum != 0.0 {
                let b = match buf.take() {
                    Some(b) => ((b * p.momentum)? + &g)?,
                    None => g.clone(),
                };
                let u = if p.nesterov {
                    (&g + (&b * p.momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
                u
            } else {
                g
            };
            var.set(&var.as_tensor().sub(&(update * p.lr)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}
