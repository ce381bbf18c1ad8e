//! Safetensors checkpoints: reading with validation, and self-describing atomic writes.
//!
//! A checkpoint written by zoo carries in its `__metadata__` everything needed to use it: the
//! architecture config ([`META_CONFIG`]), the preprocessing ([`META_PREPROCESS`]) and the class names
//! ([`META_LABELS`]), so `--weights file.safetensors` needs no other flag.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

/// Metadata key: the architecture name (`resnet50`), for humans and as a fallback.
pub const META_ARCH: &str = "zoo.arch";
/// Metadata key: the architecture config as JSON (model crates define its type).
pub const META_CONFIG: &str = "zoo.config";
/// Metadata key: [`crate::PreprocessConfig`] as JSON.
pub const META_PREPROCESS: &str = "zoo.preprocess";
/// Metadata key: class names as a JSON array of strings.
pub const META_LABELS: &str = "zoo.labels";
/// Metadata key: the name of a label set that ships with zoo (`imagenet-1k`), instead of the full list.
pub const META_LABEL_SET: &str = "zoo.label_set";

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file ({reason}); it may be truncated or corrupt: download or convert it again")]
    Corrupt { path: PathBuf, reason: String },
    #[error("metadata `{key}` of {path} is not valid: {reason}")]
    BadMetadata { path: PathBuf, key: String, reason: String },
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Name, shape and dtype of one stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// An opened safetensors file: its header, validated, and its metadata. Tensors are read on demand
/// from the memory map the header was read through.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    metadata: HashMap<String, String>,
    tensors: Vec<TensorInfo>,
    bytes: Arc<memmap2::Mmap>,
}

impl Checkpoint {
    /// Reads and checks the header: every tensor's byte range must lie inside the file. The file is
    /// memory-mapped, so only the header's pages are read here.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let bytes = map(&path)?;
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.clone(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            let dtype = DType::try_from(view.dtype()).map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
            tensors.push(TensorInfo {
                name,
                shape: view.shape().to_vec(),
                dtype,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(Self {
            path,
            metadata,
            tensors,
            bytes: Arc::new(bytes),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The stored tensors, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Parses the JSON metadata entry `key`, if present.
    pub fn metadata_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CheckpointError> {
        let Some(text) = self.metadata.get(key) else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| CheckpointError::BadMetadata {
                path: self.path.clone(),
                key: key.to_string(),
                reason: e.to_string(),
            })
    }

    /// Loads every tensor onto `device`.
    /// Every tensor is copied once, straight from the mapped file into its own buffer.
    pub fn load(&self, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&self.bytes).map_err(|e| corrupt(e.to_string()))?;
        st.tensors()
            .into_iter()
            .map(|(name, view)| {
                let t = candle_core::safetensors::Load::load(&view, device)
                    .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
                Ok((name, t))
            })
            .collect()
    }
}

/// Metadata key: how a checkpoint is quantized, as JSON (its presence marks an int8 checkpoint, whose int8
/// tensors Candle has no type for: read them with [`RawCheckpoint`]).
pub const META_QUANTIZATION: &str = "zoo.quantization";

/// The safetensors dtypes [`RawTensor`] and [`RawCheckpoint`] speak.
pub use safetensors::Dtype;

/// One tensor as its safetensors dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A safetensors file whose tensors are read as raw bytes, whatever their dtype (int8 included): the header
/// is validated (every tensor's bytes inside the file, sizes matching dtypes and shapes) when opened.
#[derive(Debug)]
pub struct RawCheckpoint {
    path: PathBuf,
    metadata: HashMap<String, String>,
    bytes: memmap2::Mmap,
}

impl RawCheckpoint {
    /// Maps `path` and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let bytes = map(&path)?;
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.clone(),
            reason,
        };
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(Self { path, metadata, bytes })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` entries.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Every tensor's name, dtype and shape, sorted by name.
    pub fn tensors(&self) -> Vec<(String, safetensors::Dtype, Vec<usize>)> {
        // Validated when opened.
        let Ok(st) = safetensors::SafeTensors::deserialize(&self.bytes) else {
            return Vec::new();
        };
        let mut out: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The tensor `name`, which must have `dtype` and `shape`.
    pub fn tensor(&self, name: &str, dtype: safetensors::Dtype, shape: &[usize]) -> Result<&[u8], CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&self.bytes).map_err(|e| corrupt(e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|_| corrupt(format!("tensor `{name}` is missing")))?;
        if view.dtype() != dtype || view.shape() != shape {
            return Err(corrupt(format!(
                "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                view.dtype(),
                view.shape()
            )));
        }
        Ok(view.data())
    }
}

/// Writes raw `tensors` (any dtype) and `metadata` to `path` atomically (see [`save`]).
pub fn save_raw(
    path: impl AsRef<Path>,
    tensors: &[(String, RawTensor)],
    metadata: &HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let err = |reason: String| CheckpointError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    let mut bytes =
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), meta).map_err(|e| err(e.to_string()))?;
    sort_metadata(&mut bytes, metadata).map_err(err)?;
    crate::fsutil::write_atomic(path, |w| w.write_all(&bytes)).map_err(|e| err(e.to_string()))
}

/// Maps `path` read-only.
fn map(path: &Path) -> Result<memmap2::Mmap, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is only ever read, and checkpoints are replaced by rename (see `save`), never
    // rewritten in place, so the mapped bytes do not change underneath us.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// Writes `tensors` and `metadata` to `path` atomically with [`crate::fsutil::write_atomic`]: readers never
/// see a half-written checkpoint, nothing is left behind on an error, a handled signal or SIGKILL (Linux),
/// and the file gets the mode `0666 & !umask`.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &HashMap<String, Tensor>,
    metadata: &HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let err = |reason: String| CheckpointError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut views = Vec::with_capacity(names.len());
    for name in names {
        let t = tensors[name]
            .to_device(&Device::Cpu)
            .and_then(|t| t.contiguous())
            .map_err(|e| err(e.to_string()))?;
        views.push((name.clone(), t));
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata.clone())
    };
    let mut bytes =
        safetensors::serialize(views.iter().map(|(n, t)| (n.as_str(), t)), meta).map_err(|e| err(e.to_string()))?;
    sort_metadata(&mut bytes, metadata).map_err(err)?;
    crate::fsutil::write_atomic(path, |w| w.write_all(&bytes)).map_err(|e| err(e.to_string()))
}

/// Rewrites the `__metadata__` object of a serialized safetensors file in key order, so that the same
/// tensors and metadata always give the same bytes (`safetensors::serialize` writes a `HashMap` in its
/// iteration order, which differs from run to run). The entries keep their lengths, so the header keeps its
/// size and padding; the result is checked by parsing it back.
fn sort_metadata(bytes: &mut [u8], metadata: &HashMap<String, String>) -> Result<(), String> {
    if metadata.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::with_capacity(metadata.len());
    for (k, v) in metadata {
        let k = serde_json::to_string(k).map_err(|e| e.to_string())?;
        let v = serde_json::to_string(v).map_err(|e| e.to_string())?;
        entries.push(format!("{k}:{v}"));
    }
    entries.sort();
    let sorted = entries.join(",");
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("serialized checkpoint shorter than its header length")?;
    let header = bytes
        .get_mut(8..8 + header_len)
        .ok_or("serialized checkpoint shorter than its header")?;
    const KEY: &[u8] = b"{\"__metadata__\":{";
    if !header.starts_with(KEY) || header.len() < KEY.len() + sorted.len() {
        return Err("serialized header does not start with its metadata".into());
    }
    let region = KEY.len()..KEY.len() + sorted.len();
    let before: HashMap<String, String> = serde_json::from_slice(&[b"{", &header[region.clone()], b"}"].concat())
        .map_err(|e| format!("serialized metadata is not where it was expected: {e}"))?;
    if &before != metadata {
        return Err("serialized metadata differs from the metadata given".into());
    }
    header[region].copy_from_slice(sorted.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_checkpoint_is_always_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::arange(0f32, 6., &Device::Cpu).unwrap();
        let tensors = HashMap::from([("b".to_string(), t.clone()), ("a".to_string(), t)]);
        let mut first = None;
        // A fresh HashMap each time: each has its own random iteration order.
        for i in 0..8 {
            let meta: HashMap<String, String> = (0..12)
                .map(|k| (format!("zoo.key{k}"), format!("value \"{k}\" é")))
                .collect();
            let path = dir.path().join(format!("{i}.safetensors"));
            save(&path, &tensors, &meta).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(Checkpoint::open(&path).unwrap().metadata(), &meta);
            match &first {
                None => first = Some(bytes),
                Some(f) => assert_eq!(f, &bytes, "run {i} wrote different bytes"),
            }
        }
    }

    #[test]
    fn roundtrip_keeps_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::arange(0f32, 6., &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
        let tensors = HashMap::from([("a.weight".to_string(), t.clone())]);
        let meta = HashMap::from([(META_ARCH.to_string(), "resnet50".to_string())]);
        save(&path, &tensors, &meta).unwrap();
        let ck = Checkpoint::open(&path).unwrap();
        assert_eq!(ck.metadata()[META_ARCH], "resnet50");
        assert_eq!(
            ck.tensors(),
            &[TensorInfo {
                name: "a.weight".into(),
                shape: vec![2, 3],
                dtype: DType::F32
            }]
        );
        let back = ck.load(&Device::Cpu).unwrap();
        assert_eq!(back["a.weight"].to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left behind"
        );
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::zeros((64, 64), DType::F32, &Device::Cpu).unwrap();
        save(&path, &HashMap::from([("w".to_string(), t)]), &HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpoint::open(&path).unwrap_err().to_string();
        assert!(err.contains("m.safetensors") && err.contains("truncated"), "{err}");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        assert!(Checkpoint::open(&path).is_err());
    }
}
