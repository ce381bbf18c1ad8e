//! Keras TF.js layers models (model.json + weight shards).
//!
//! A TF.js "layers-model" is a `model.json` holding the Keras topology (`modelTopology`: every layer's
//! name, class and config) and a `weightsManifest`: groups of weights, each group stored as the plain
//! little-endian concatenation of its weights, split across the group's shard files in order (a weight
//! may straddle two shards). [`TfjsModel::open`] parses and checks the JSON, [`TfjsModel::load`] reads the
//! shards into named tensors in Keras layouts and [`TfjsModel::load_torch_layout`] also converts the
//! kernels to PyTorch's layouts ([`conv2d_kernel_to_oihw`], [`dense_kernel_to_out_in`]). Which tensor
//! is which in a given model is for model crates to know.
//!
//! A downloaded model.json is untrusted: every shard path it names must be relative, free of `..`, and
//! resolve (symlinks included) inside the model.json's directory ([`TfjsError::UnsafePath`]); shards
//! must be regular files whose sizes match the manifest before anything is read; sizes computed from
//! shapes are checked for overflow; model.json itself is read only if it is a regular file of at most
//! [`MAX_MODEL_JSON_BYTES`].

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

/// The largest model.json read (the ResNet-50 one is 90 KB; the weights are in the shards).
pub const MAX_MODEL_JSON_BYTES: u64 = 64 << 20;

/// Why a TF.js model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TfjsError {
    #[error(
        "the weightsManifest of {model_json} names the shard `{path}`, which {reason}: a model's files must lie \
         in its own directory; the file may be malicious"
    )]
    UnsafePath {
        path: String,
        model_json: PathBuf,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid TF.js layers model.json: {reason}")]
    BadJson { path: PathBuf, reason: String },
    #[error("weight shard {path} is missing (listed in the weightsManifest of {model_json})")]
    MissingShard { path: PathBuf, model_json: PathBuf },
    #[error(
        "weight `{weight}` needs bytes {start}..{end} of the shards of group {group} but they hold only {available} \
         bytes: a shard is truncated (last shard {last_shard}); download the model again"
    )]
    Truncated {
        weight: String,
        group: usize,
        start: usize,
        end: usize,
        available: usize,
        last_shard: PathBuf,
    },
    #[error(
        "the shards of group {group} hold {available} bytes but its weights use only {used}: the shards do not \
         match {model_json}"
    )]
    TrailingBytes {
        group: usize,
        used: usize,
        available: usize,
        model_json: PathBuf,
    },
    #[error("weight `{weight}` of {model_json}: {what} is not supported (only unquantized float32 weights are)")]
    Unsupported {
        weight: String,
        model_json: PathBuf,
        what: String,
    },
    #[error("weight `{weight}`: {reason}")]
    Tensor { weight: String, reason: String },
}

/// One Keras layer of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    /// Keras class (`Conv2D`, `BatchNormalization`, `Dense`, ...).
    pub class_name: String,
    /// The layer's Keras config (`strides`, `use_bias`, `epsilon`, ...), as stored.
    pub config: Value,
}

/// One entry of the weights manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSpec {
    /// As stored, usually `layer/variable` (`conv1/kernel`, `bn_conv1/moving_mean`).
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    /// Index of the manifest group whose shards hold it.
    pub group: usize,
}

impl WeightSpec {
    /// The layer this weight belongs to: the path component before the variable name.
    pub fn layer_name(&self) -> &str {
        let mut parts = self.name.rsplit('/');
        let _variable = parts.next();
        parts.next().unwrap_or(&self.name)
    }

    /// The variable part of the name (`kernel`, `bias`, `gamma`, `moving_variance`).
    pub fn variable(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// A parsed `model.json`; the shards are read by [`TfjsModel::load`].
#[derive(Debug, Clone)]
pub struct TfjsModel {
    model_json: PathBuf,
    /// `format` (`layers-model`) and `generatedBy` (`keras v2.2.4-tf`), when given.
    pub format: Option<String>,
    pub generated_by: Option<String>,
    /// Every layer of the topology, in the stored order.
    pub layers: Vec<LayerInfo>,
    /// Every weight, in manifest order.
    pub weights: Vec<WeightSpec>,
    /// Shard paths of each group, resolved against the model.json's directory.
    shards: Vec<Vec<PathBuf>>,
}

#[derive(Deserialize)]
struct RawModel {
    format: Option<String>,
    #[serde(rename = "generatedBy")]
    generated_by: Option<String>,
    #[serde(rename = "modelTopology")]
    model_topology: Option<Value>,
    #[serde(rename = "weightsManifest")]
    weights_manifest: Vec<RawGroup>,
}

#[derive(Deserialize)]
struct RawGroup {
    paths: Vec<String>,
    weights: Vec<RawWeight>,
}

#[derive(Deserialize)]
struct RawWeight {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<Value>,
}

impl TfjsModel {
    /// Parses `model.json`; checks that every weight is an unquantized float32 (the only kind read).
    pub fn open(model_json: impl AsRef<Path>) -> Result<Self, TfjsError> {
        let path = model_json.as_ref().to_path_buf();
        let io = |source| TfjsError::Io {
            path: path.clone(),
            source,
        };
        let (mut file, meta) = crate::fsutil::open_regular(&path).map_err(io)?;
        let bytes = crate::fsutil::read_capped(&mut file, meta.len(), MAX_MODEL_JSON_BYTES).map_err(io)?;
        let bad = |reason: String| TfjsError::BadJson {
            path: path.clone(),
            reason,
        };
        let raw: RawModel = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let layers = match &raw.model_topology {
            Some(topology) => parse_layers(topology).map_err(bad)?,
            None => Vec::new(),
        };
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut weights = Vec::new();
        let mut shards = Vec::new();
        for (group, g) in raw.weights_manifest.into_iter().enumerate() {
            let paths = g
                .paths
                .iter()
                .map(|p| confined(&dir, p, &path))
                .collect::<Result<Vec<_>, _>>()?;
            shards.push(paths);
            for w in g.weights {
                check_supported(&w, &path)?;
                if byte_len(&w.shape).is_none() {
                    return Err(bad(format!(
                        "weight `{}` has a shape too large to exist: {:?}",
                        w.name, w.shape
                    )));
                }
                weights.push(WeightSpec {
                    name: w.name,
                    shape: w.shape,
                    dtype: w.dtype,
                    group,
                });
            }
        }
        Ok(Self {
            model_json: path,
            format: raw.format,
            generated_by: raw.generated_by,
            layers,
            weights,
            shards,
        })
    }

    pub fn model_json(&self) -> &Path {
        &self.model_json
    }

    /// The topology layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerInfo> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The topology layer a weight belongs to.
    pub fn layer_of(&self, weight: &WeightSpec) -> Option<&LayerInfo> {
        self.layer(weight.layer_name())
    }

    /// Reads every weight, in Keras layouts (conv kernels HWIO, dense kernels (in, out)), by stored name.
    ///
    /// Every shard is checked first (inside the model's directory, a regular file, and the sizes of each
    /// group's shards adding up to exactly what its weights need), so a bad manifest is refused before
    /// anything is allocated or read.
    pub fn load(&self, device: &Device) -> Result<HashMap<String, Tensor>, TfjsError> {
        // First pass: sizes only.
        let mut groups = Vec::with_capacity(self.shards.len());
        for (group, paths) in self.shards.iter().enumerate() {
            let mut files = Vec::with_capacity(paths.len());
            let mut available = 0usize;
            for p in paths {
                let (file, len) = self.open_shard(p)?;
                available = available.saturating_add(len);
                files.push((file, len, p));
            }
            let mut offset = 0usize;
            for w in self.weights.iter().filter(|w| w.group == group) {
                let n = byte_len(&w.shape).unwrap_or(usize::MAX);
                let end = offset.saturating_add(n);
                if end > available {
                    return Err(TfjsError::Truncated {
                        weight: w.name.clone(),
                        group,
                        start: offset,
                        end,
                        available,
                        last_shard: paths.last().cloned().unwrap_or_default(),
                    });
                }
                offset = end;
            }
            if offset != available {
                let model_json = self.model_json.clone();
                return Err(TfjsError::TrailingBytes {
                    group,
                    used: offset,
                    available,
                    model_json,
                });
            }
            groups.push((files, available));
        }
        // Second pass: read, each group's shards concatenated (a weight may straddle two shards).
        let mut out = HashMap::with_capacity(self.weights.len());
        for (group, (files, available)) in groups.into_iter().enumerate() {
            let mut bytes = Vec::with_capacity(available);
            for (mut file, len, p) in files {
                let b =
                    crate::fsutil::read_capped(&mut file, len as u64, len as u64).map_err(|source| TfjsError::Io {
                        path: p.clone(),
                        source,
                    })?;
                bytes.extend_from_slice(&b);
            }
            if bytes.len() != available {
                let model_json = self.model_json.clone();
                return Err(TfjsError::TrailingBytes {
                    group,
                    used: bytes.len(),
                    available,
                    model_json,
                });
            }
            let mut offset = 0usize;
            for w in self.weights.iter().filter(|w| w.group == group) {
                let n = byte_len(&w.shape).unwrap_or(usize::MAX);
                let data = bytes.get(offset..offset.saturating_add(n)).unwrap_or_default();
                out.insert(
                    w.name.clone(),
                    f32_tensor(data, &w.shape, device).map_err(|e| tensor_err(w, e))?,
                );
                offset += data.len();
            }
        }
        Ok(out)
    }

    /// Opens a shard after checking again, on the file system as it is now, that it lies inside the
    /// model's directory (symlinks resolved) and is a regular file. Returns it and its size.
    fn open_shard(&self, path: &Path) -> Result<(std::fs::File, usize), TfjsError> {
        let dir = self.model_json.parent().unwrap_or(Path::new(""));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let missing = || TfjsError::MissingShard {
            path: path.to_path_buf(),
            model_json: self.model_json.clone(),
        };
        let resolved = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            Err(source) => {
                return Err(TfjsError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let root = std::fs::canonicalize(dir).map_err(|source| TfjsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !resolved.starts_with(&root) {
            return Err(TfjsError::UnsafePath {
                path: path.strip_prefix(dir).unwrap_or(path).display().to_string(),
                model_json: self.model_json.clone(),
                reason: format!(
                    "resolves to {} (through a symlink), outside {}",
                    resolved.display(),
                    root.display()
                ),
            });
        }
        let (file, meta) = crate::fsutil::open_regular(path).map_err(|source| TfjsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        Ok((file, len))
    }

    /// Like [`TfjsModel::load`], with kernels turned into PyTorch layouts according to their layer's
    /// class: `Conv2D` kernels to OIHW, `Dense` kernels to (out, in). Names are unchanged.
    pub fn load_torch_layout(&self, device: &Device) -> Result<HashMap<String, Tensor>, TfjsError> {
        let mut tensors = self.load(device)?;
        for w in &self.weights {
            if w.variable() != "kernel" {
                continue;
            }
            let class = self.layer_of(w).map(|l| l.class_name.as_str());
            let convert: fn(&Tensor) -> candle_core::Result<Tensor> = match class {
                Some("Conv2D") => conv2d_kernel_to_oihw,
                Some("Dense") => dense_kernel_to_out_in,
                _ => continue,
            };
            if let Some(t) = tensors.get_mut(&w.name) {
                *t = convert(t).map_err(|e| tensor_err(w, e))?;
            }
        }
        Ok(tensors)
    }
}

/// `dir/name` for a shard path of the manifest, if it is a plain relative path without `..`.
fn confined(dir: &Path, name: &str, model_json: &Path) -> Result<PathBuf, TfjsError> {
    let unsafe_path = |reason: &str| TfjsError::UnsafePath {
        path: name.to_string(),
        model_json: model_json.to_path_buf(),
        reason: reason.to_string(),
    };
    let rel = Path::new(name);
    if name.is_empty() {
        return Err(unsafe_path("is empty"));
    }
    if name.contains('\0') {
        return Err(unsafe_path("contains a NUL byte"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("goes up with `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_path("is absolute")),
        }
    }
    Ok(dir.join(rel))
}

/// Bytes of a float32 weight of this shape, `None` if that overflows.
fn byte_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(4usize, |acc, &d| acc.checked_mul(d))
}

/// Keras Conv2D kernel (kh, kw, in, out) to PyTorch's (out, in, kh, kw).
pub fn conv2d_kernel_to_oihw(kernel: &Tensor) -> candle_core::Result<Tensor> {
    kernel.permute((3, 2, 0, 1))?.contiguous()
}

/// Keras Dense kernel (in, out) to PyTorch Linear's (out, in).
pub fn dense_kernel_to_out_in(kernel: &Tensor) -> candle_core::Result<Tensor> {
    kernel.t()?.contiguous()
}

/// Only plain float32 is read: quantized weights would need dequantizing with per-weight parameters
/// this crate has no test material for, so they are refused rather than guessed at.
fn check_supported(w: &RawWeight, model_json: &Path) -> Result<(), TfjsError> {
    let what = match (&w.quantization, w.dtype.as_str()) {
        (Some(q), _) => format!("quantization {q}"),
        (None, "float32") => return Ok(()),
        (None, other) => format!("dtype `{other}`"),
    };
    Err(TfjsError::Unsupported {
        weight: w.name.clone(),
        model_json: model_json.to_path_buf(),
        what,
    })
}

/// Layers from either the Keras-saved form (`{"model_config": {"class_name", "config"}}`) or a bare
/// `{"class_name", "config"}`; a Sequential's `config` may be the layer list itself.
fn parse_layers(topology: &Value) -> Result<Vec<LayerInfo>, String> {
    let model = topology.get("model_config").unwrap_or(topology);
    let config = model.get("config").ok_or("modelTopology has no `config`")?;
    let layers = match config {
        Value::Array(list) => list,
        _ => config
            .get("layers")
            .and_then(Value::as_array)
            .ok_or("modelTopology config has no `layers` list")?,
    };
    layers.iter().map(parse_layer).collect()
}

fn parse_layer(layer: &Value) -> Result<LayerInfo, String> {
    let class_name = layer
        .get("class_name")
        .and_then(Value::as_str)
        .ok_or("a layer has no `class_name`")?;
    let config = layer.get("config").cloned().unwrap_or(Value::Null);
    // Functional models name the layer at the top level, Sequential ones only inside the config.
    let name = layer
        .get("name")
        .or_else(|| config.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a `{class_name}` layer has no name"))?;
    Ok(LayerInfo {
        name: name.to_string(),
        class_name: class_name.to_string(),
        config,
    })
}

fn f32_tensor(data: &[u8], shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_vec(values, shape, device)
}

fn tensor_err(w: &WeightSpec, e: candle_core::Error) -> TfjsError {
    TfjsError::Tensor {
        weight: w.name.clone(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Conv2D (2x2 kernel, 1 -> 2 channels, bias) and a Dense (2 -> 3), weights split over two shards
    /// with the conv kernel straddling them. Values are 0, 1, 2, ... in storage order.
    fn write_model(dir: &Path, manifest_extra: Value) -> PathBuf {
        let model = json!({
            "format": "layers-model",
            "generatedBy": "keras v2.2.4-tf",
            "modelTopology": {"model_config": {"class_name": "Model", "config": {"layers": [
                {"name": "conv", "class_name": "Conv2D", "config": {"name": "conv", "use_bias": true}},
                {"name": "fc", "class_name": "Dense", "config": {"name": "fc"}}
            ]}}},
            "weightsManifest": [{
                "paths": ["group1-shard1of2.bin", "group1-shard2of2.bin"],
                "weights": [
                    {"name": "conv/kernel", "shape": [2, 2, 1, 2], "dtype": "float32"},
                    {"name": "conv/bias", "shape": [2], "dtype": "float32"},
                    {"name": "fc/kernel", "shape": [2, 3], "dtype": "float32"},
                    manifest_extra
                ]
            }]
        });
        let mut model = model;
        let weights = model["weightsManifest"][0]["weights"].as_array_mut().unwrap();
        weights.retain(|w| !w.is_null());
        let total: usize = weights
            .iter()
            .map(|w| {
                w["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .product::<usize>()
            })
            .sum();
        let bytes: Vec<u8> = (0..total).flat_map(|i| (i as f32).to_le_bytes()).collect();
        std::fs::write(dir.join("group1-shard1of2.bin"), &bytes[..20]).unwrap();
        std::fs::write(dir.join("group1-shard2of2.bin"), &bytes[20..]).unwrap();
        let path = dir.join("model.json");
        std::fs::write(&path, serde_json::to_string(&model).unwrap()).unwrap();
        path
    }

    #[test]
    fn reads_weights_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        let m = TfjsModel::open(write_model(dir.path(), Value::Null)).unwrap();
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layer("conv").unwrap().class_name, "Conv2D");
        assert_eq!(m.weights[1].layer_name(), "conv");
        assert_eq!(m.weights[1].variable(), "bias");
        let t = m.load(&Device::Cpu).unwrap();
        assert_eq!(t["conv/kernel"].dims(), &[2, 2, 1, 2]);
        assert_eq!(t["conv/bias"].to_vec1::<f32>().unwrap(), [8., 9.]);
        assert_eq!(
            t["fc/kernel"].to_vec2::<f32>().unwrap(),
            [[10., 11., 12.], [13., 14., 15.]]
        );
    }

    #[test]
    fn torch_layout_transposes_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let m = TfjsModel::open(write_model(dir.path(), Value::Null)).unwrap();
        let t = m.load_torch_layout(&Device::Cpu).unwrap();
        // HWIO value at (h, w, 0, o) is 2 * (2h + w) + o; OIHW puts it at (o, 0, h, w).
        let k = &t["conv/kernel"];
        assert_eq!(k.dims(), &[2, 1, 2, 2]);
        assert_eq!(
            k.get(1).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap(),
            [[1., 3.], [5., 7.]]
        );
        assert_eq!(
            t["fc/kernel"].to_vec2::<f32>().unwrap(),
            [[10., 13.], [11., 14.], [12., 15.]]
        );
        assert_eq!(t["conv/bias"].to_vec1::<f32>().unwrap(), [8., 9.]);
    }

    #[test]
    fn missing_shard_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let m = TfjsModel::open(write_model(dir.path(), Value::Null)).unwrap();
        std::fs::remove_file(dir.path().join("group1-shard2of2.bin")).unwrap();
        let err = m.load(&Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("group1-shard2of2.bin") && err.contains("missing"), "{err}");
    }

    #[test]
    fn truncated_shard_names_the_weight() {
        let dir = tempfile::tempdir().unwrap();
        let m = TfjsModel::open(write_model(dir.path(), Value::Null)).unwrap();
        let last = dir.path().join("group1-shard2of2.bin");
        let bytes = std::fs::read(&last).unwrap();
        std::fs::write(&last, &bytes[..bytes.len() - 2]).unwrap();
        let err = m.load(&Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("fc/kernel") && err.contains("truncated") && err.contains("shard2of2"),
            "{err}"
        );
        std::fs::write(&last, [bytes.as_slice(), &[0u8; 4]].concat()).unwrap();
        let err = m.load(&Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
    }

    #[test]
    fn quantized_and_non_float_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let q = json!({"name": "fc/bias", "shape": [3], "dtype": "float32",
                       "quantization": {"dtype": "uint8", "scale": 0.1, "min": 0.0}});
        let err = TfjsModel::open(write_model(dir.path(), q)).unwrap_err().to_string();
        assert!(err.contains("fc/bias") && err.contains("quantization"), "{err}");
        let i = json!({"name": "step", "shape": [], "dtype": "int32"});
        let err = TfjsModel::open(write_model(dir.path(), i)).unwrap_err().to_string();
        assert!(err.contains("`step`") && err.contains("int32"), "{err}");
    }

    /// Writes a model.json whose single weight (2 floats) lives in the shard at `shard_path`.
    fn write_manifest(dir: &Path, shard_path: &str) -> PathBuf {
        let model = json!({
            "modelTopology": {"config": {"layers": []}},
            "weightsManifest": [{"paths": [shard_path],
                                 "weights": [{"name": "fc/bias", "shape": [2], "dtype": "float32"}]}]
        });
        let path = dir.join("model.json");
        std::fs::write(&path, serde_json::to_string(&model).unwrap()).unwrap();
        path
    }

    #[test]
    fn shard_paths_outside_the_model_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let model_dir = root.path().join("model");
        std::fs::create_dir(&model_dir).unwrap();
        // A file outside the model's directory that the manifest tries to reach, of the right size.
        let secret = root.path().join("secret.bin");
        std::fs::write(&secret, [0u8; 8]).unwrap();
        let abs = secret.to_str().unwrap().to_string();
        for (shard, reason) in [
            ("../secret.bin", "`..`"),
            ("sub/../../secret.bin", "`..`"),
            (abs.as_str(), "absolute"),
            ("", "empty"),
        ] {
            let err = TfjsModel::open(write_manifest(&model_dir, shard)).unwrap_err();
            assert!(matches!(err, TfjsError::UnsafePath { .. }), "{shard}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{shard}`")) && msg.contains(reason), "{msg}");
        }
        // A symlink inside the directory that points outside: accepted by name, refused when read.
        std::os::unix::fs::symlink(&secret, model_dir.join("link.bin")).unwrap();
        let m = TfjsModel::open(write_manifest(&model_dir, "link.bin")).unwrap();
        let err = m.load(&Device::Cpu).unwrap_err();
        assert!(matches!(err, TfjsError::UnsafePath { .. }), "{err}");
        assert!(
            err.to_string().contains("link.bin") && err.to_string().contains("outside"),
            "{err}"
        );
        // A symlink to a directory outside, then a file inside it.
        std::os::unix::fs::symlink(root.path(), model_dir.join("up")).unwrap();
        let m = TfjsModel::open(write_manifest(&model_dir, "up/secret.bin")).unwrap();
        assert!(matches!(
            m.load(&Device::Cpu).unwrap_err(),
            TfjsError::UnsafePath { .. }
        ));
        // A symlink that stays inside is fine, and so is `./`.
        std::fs::create_dir(model_dir.join("shards")).unwrap();
        std::fs::write(model_dir.join("shards/real.bin"), 1f32.to_le_bytes().repeat(2)).unwrap();
        std::os::unix::fs::symlink("shards/real.bin", model_dir.join("inside.bin")).unwrap();
        for ok in ["inside.bin", "./shards/real.bin"] {
            let t = TfjsModel::open(write_manifest(&model_dir, ok))
                .unwrap()
                .load(&Device::Cpu)
                .unwrap();
            assert_eq!(t["fc/bias"].to_vec1::<f32>().unwrap(), [1., 1.], "{ok}");
        }
    }

    #[test]
    fn shards_that_are_not_regular_files_or_huge_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.bin")).unwrap();
        let m = TfjsModel::open(write_manifest(dir.path(), "zero.bin")).unwrap();
        // /dev/zero is outside the directory; a FIFO inside it is not a regular file.
        assert!(matches!(
            m.load(&Device::Cpu).unwrap_err(),
            TfjsError::UnsafePath { .. }
        ));
        let fifo = dir.path().join("pipe.bin");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let m = TfjsModel::open(write_manifest(dir.path(), "pipe.bin")).unwrap();
        let err = m.load(&Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("pipe.bin") && err.contains("FIFO"), "{err}");
        // A shape whose byte size overflows is refused when the JSON is read.
        let path = dir.path().join("model.json");
        std::fs::write(
            &path,
            r#"{"weightsManifest": [{"paths": ["a.bin"], "weights": [
            {"name": "w", "shape": [4294967296, 4294967296], "dtype": "float32"}]}]}"#,
        )
        .unwrap();
        let err = TfjsModel::open(&path).unwrap_err().to_string();
        assert!(err.contains("too large") && err.contains("`w`"), "{err}");
        // A model.json that is a directory or a device.
        assert!(TfjsModel::open(dir.path()).is_err());
        assert!(TfjsModel::open("/dev/zero")
            .unwrap_err()
            .to_string()
            .contains("character device"));
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        std::fs::write(&path, "{\"modelTopology\": ").unwrap();
        let err = TfjsModel::open(&path).unwrap_err().to_string();
        assert!(err.contains("model.json") && err.contains("not a valid"), "{err}");
        std::fs::write(&path, r#"{"weightsManifest": [], "modelTopology": {"config": {}}}"#).unwrap();
        let err = TfjsModel::open(&path).unwrap_err().to_string();
        assert!(err.contains("layers"), "{err}");
    }
}
