//! Helpers shared by the integration tests: fixture paths, loading, comparing.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The device tests run their models on: `ZOO_TEST_DEVICE` (`cpu`, `cuda:N`, `metal`), CPU by default.
pub fn device() -> Device {
    match std::env::var("ZOO_TEST_DEVICE").as_deref() {
        Err(_) | Ok("") | Ok("cpu") => Device::Cpu,
        Ok("metal") => Device::new_metal(0).expect("ZOO_TEST_DEVICE=metal needs a --features metal build and a GPU"),
        Ok(spec) => {
            let ordinal = spec
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("ZOO_TEST_DEVICE={spec}: use cpu, cuda:N or metal"));
            Device::new_cuda(ordinal).expect("ZOO_TEST_DEVICE=cuda:N needs a --features cuda build and a GPU")
        }
    }
}

/// `../shared` beside the repository (override with `ZOO_SHARED_DIR`).
pub fn shared(rel: &str) -> PathBuf {
    let root = std::env::var_os("ZOO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    root.join(rel)
}

/// `.data/<rel>` (fetched by `scripts/fetch_test_data.sh`), or `None` with a loud warning when it is absent
/// outside CI; under CI (env `CI` set) missing data fails.
pub fn data(rel: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data").join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: run scripts/fetch_test_data.sh", path.display());
    }
    eprintln!(
        "\n*** SKIPPED: {} is missing; run scripts/fetch_test_data.sh ***\n",
        path.display()
    );
    None
}

/// All tensors of a safetensors file and its `__metadata__`.
pub fn load(path: &std::path::Path) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let meta = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("safetensors body");
    (tensors, meta)
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
