//! PyTorch state dicts (`.pth`, `pytorch_model.bin`: the zip format of `torch.save` since 1.6).
//!
//! The pickle inside is read by Candle's [`candle_core::pickle`], which interprets the opcodes into a
//! tree of objects and never imports or calls anything, so an untrusted file cannot run code. That is
//! also why only plain state dicts (`name -> tensor`) are accepted: a whole pickled `nn.Module`, or a
//! training checkpoint that nests the state dict, is an object only Python code can rebuild, and is
//! refused with a message saying how to re-save it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, PthTensors, Stack};
use candle_core::{Device, Tensor};

/// What to tell users holding something other than a plain state dict.
const RESAVE: &str = "re-save it with `torch.save(model.state_dict(), path)` or convert it to safetensors";

/// Why a PyTorch file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a zip-format PyTorch file (a pre-1.6 legacy `torch.save` file, or not PyTorch at all): {reason}; {RESAVE} with a recent PyTorch")]
    NotZip { path: PathBuf, reason: String },
    #[error("{path}: cannot read its pickle: {reason}")]
    Pickle { path: PathBuf, reason: String },
    #[error("{path} holds a pickled `{class}` object, not a state dict: rebuilding it would mean running Python code, which zoo never does; {RESAVE}")]
    NotStateDict { path: PathBuf, class: String },
    #[error("{path} is a checkpoint whose tensors are nested under {keys}, not a plain state dict; {RESAVE} (e.g. `torch.save(ckpt[\"state_dict\"], path)`)")]
    Nested { path: PathBuf, keys: String },
    #[error("{path} holds no tensors; {RESAVE}")]
    NoTensors { path: PathBuf },
    #[error("{path}: tensor `{name}` cannot be read: {reason}")]
    Tensor { path: PathBuf, name: String, reason: String },
}

/// Reads every tensor of a plain state dict, by its stored name, onto `device`. Non-tensor entries
/// (`_metadata`, plain numbers) are skipped.
pub fn read_state_dict(path: impl AsRef<Path>, device: &Device) -> Result<HashMap<String, Tensor>, PthError> {
    let path = path.as_ref();
    let names = state_dict_names(path)?;
    let reader = PthTensors::new(path, None).map_err(|e| not_zip(path, e))?;
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let terr = |reason: String| PthError::Tensor { path: path.to_path_buf(), name: name.clone(), reason };
        let t = reader
            .get(&name)
            .map_err(|e| terr(e.to_string()))?
            .ok_or_else(|| terr("not found by the reader".into()))?;
        out.insert(name.clone(), t.to_device(device).map_err(|e| terr(e.to_string()))?);
    }
    Ok(out)
}

/// The tensor names of a plain state dict; any other pickled object is an error saying what it is.
pub fn state_dict_names(path: &Path) -> Result<Vec<String>, PthError> {
    match classify(top_object(path)?) {
        Kind::StateDict(names) if names.is_empty() => Err(PthError::NoTensors { path: path.to_path_buf() }),
        Kind::StateDict(names) => Ok(names),
        Kind::Unsupported { name, reason } => Err(PthError::Tensor { path: path.to_path_buf(), name, reason }),
        Kind::Nested(keys) => Err(PthError::Nested { path: path.to_path_buf(), keys }),
        Kind::Object(class) => Err(PthError::NotStateDict { path: path.to_path_buf(), class }),
    }
}

/// What the top-level pickled object is.
enum Kind {
    StateDict(Vec<String>),
    /// A tensor whose storage type Candle cannot read.
    Unsupported {
        name: String,
        reason: String,
    },
    /// Tensors only inside dict values, under these keys.
    Nested(String),
    /// Something else, described by its class.
    Object(String),
}

fn classify(obj: Object) -> Kind {
    let entries = match obj {
        Object::Dict(entries) => entries,
        other => return Kind::Object(describe(&other)),
    };
    let mut names = Vec::new();
    let mut nested = Vec::new();
    for (key, value) in entries {
        let key_text = match &key {
            Object::Unicode(k) => format!("`{k}`"),
            other => format!("{other:?}"),
        };
        let is_dict = matches!(value, Object::Dict(_));
        match value.into_tensor_info(key, Path::new("")) {
            Ok(Some(info)) => names.push(info.name),
            Ok(None) if is_dict => nested.push(key_text),
            Ok(None) => {}
            Err(e) => return Kind::Unsupported { name: key_text.trim_matches('`').to_string(), reason: e.to_string() },
        }
    }
    match (names.is_empty(), nested.is_empty()) {
        (true, false) => Kind::Nested(nested.join(", ")),
        _ => Kind::StateDict(names),
    }
}

/// `module.Class` of a reduced/built object (how pickle stores class instances), else its variant.
fn describe(obj: &Object) -> String {
    match obj {
        Object::Class { module_name, class_name } => format!("{module_name}.{class_name}"),
        Object::Build { callable, .. } | Object::Reduce { callable, .. } => describe(callable),
        Object::Tuple(_) => "tuple".into(),
        Object::List(_) => "list".into(),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

/// The unpickled (not executed) top-level object of the file's `data.pkl`.
fn top_object(path: &Path) -> Result<Object, PthError> {
    let bytes = std::fs::read(path).map_err(|source| PthError::Io { path: path.to_path_buf(), source })?;
    let pickle = data_pkl(&bytes).map_err(|reason| PthError::NotZip { path: path.to_path_buf(), reason })?;
    let mut stack = Stack::empty();
    let perr = |e: candle_core::Error| PthError::Pickle { path: path.to_path_buf(), reason: e.to_string() };
    stack.read_loop(&mut std::io::BufReader::new(pickle)).map_err(perr)?;
    stack.finalize().map_err(perr)
}

/// The bytes of the `*/data.pkl` entry, found through the zip's central directory.
///
/// `torch.save` stores entries uncompressed, so locating the entry is all there is to it (the weights
/// crate has no zip dependency of its own; Candle reads the tensor data). Anything else is reported
/// rather than guessed.
fn data_pkl(bytes: &[u8]) -> Result<&[u8], String> {
    let mut at = central_directory(bytes)?;
    while bytes.get(at..at + 4) == Some(b"PK\x01\x02") {
        let (method, size) = (le(bytes, at + 10, 2)?, le(bytes, at + 20, 4)?);
        let (name_len, extra_len, comment_len) =
            (le(bytes, at + 28, 2)?, le(bytes, at + 30, 2)?, le(bytes, at + 32, 2)?);
        let local = le(bytes, at + 42, 4)?;
        let name = bytes.get(at + 46..at + 46 + name_len).ok_or("truncated zip directory")?;
        if name.ends_with(b"data.pkl") {
            if method != 0 || size == 0xffff_ffff || local == 0xffff_ffff {
                return Err("`data.pkl` is compressed or stored with 64-bit sizes (torch.save does neither)".into());
            }
            // The local header repeats the name and has its own extra field before the data.
            let start = local + 30 + le(bytes, local + 26, 2)? + le(bytes, local + 28, 2)?;
            return bytes.get(start..start + size).ok_or_else(|| "truncated `data.pkl`".into());
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Err("no `data.pkl` entry".into())
}

/// Offset of the central directory, from the end-of-central-directory record (or its zip64 version,
/// which files over 4 GiB need).
fn central_directory(bytes: &[u8]) -> Result<usize, String> {
    let search_from = bytes.len().saturating_sub(22 + 0xffff);
    let eocd = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..i + 4] == *b"PK\x05\x06")
        .ok_or("no zip end-of-directory record")?;
    let offset = le(bytes, eocd + 16, 4)?;
    if offset != 0xffff_ffff {
        return Ok(offset);
    }
    let locator = eocd.checked_sub(20).filter(|&l| bytes[l..l + 4] == *b"PK\x06\x07").ok_or("bad zip64 locator")?;
    let zip64_eocd = le(bytes, locator + 8, 8)?;
    le(bytes, zip64_eocd + 48, 8)
}

/// The little-endian unsigned integer of `n` bytes at `at`.
fn le(bytes: &[u8], at: usize, n: usize) -> Result<usize, String> {
    let b = bytes.get(at..at + n).ok_or("truncated zip file")?;
    Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64) as usize)
}

fn not_zip(path: &Path, e: candle_core::Error) -> PthError {
    PthError::NotZip { path: path.to_path_buf(), reason: e.to_string() }
}
