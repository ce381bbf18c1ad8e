//! The tensor-by-tensor check of a checkpoint against an architecture, before anything is built.
//!
//! Run first so that a wrong checkpoint is reported by tensor name with both shapes, instead of as the
//! first failing `VarBuilder::get` deep inside a stage, and so that extra tensors (weights of a deeper
//! network, say) are an error rather than silently ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use weights::checkpoint::TensorInfo;

use crate::error::{Error, Result, TensorProblem};
use crate::{BnMode, ResNet, ResNetConfig};

/// Every tensor the network asks for when built from `cfg`, with its shape (canonical names).
///
/// Found by building the network once on a backend that records each request and hands back a broadcast
/// zero, so no memory is allocated for the weights. `cfg` is validated first (bounded work for any input).
pub fn expected_tensors(cfg: &ResNetConfig) -> Result<BTreeMap<String, Vec<usize>>> {
    let recorder = Recorder(Mutex::new(BTreeMap::new()));
    let vb = VarBuilder::from_backend(Box::new(&recorder), DType::F32, Device::Cpu);
    ResNet::load(cfg, vb, BnMode::Keep)?;
    Ok(recorder.0.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

struct Recorder(Mutex<BTreeMap<String, Vec<usize>>>);

impl SimpleBackend for &Recorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{name}` was requested without a shape, which the shape check cannot record")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Name, shape and dtype of a tensor in memory, for [`check_tensors`].
pub fn tensor_info(name: &str, t: &Tensor) -> TensorInfo {
    TensorInfo {
        name: name.to_string(),
        shape: t.dims().to_vec(),
        dtype: t.dtype(),
    }
}

/// The problems of `stored` (canonical names) against `expected`: missing, unexpected, misshapen and
/// non-float tensors, in name order.
pub fn tensor_problems(expected: &BTreeMap<String, Vec<usize>>, stored: &[TensorInfo]) -> Vec<TensorProblem> {
    let mut problems = Vec::new();
    let found: BTreeMap<&str, &TensorInfo> = stored.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, shape) in expected {
        match found.get(name.as_str()) {
            None => problems.push(TensorProblem::Missing {
                name: name.clone(),
                expected: shape.clone(),
            }),
            Some(t) if &t.shape != shape => problems.push(TensorProblem::Shape {
                name: name.clone(),
                expected: shape.clone(),
                found: t.shape.clone(),
            }),
            Some(t) if !t.dtype.is_float() => problems.push(TensorProblem::DType {
                name: name.clone(),
                found: t.dtype,
            }),
            Some(_) => {}
        }
    }
    for t in stored.iter().filter(|t| !expected.contains_key(&t.name)) {
        problems.push(TensorProblem::Unexpected {
            name: t.name.clone(),
            found: t.shape.clone(),
        });
    }
    problems
}

/// Compares stored tensors (canonical names) with what the architecture `arch` expects; any difference is
/// an [`Error::Mismatch`] listing them all.
pub fn check_tensors(
    path: &Path,
    arch: &str,
    expected: &BTreeMap<String, Vec<usize>>,
    stored: &[TensorInfo],
) -> Result<()> {
    let problems = tensor_problems(expected, stored);
    match problems.is_empty() {
        true => Ok(()),
        false => Err(Error::Mismatch {
            path: path.to_path_buf(),
            arch: arch.to_string(),
            problems,
        }),
    }
}

/// The named variants whose tensors `stored` fits exactly (the head size taken from `fc.weight`), for a
/// helpful error when a file names no architecture.
pub fn fitting_variants(stored: &[TensorInfo]) -> Vec<String> {
    let classes = stored
        .iter()
        .find(|t| t.name == "fc.weight")
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0);
    crate::variants::NAMES
        .iter()
        .filter(|name| {
            let Ok(cfg) = crate::variants::by_name(name) else {
                return false;
            };
            let Ok(expected) = expected_tensors(&cfg.with_num_classes(classes)) else {
                return false;
            };
            expected.len() == stored.len() && tensor_problems(&expected, stored).is_empty()
        })
        .map(|n| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tensors_of_resnet18() {
        let e = expected_tensors(&crate::variants::resnet18()).unwrap();
        assert_eq!(e["conv1.weight"], [64, 3, 7, 7]);
        assert_eq!(e["layer2.0.downsample.0.weight"], [128, 64, 1, 1]);
        assert_eq!(e["bn1.running_var"], [64]);
        assert_eq!(e["fc.weight"], [1000, 512]);
        assert!(!e.contains_key("layer1.0.downsample.0.weight"));
    }

    #[test]
    fn problems_name_tensor_and_shapes() {
        let expected = BTreeMap::from([("a".to_string(), vec![2, 3]), ("b".to_string(), vec![4])]);
        let info = |name: &str, shape: Vec<usize>, dtype| TensorInfo {
            name: name.into(),
            shape,
            dtype,
        };
        let stored = [info("a", vec![3, 2], DType::F32), info("c", vec![1], DType::F32)];
        let err = check_tensors(Path::new("x.safetensors"), "net", &expected, &stored)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a` has shape [3, 2], expected [2, 3]"), "{err}");
        assert!(
            err.contains("missing tensor `b`") && err.contains("unexpected tensor `c`"),
            "{err}"
        );
        let stored = [info("a", vec![2, 3], DType::I64), info("b", vec![4], DType::F16)];
        let err = check_tensors(Path::new("x"), "net", &expected, &stored)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a` has dtype I64") && !err.contains("`b`"), "{err}");
    }

    #[test]
    fn a_deeper_networks_tensors_fit_only_it() {
        let e = expected_tensors(&crate::variants::resnet32()).unwrap();
        let stored: Vec<TensorInfo> = e
            .iter()
            .map(|(n, s)| TensorInfo {
                name: n.clone(),
                shape: s.clone(),
                dtype: DType::F32,
            })
            .collect();
        assert_eq!(fitting_variants(&stored), ["resnet32"]);
        let shallower = expected_tensors(&crate::variants::resnet20()).unwrap();
        let problems = tensor_problems(&shallower, &stored);
        assert!(problems
            .iter()
            .any(|p| matches!(p, TensorProblem::Unexpected { name, .. } if name.starts_with("layer1.3"))));
    }
}
