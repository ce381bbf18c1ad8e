//! A forward pass that candle can differentiate end to end.
//!
//! Candle 0.11 has no backward for `max_pool2d` unless kernel == stride, and the inference path
//! ([`crate::layers::pool`]) uses it twice: the classic stem's 3x3 stride-2 max-pool and option A's
//! stride-2 subsampling (`x[:, :, ::2, ::2]` as a 1x1 max-pool). Here both are built from
//! pad/reshape/narrow/maximum, whose gradients candle knows; the results are bit-identical to the
//! inference ops. Everything else is the crate's own layers.
//!
//! TODO(lead): once `layers::pool` dispatches to these when `x.track_op()`, `ResNet::forward_t(x, true)`
//! is differentiable by itself and [`forward_t`] reduces to it.

use candle_core::{ModuleT, Result, Tensor};

use crate::model::ResNet;
use crate::shortcut::Shortcut;

pub use crate::layers::conv::take_strided;

/// `x[:, :, ::stride, ::stride]` (option A's subsampling).
pub fn subsample(x: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    let rows = take_strided(x, 2, 0, h.div_ceil(stride), stride)?;
    take_strided(&rows, 3, 0, w.div_ceil(stride), stride)
}

/// `nn.MaxPool2d(3, stride=2, padding=1)` on a non-negative tensor, as the maximum of nine strided views.
/// (On ties candle splits the gradient where PyTorch picks one input; after a ReLU only zeros tie, and
/// their gradient is zero either way.)
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let xp = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut out: Option<Tensor> = None;
    for i in 0..3 {
        let rows = take_strided(&xp, 2, i, oh, 2)?;
        for j in 0..3 {
            let tap = take_strided(&rows, 3, j, ow, 2)?;
            out = Some(match out {
                None => tap,
                Some(m) => m.maximum(&tap)?,
            });
        }
    }
    Ok(out.expect("nine taps"))
}

/// A block's shortcut, differentiable.
pub fn shortcut_t(shortcut: &Shortcut, x: &Tensor, train: bool) -> Result<Tensor> {
    match shortcut {
        Shortcut::ZeroPad(z) => subsample(x, z.stride)?.pad_with_zeros(1, z.pad_before, z.pad_after),
        other => other.forward_t(x, train),
    }
}

/// Logits of `model`, differentiable; `residual = false` drops every shortcut (the "plain" twin of
/// [`crate::gradflow`]). `train` runs BatchNorm on batch statistics and updates its running ones.
pub fn forward_wired(model: &ResNet, x: &Tensor, train: bool, residual: bool) -> Result<Tensor> {
    let mut h = x.clone();
    for (_, conv) in &model.stem.convs {
        h = conv.forward_t(&h, train)?.relu()?;
    }
    if model.stem.max_pool {
        h = max_pool_3x3_s2(&h)?;
    }
    for stage in &model.stages {
        for block in &stage.blocks {
            let fx = block.residual.forward_t(&h, train)?;
            h = match residual {
                true => (fx + shortcut_t(&block.shortcut, &h, train)?)?.relu()?,
                false => fx.relu()?,
            };
        }
    }
    model.forward_head(&h)
}

/// `model.forward_t(x, train)`, differentiable.
pub fn forward_t(model: &ResNet, x: &Tensor, train: bool) -> Result<Tensor> {
    forward_wired(model, x, train, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::pool;
    use candle_core::{Device, Var};

    fn input(h: usize, w: usize) -> Tensor {
        let n = 2 * 3 * h * w;
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.37).sin() * 3.0).max(0.0)).collect();
        Tensor::from_vec(v, (2, 3, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn pools_equal_the_inference_ops_and_have_gradients() {
        for (h, w) in [(8, 8), (7, 9), (5, 6)] {
            let x = Var::from_tensor(&input(h, w)).unwrap();
            let a = max_pool_3x3_s2(x.as_tensor()).unwrap();
            let b = pool::max_pool_3x3_s2(x.as_tensor()).unwrap();
            assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            let s = subsample(x.as_tensor(), 2).unwrap();
            let t = pool::subsample(x.as_tensor(), 2).unwrap();
            assert_eq!(s.dims(), t.dims());
            assert_eq!(s.flatten_all().unwrap().to_vec1::<f32>().unwrap(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            let g = (a.sum_all().unwrap() + s.sum_all().unwrap()).unwrap().backward().unwrap();
            assert!(g.get(x.as_tensor()).is_some());
        }
    }
}
