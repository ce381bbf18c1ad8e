//! The self-describing metadata of a checkpoint: read and validated here, and written by one function.
//!
//! A checkpoint written by zoo carries its architecture name (`zoo.arch`) and config (`zoo.config`), the eval
//! preprocessing its weights expect (`zoo.preprocess`) and its class names (`zoo.labels`, or the name of a
//! label set that ships with zoo, `zoo.label_set`). A downloaded file may carry anything there, so every entry
//! is checked against [`crate::config::limits`] and [`PreprocessConfig::validate`] before it is used.

use std::collections::HashMap;
use std::path::Path;

use weights::checkpoint::{META_ARCH, META_CONFIG, META_LABELS, META_LABEL_SET, META_PREPROCESS};
use weights::PreprocessConfig;

use crate::error::{Error, Result};
use crate::ResNetConfig;

/// Longest architecture name and longest class name accepted from a file.
const MAX_NAME: usize = 4096;

/// What a checkpoint's metadata says, each entry validated on its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredMetadata {
    /// `zoo.arch`: a name of [`crate::variants`], or a free name for a custom config.
    pub arch: Option<String>,
    /// `zoo.config`.
    pub config: Option<ResNetConfig>,
    /// `zoo.preprocess`.
    pub preprocess: Option<PreprocessConfig>,
    /// `zoo.labels`.
    pub labels: Option<Vec<String>>,
    /// `zoo.label_set`: a set that ships with zoo (checked to exist).
    pub label_set: Option<String>,
}

impl StoredMetadata {
    /// Reads and validates the zoo entries of `metadata` (other keys are ignored); `path` names the file in
    /// errors.
    pub fn read(path: &Path, metadata: &HashMap<String, String>) -> Result<Self> {
        let bad = |key: &str, reason: String| Error::BadMetadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let json = |key: &str| -> Option<&String> { metadata.get(key) };
        let arch = match json(META_ARCH) {
            Some(a) if a.is_empty() || a.len() > MAX_NAME => return Err(bad(META_ARCH, "empty or too long".into())),
            Some(a) => Some(a.clone()),
            None => None,
        };
        let config = match json(META_CONFIG) {
            Some(text) => {
                let cfg: ResNetConfig = serde_json::from_str(text).map_err(|e| bad(META_CONFIG, e.to_string()))?;
                cfg.validate().map_err(|e| bad(META_CONFIG, e))?;
                Some(cfg)
            }
            None => None,
        };
        let preprocess = match json(META_PREPROCESS) {
            Some(text) => {
                let p: PreprocessConfig =
                    serde_json::from_str(text).map_err(|e| bad(META_PREPROCESS, e.to_string()))?;
                p.validate().map_err(|e| bad(META_PREPROCESS, e))?;
                Some(p)
            }
            None => None,
        };
        let labels = match json(META_LABELS) {
            Some(text) => {
                let l: Vec<String> = serde_json::from_str(text).map_err(|e| bad(META_LABELS, e.to_string()))?;
                if l.len() > crate::config::limits::MAX_CLASSES || l.iter().any(|n| n.len() > MAX_NAME) {
                    return Err(bad(
                        META_LABELS,
                        format!("{} names, or a name over {MAX_NAME} bytes", l.len()),
                    ));
                }
                Some(l)
            }
            None => None,
        };
        let label_set = match json(META_LABEL_SET) {
            Some(set) if weights::labels::label_set(set).is_none() => {
                return Err(bad(
                    META_LABEL_SET,
                    format!(
                        "`{set}` is not a label set zoo knows ({})",
                        weights::labels::SETS.join(", ")
                    ),
                ))
            }
            Some(set) => Some(set.clone()),
            None => None,
        };
        Ok(Self {
            arch,
            config,
            preprocess,
            labels,
            label_set,
        })
    }

    /// The class names for a head of `num_classes` outputs: the stored list, else the named set, else the
    /// standard set for that size (ImageNet-1k for 1000, CIFAR-10 for 10), else none. A stored list or set
    /// of another length is an error: the names would be attached to the wrong outputs.
    pub fn labels_for(&self, path: &Path, num_classes: usize) -> Result<Option<Vec<String>>> {
        let bad = |key: &str, n: usize| Error::BadMetadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: format!("{n} class names for a classifier of {num_classes} outputs"),
        };
        if let Some(l) = &self.labels {
            return match l.len() == num_classes {
                true => Ok(Some(l.clone())),
                false => Err(bad(META_LABELS, l.len())),
            };
        }
        if let Some(set) = &self.label_set {
            let l = weights::labels::label_set(set).unwrap_or_default();
            return match l.len() == num_classes {
                true => Ok(Some(l)),
                false => Err(bad(META_LABEL_SET, l.len())),
            };
        }
        Ok(weights::labels::standard_set(num_classes).and_then(weights::labels::label_set))
    }
}

/// The metadata that makes a written checkpoint self-describing: architecture name and config, the
/// preprocessing its weights expect, and the class names (as the name of a shipped label set when they are
/// one, else as a list). Every writer of checkpoints (importers, fine-tuning) uses this.
pub fn write_metadata(
    arch: &str,
    config: &ResNetConfig,
    preprocess: &PreprocessConfig,
    labels: Option<&[String]>,
) -> HashMap<String, String> {
    // These types serialize to JSON without fail (plain numbers, strings and enums); an empty string would
    // be refused when read back.
    let json = |v: serde_json::Result<String>| v.unwrap_or_default();
    let mut meta = HashMap::from([
        (META_ARCH.to_string(), arch.to_string()),
        (META_CONFIG.to_string(), json(serde_json::to_string(config))),
        (META_PREPROCESS.to_string(), json(serde_json::to_string(preprocess))),
    ]);
    let standard = weights::labels::standard_set(config.num_classes);
    let standard_names = standard.and_then(weights::labels::label_set);
    match labels {
        Some(l) if standard_names.as_deref() != Some(l) => {
            meta.insert(META_LABELS.to_string(), json(serde_json::to_string(l)));
        }
        _ => {
            if let Some(set) = standard {
                meta.insert(META_LABEL_SET.to_string(), set.to_string());
            }
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn written_metadata_reads_back() {
        let cfg = crate::variants::resnet20();
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let cfg2 = cfg.clone().with_num_classes(2);
        let m = write_metadata("resnet20", &cfg2, &PreprocessConfig::cifar(), Some(&labels));
        let back = StoredMetadata::read(Path::new("f"), &m).unwrap();
        assert_eq!(back.config.as_ref(), Some(&cfg2));
        assert_eq!(back.labels_for(Path::new("f"), 2).unwrap(), Some(labels));
        let m = write_metadata("resnet20", &cfg, &PreprocessConfig::cifar(), None);
        assert_eq!(m[META_LABEL_SET], "cifar-10");
    }

    #[test]
    fn hostile_metadata_is_refused_before_use() {
        let p = Path::new("evil.safetensors");
        let mut cfg = serde_json::to_value(crate::variants::resnet20()).unwrap();
        cfg["depths"] = serde_json::json!([1_000_000_000u64, 1, 1]);
        let huge_depth = cfg.to_string();
        let mut cfg = serde_json::to_value(crate::variants::resnet20()).unwrap();
        cfg["num_classes"] = serde_json::json!(1_000_000_000_000u64);
        let huge_head = cfg.to_string();
        let cases = [
            (META_CONFIG, huge_depth.as_str()),
            (META_CONFIG, huge_head.as_str()),
            (META_CONFIG, "{not json"),
            (
                META_PREPROCESS,
                r#"{"input_size":[3,100000,100000],"crop_pct":0.875,"interpolation":"bilinear","mean":[0,0,0],"std":[1,1,1]}"#,
            ),
            (
                META_PREPROCESS,
                r#"{"input_size":[3,224,224],"crop_pct":0.0,"interpolation":"bilinear","mean":[0,0,0],"std":[1,1,1]}"#,
            ),
            (
                META_PREPROCESS,
                r#"{"input_size":[3,224,224],"crop_pct":0.875,"interpolation":"bilinear","mean":[0,0,0],"std":[1,0,1]}"#,
            ),
            (META_LABEL_SET, "imagenet-22k-made-up"),
            (META_LABELS, "[1, 2]"),
        ];
        for (key, value) in cases {
            let err = StoredMetadata::read(p, &meta(&[(key, value)])).unwrap_err().to_string();
            assert!(err.contains("evil.safetensors") && err.contains(key), "{key}: {err}");
        }
        let m = StoredMetadata::read(p, &meta(&[(META_LABELS, r#"["a","b","c"]"#)])).unwrap();
        let err = m.labels_for(p, 10).unwrap_err().to_string();
        assert!(err.contains("3 class names for a classifier of 10 outputs"), "{err}");
    }
}
