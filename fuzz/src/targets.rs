//! One function per reader of untrusted input. Each takes arbitrary bytes and must simply return.
//!
//! File-based readers get the bytes written to a scratch directory of the process (removed by
//! [`remove_scratch`]). Limits are set low enough that a legitimate-looking mutated header cannot make a
//! single input take seconds, but the code paths are the ones `zoo` runs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;

/// The directory where file-based targets write their input, one per process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("zoo-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

/// Removes this process's scratch directory.
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

fn write(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    // A target earlier in the process may have left a directory or link here: start clean.
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, data).expect("scratch directory is writable");
    p
}

/// The image decoders (`resnet::data::decode_image_with`): libjpeg-turbo for JPEG, the `image` crate
/// for PNG, GIF, BMP, TIFF and WebP, then PIL's RGB conversion. At most 4 megapixels.
pub fn image(data: &[u8]) {
    let limits = resnet::data::ImageLimits {
        max_file_bytes: 1 << 20,
        max_pixels: 1 << 22,
    };
    let _ = resnet::data::decode_image_with(data, Path::new("fuzz-input"), &limits);
}

/// A safetensors checkpoint: header validation (`Checkpoint::open`), every metadata entry as JSON and
/// as the types zoo reads (`zoo.config`, `zoo.preprocess`, `zoo.labels`), and the tensors.
pub fn safetensors(data: &[u8]) {
    use weights::checkpoint::{Checkpoint, META_CONFIG, META_LABELS, META_PREPROCESS};
    let path = write("input.safetensors", data);
    let Ok(ck) = Checkpoint::open(&path) else { return };
    let keys: Vec<String> = ck.metadata().keys().cloned().collect();
    for key in keys {
        let _ = ck.metadata_json::<serde_json::Value>(&key);
    }
    let _ = ck.metadata_json::<resnet::config::ResNetConfig>(META_CONFIG);
    let _ = ck.metadata_json::<weights::PreprocessConfig>(META_PREPROCESS);
    let _ = ck.metadata_json::<Vec<String>>(META_LABELS);
    let _ = ck.load(&Device::Cpu);
}

/// A PyTorch zip state dict (`weights::pth`). The first byte picks the form: even, the rest is the file
/// itself; odd, the rest is a pickle, wrapped into a `torch.save`-like archive with one 64-byte storage
/// (so mutations reach the unpickler instead of breaking the zip).
pub fn pth(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { torch_zip(rest) };
    let path = write("input.pth", &bytes);
    let _ = weights::pth::read_state_dict(&path, &Device::Cpu);
    let _ = weights::pth::prescan(rest);
}

pub use zoo_testkit::pth::{torch_zip, zip_stored};

/// A Keras TF.js model (`weights::tfjs`): the input is a 4-byte little-endian length, that many bytes of
/// `model.json`, then the bytes of the shard `group1-shard1of1.bin`, all written to a scratch directory
/// (with a `secret.bin` beside it that no manifest may reach); then open, load and the PyTorch layouts.
pub fn keras(data: &[u8]) {
    let (json, shard) = split_keras(data);
    let dir = scratch().join("keras");
    let _ = std::fs::create_dir_all(dir.join("model"));
    let _ = std::fs::write(dir.join("secret.bin"), [0u8; 64]);
    let model = dir.join("model/model.json");
    let _ = std::fs::write(&model, json);
    let _ = std::fs::write(dir.join("model/group1-shard1of1.bin"), shard);
    let Ok(m) = weights::tfjs::TfjsModel::open(&model) else {
        return;
    };
    let _ = m.load(&Device::Cpu);
    let _ = m.load_torch_layout(&Device::Cpu);
}

/// The (model.json, shard) parts of a [`keras`] input.
pub fn split_keras(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (data, &[]);
    }
    let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let rest = &data[4..];
    let n = n.min(rest.len());
    rest.split_at(n)
}

/// Joins a model.json and a shard into a [`keras`] input.
pub fn join_keras(json: &[u8], shard: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(json);
    out.extend_from_slice(shard);
    out
}

/// A `.npy` array (`weights::npy`): the header parser alone, then the file, whole and by rows, with a
/// 16 MiB read limit.
pub fn npy(data: &[u8]) {
    let limits = weights::npy::NpyLimits {
        max_read_bytes: 16 << 20,
        ..Default::default()
    };
    let _ = weights::npy::parse_header(data, &limits);
    let path = write("input.npy", data);
    let Ok(mut f) = weights::npy::NpyFile::open(&path, limits) else {
        return;
    };
    let _ = f.read_all(&Device::Cpu);
    let rows = f.shape().first().copied().unwrap_or(0);
    let _ = f.read_rows(rows / 2..rows, &Device::Cpu);
}
