//! PyTorch state dicts (`.pth`, `pytorch_model.bin`: the zip format of `torch.save` since 1.6).
//!
//! The pickle inside is read by Candle's [`candle_core::pickle`], which interprets the opcodes into a
//! tree of objects and never imports or calls anything, so an untrusted file cannot run code. That is
//! also why only plain state dicts (`name -> tensor`) are accepted: a whole pickled `nn.Module`, or a
//! training checkpoint that nests the state dict, is an object only Python code can rebuild, and is
//! refused with a message saying how to re-save it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

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
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

/// Limits on what a pickle may build before Candle's reader is let near it (see [`prescan`]). A state dict
/// of a ResNet-152 builds about 20,000 objects at a depth of 6.
pub const MAX_PICKLE_OBJECTS: u64 = 2_000_000;
/// Nesting depth limit of the pickled objects (deep nesting would overflow the stack when dropped).
pub const MAX_PICKLE_DEPTH: u32 = 100;
/// Limit on the bytes of strings a pickle may build, copies through its memo included.
pub const MAX_PICKLE_STRING_BYTES: u64 = 256 << 20;

/// Reads every tensor of a plain state dict, by its stored name, onto `device`. Non-tensor entries
/// (`_metadata`, plain numbers) are skipped.
///
/// The file is memory-mapped and every tensor is copied once, from the map to its own buffer. Hostile
/// files cannot make this panic or allocate without bound: the zip directory is parsed with checked
/// arithmetic, the pickle is pre-scanned against [`MAX_PICKLE_OBJECTS`], [`MAX_PICKLE_DEPTH`] and
/// [`MAX_PICKLE_STRING_BYTES`] before it is unpickled, and each tensor's shape, strides and offset are
/// checked against the bytes its storage really holds before anything is allocated.
pub fn read_state_dict(path: impl AsRef<Path>, device: &Device) -> Result<HashMap<String, Tensor>, PthError> {
    let path = path.as_ref();
    let bytes = map(path)?;
    let zip = Zip::parse(&bytes).map_err(|reason| PthError::NotZip {
        path: path.to_path_buf(),
        reason,
    })?;
    let (prefix, obj) = top_object(path, &zip)?;
    let tensors = state_dict(path, obj)?;
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, info) in tensors {
        let terr = |reason: String| PthError::Tensor {
            path: path.to_path_buf(),
            name: name.clone(),
            reason,
        };
        let entry = format!("{prefix}data/{}", info.key);
        let storage = zip.entry(entry.as_bytes()).map_err(terr)?;
        let t = info.tensor(storage, device).map_err(terr)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The tensor names of a plain state dict; any other pickled object is an error saying what it is.
pub fn state_dict_names(path: &Path) -> Result<Vec<String>, PthError> {
    let bytes = map(path)?;
    let zip = Zip::parse(&bytes).map_err(|reason| PthError::NotZip {
        path: path.to_path_buf(),
        reason,
    })?;
    let (_, obj) = top_object(path, &zip)?;
    Ok(state_dict(path, obj)?.into_iter().map(|(name, _)| name).collect())
}

fn map(path: &Path) -> Result<memmap2::Mmap, PthError> {
    let io = |source| PthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (file, _) = crate::fsutil::open_regular(path).map_err(io)?;
    // SAFETY: the map is only read; a file changed underneath us can give wrong values but every access
    // is bounds-checked against the map's length.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// The tensors of a plain state dict, by name, or an error saying what the object is instead.
fn state_dict(path: &Path, obj: Object) -> Result<Vec<(String, TensorRef)>, PthError> {
    match classify(obj) {
        Kind::StateDict(t) if t.is_empty() => Err(PthError::NoTensors {
            path: path.to_path_buf(),
        }),
        Kind::StateDict(t) => Ok(t),
        Kind::Unsupported { name, reason } => Err(PthError::Tensor {
            path: path.to_path_buf(),
            name,
            reason,
        }),
        Kind::Nested(keys) => Err(PthError::Nested {
            path: path.to_path_buf(),
            keys,
        }),
        Kind::Object(class) => Err(PthError::NotStateDict {
            path: path.to_path_buf(),
            class,
        }),
    }
}

/// What the top-level pickled object is.
enum Kind {
    StateDict(Vec<(String, TensorRef)>),
    /// A tensor that cannot be read (unknown storage type, bad layout).
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
    let mut tensors = Vec::new();
    let mut nested = Vec::new();
    for (key, value) in entries {
        let is_dict = matches!(value, Object::Dict(_));
        let Object::Unicode(name) = key else {
            continue;
        };
        match TensorRef::parse(value) {
            Ok(Some(t)) => tensors.push((name, t)),
            Ok(None) if is_dict => nested.push(format!("`{name}`")),
            Ok(None) => {}
            Err(reason) => return Kind::Unsupported { name, reason },
        }
    }
    match (tensors.is_empty(), nested.is_empty()) {
        (true, false) => Kind::Nested(nested.join(", ")),
        _ => Kind::StateDict(tensors),
    }
}

/// `module.Class` of a reduced/built object (how pickle stores class instances), else its kind.
fn describe(obj: &Object) -> String {
    match obj {
        Object::Class {
            module_name,
            class_name,
        } => format!("{module_name}.{class_name}").chars().take(200).collect(),
        Object::Build { callable, .. } | Object::Reduce { callable, .. } => describe(callable),
        Object::Tuple(_) => "tuple".into(),
        Object::List(_) => "list".into(),
        Object::Dict(_) => "dict".into(),
        Object::Unicode(_) => "str".into(),
        Object::Int(_) | Object::Long(_) => "int".into(),
        Object::Float(_) => "float".into(),
        Object::Bool(_) => "bool".into(),
        Object::None => "None".into(),
        Object::Mark => "mark".into(),
        Object::PersistentLoad(_) => "persistent id".into(),
    }
}

/// Where a tensor's values are: `data/<key>` of the archive, and how to view them.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    key: String,
    dtype: DType,
    /// Elements in the storage, as pickled.
    storage_len: usize,
    /// Offset (in elements), sizes and strides of the view.
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// Reads `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, possibly wrapped in
    /// `_rebuild_parameter(tensor, ...)` or `torch._tensor._rebuild_from_type_v2(func, type, args, state)`.
    /// `Ok(None)`: not a tensor at all.
    fn parse(obj: Object) -> Result<Option<TensorRef>, String> {
        let Object::Reduce { callable, args } = obj else {
            return Ok(None);
        };
        let Object::Class {
            module_name,
            class_name,
        } = *callable
        else {
            return Ok(None);
        };
        let Object::Tuple(mut args) = *args else {
            return Ok(None);
        };
        match (module_name.as_str(), class_name.as_str()) {
            ("torch._utils", "_rebuild_parameter") if !args.is_empty() => TensorRef::parse(args.swap_remove(0)),
            ("torch._tensor", "_rebuild_from_type_v2") if args.len() >= 3 => {
                let inner = args.swap_remove(2);
                let func = args.swap_remove(0);
                TensorRef::parse(Object::Reduce {
                    callable: Box::new(func),
                    args: Box::new(inner),
                })
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                Self::rebuild_args(args).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn rebuild_args(mut args: Vec<Object>) -> Result<TensorRef, String> {
        if args.len() < 4 {
            return Err(format!(
                "_rebuild_tensor_v2 has {} arguments, expected at least 4",
                args.len()
            ));
        }
        args.truncate(4);
        let stride = dims(args.pop(), "stride")?;
        let shape = dims(args.pop(), "size")?;
        let offset = int(args.pop(), "storage offset")?;
        let Some(Object::PersistentLoad(storage)) = args.pop() else {
            return Err("the storage is not a persistent id".into());
        };
        // ('storage', torch.FloatStorage, '<key>', '<location>', numel)
        let Object::Tuple(mut storage) = *storage else {
            return Err("the storage id is not a tuple".into());
        };
        if storage.len() != 5 {
            return Err(format!("the storage id has {} fields, expected 5", storage.len()));
        }
        let storage_len = int(storage.pop(), "storage size")?;
        let _location = storage.pop();
        let Some(Object::Unicode(key)) = storage.pop() else {
            return Err("the storage key is not a string".into());
        };
        let Some(Object::Class { class_name, .. }) = storage.pop() else {
            return Err("the storage type is not a class".into());
        };
        let dtype = match class_name.as_str() {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "ByteStorage" => DType::U8,
            "LongStorage" => DType::I64,
            other => {
                return Err(format!(
                    "unsupported storage type {}",
                    other.chars().take(100).collect::<String>()
                ))
            }
        };
        if shape.len() != stride.len() {
            return Err(format!("{} sizes but {} strides", shape.len(), stride.len()));
        }
        // The key names a zip entry: a plain name, nothing that could climb out of `data/`.
        if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "invalid storage key {:?}",
                key.chars().take(64).collect::<String>()
            ));
        }
        Ok(TensorRef {
            key,
            dtype,
            storage_len,
            offset,
            shape,
            stride,
        })
    }

    /// The tensor, from its storage's bytes, after checking that the view lies inside them.
    fn tensor(&self, storage: &[u8], device: &Device) -> Result<Tensor, String> {
        let elem = self.dtype.size_in_bytes();
        let storage_bytes = self.storage_len.checked_mul(elem).ok_or("storage size overflows")?;
        if storage_bytes > storage.len() {
            return Err(format!(
                "its storage should hold {storage_bytes} bytes but the file has {}: truncated or corrupt",
                storage.len()
            ));
        }
        let numel = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("shape overflows")?;
        let end = self.offset.checked_add(numel).ok_or("offset overflows")?;
        if numel > 0 && end > self.storage_len {
            return Err(format!(
                "its view (offset {}, {numel} elements) runs past its storage of {} elements",
                self.offset, self.storage_len
            ));
        }
        let data = &storage[self.offset * elem..(self.offset + numel) * elem];
        let rank = self.shape.len();
        let c_contiguous = contiguous(&self.shape, &self.stride, false);
        let reversed: Vec<usize> = self.shape.iter().rev().copied().collect();
        if c_contiguous || numel <= 1 {
            Tensor::from_raw_buffer(data, self.dtype, &self.shape, device).map_err(|e| e.to_string())
        } else if contiguous(&self.shape, &self.stride, true) {
            // Column-major (a transposed view saved as is): read reversed, then permute back.
            let t = Tensor::from_raw_buffer(data, self.dtype, &reversed, device).map_err(|e| e.to_string())?;
            let dims: Vec<usize> = (0..rank).rev().collect();
            t.permute(dims).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "non-contiguous view (sizes {:?}, strides {:?}) is not supported",
                self.shape, self.stride
            ))
        }
    }
}

/// Whether `stride` is the row-major (or, with `fortran`, column-major) stride of `shape`. Dimensions of
/// size 1 may have any stride.
fn contiguous(shape: &[usize], stride: &[usize], fortran: bool) -> bool {
    let mut expected = 1usize;
    let dims: Box<dyn Iterator<Item = (&usize, &usize)>> = if fortran {
        Box::new(shape.iter().zip(stride))
    } else {
        Box::new(shape.iter().zip(stride).rev())
    };
    for (&d, &s) in dims {
        if d != 1 && s != expected {
            return false;
        }
        expected = match expected.checked_mul(d) {
            Some(e) => e,
            None => return false,
        };
    }
    true
}

fn int(obj: Option<Object>, what: &str) -> Result<usize, String> {
    match obj {
        Some(Object::Int(i)) if i >= 0 => Ok(i as usize),
        Some(Object::Long(i)) if i >= 0 => usize::try_from(i).map_err(|_| format!("{what} {i} is too large")),
        other => Err(format!(
            "{what} is not a non-negative integer: {}",
            other.as_ref().map(describe).unwrap_or_default()
        )),
    }
}

fn dims(obj: Option<Object>, what: &str) -> Result<Vec<usize>, String> {
    match obj {
        Some(Object::Tuple(items)) if items.len() <= 64 => items.into_iter().map(|o| int(Some(o), what)).collect(),
        Some(Object::Tuple(items)) => Err(format!("{} dimensions", items.len())),
        _ => Err(format!("the {what} is not a tuple")),
    }
}

/// The unpickled (not executed) top-level object of the archive's `<prefix>data.pkl`, and the prefix.
fn top_object(path: &Path, zip: &Zip<'_>) -> Result<(String, Object), PthError> {
    let (name, pickle) = zip.data_pkl().map_err(|reason| PthError::NotZip {
        path: path.to_path_buf(),
        reason,
    })?;
    let perr = |reason: String| PthError::Pickle {
        path: path.to_path_buf(),
        reason,
    };
    prescan(pickle).map_err(perr)?;
    let mut stack = Stack::empty();
    let cerr = |e: candle_core::Error| perr(e.to_string());
    stack.read_loop(&mut std::io::BufReader::new(pickle)).map_err(cerr)?;
    let obj = stack.finalize().map_err(cerr)?;
    let prefix = String::from_utf8_lossy(&name[..name.len() - "data.pkl".len()]).into_owned();
    Ok((prefix, obj))
}

/// What [`prescan`] knows of a stack item: its kind, and what copying it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sim {
    kind: SimKind,
    /// Objects in it, itself included.
    nodes: u64,
    /// Nesting depth, 1 for a leaf.
    depth: u32,
    /// Bytes of the strings in it.
    strings: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimKind {
    Mark,
    Dict,
    List,
    /// `collections.OrderedDict` / `defaultdict`, which Candle's REDUCE turns into an empty dict.
    DictClass,
    Other,
}

impl Sim {
    fn leaf(kind: SimKind, strings: u64) -> Sim {
        Sim {
            kind,
            nodes: 1,
            depth: 1,
            strings,
        }
    }

    /// A new object of `kind` holding `children`.
    fn parent(kind: SimKind, children: &[Sim]) -> Sim {
        let mut s = Sim::leaf(kind, 0);
        for c in children {
            s.adopt(c);
        }
        s
    }

    fn adopt(&mut self, c: &Sim) {
        self.nodes = self.nodes.saturating_add(c.nodes);
        self.depth = self.depth.max(c.depth.saturating_add(1));
        self.strings = self.strings.saturating_add(c.strings);
    }
}

/// Runs the pickle through a model of Candle's unpickler ([`Stack`]) that only counts: the objects it
/// would build (memo copies included), their nesting depth and their string bytes. A pickle over
/// [`MAX_PICKLE_OBJECTS`], [`MAX_PICKLE_DEPTH`] or [`MAX_PICKLE_STRING_BYTES`], or one Candle's reader
/// would choke on (a string longer than the data, a `LONG1` of more than 8 bytes, which it would shift
/// out of range), is refused here, so Candle never sees it.
pub fn prescan(pickle: &[u8]) -> Result<(), String> {
    let mut r = pickle;
    let mut stack: Vec<Sim> = Vec::new();
    let mut memo: HashMap<u32, Sim> = HashMap::new();
    let (mut objects, mut string_bytes) = (0u64, 0u64);
    fn take<'a>(n: usize, r: &mut &'a [u8]) -> Result<&'a [u8], String> {
        if r.len() < n {
            return Err("the pickle ends in the middle of an instruction".into());
        }
        let (head, rest) = r.split_at(n);
        *r = rest;
        Ok(head)
    }
    fn line<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let end = r.iter().position(|&b| b == b'\n').ok_or("unterminated GLOBAL")?;
        let l = &r[..end];
        *r = &r[end + 1..];
        Ok(l)
    }
    fn u32_at(r: &mut &[u8]) -> Result<u32, String> {
        let b = take(4, r)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    let pop = |stack: &mut Vec<Sim>| stack.pop().ok_or_else(|| "the pickle pops an empty stack".to_string());
    let to_mark = |stack: &mut Vec<Sim>| -> Result<Vec<Sim>, String> {
        let at = stack
            .iter()
            .rposition(|s| s.kind == SimKind::Mark)
            .ok_or("a pickle instruction has no mark")?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    let leaf = Sim::leaf(SimKind::Other, 0);
    loop {
        let op = take(1, &mut r)?[0];
        let pushed: Option<Sim> = match op {
            0x80 => take(1, &mut r).map(|_| None)?,
            b'c' => {
                let (module, class) = (line(&mut r)?, line(&mut r)?);
                let strings = (module.len() + class.len()) as u64;
                string_bytes += strings;
                let dict_class = module == b"collections" && (class == b"OrderedDict" || class == b"defaultdict");
                Some(Sim::leaf(
                    if dict_class { SimKind::DictClass } else { SimKind::Other },
                    strings,
                ))
            }
            b'K' => take(1, &mut r).map(|_| Some(leaf))?,
            b'M' => take(2, &mut r).map(|_| Some(leaf))?,
            b'J' => take(4, &mut r).map(|_| Some(leaf))?,
            b'G' => take(8, &mut r).map(|_| Some(leaf))?,
            0x8a => {
                let n = take(1, &mut r)?[0] as usize;
                if n > 8 {
                    return Err(format!("a LONG1 of {n} bytes (at most 8 are supported)"));
                }
                take(n, &mut r).map(|_| Some(leaf))?
            }
            b'X' => {
                let len = u32_at(&mut r)? as usize;
                if len > r.len() {
                    return Err(format!("a string of {len} bytes in a pickle of {} bytes", pickle.len()));
                }
                take(len, &mut r)?;
                string_bytes += len as u64;
                Some(Sim::leaf(SimKind::Other, len as u64))
            }
            b'Q' => Some(Sim::parent(SimKind::Other, &[pop(&mut stack)?])),
            b't' => Some(Sim::parent(SimKind::Other, &to_mark(&mut stack)?)),
            0x85..=0x87 => {
                let mut items = Vec::with_capacity(3);
                for _ in 0..(op - 0x84) {
                    items.push(pop(&mut stack)?);
                }
                Some(Sim::parent(SimKind::Other, &items))
            }
            0x88 | 0x89 | b'N' | b')' => Some(leaf),
            b'}' => Some(Sim::leaf(SimKind::Dict, 0)),
            b']' => Some(Sim::leaf(SimKind::List, 0)),
            b'a' | b'e' | b's' | b'u' => {
                let items = match op {
                    b'a' => vec![pop(&mut stack)?],
                    b's' => vec![pop(&mut stack)?, pop(&mut stack)?],
                    _ => to_mark(&mut stack)?,
                };
                if op == b'u' && items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let want = if matches!(op, b'a' | b'e') {
                    SimKind::List
                } else {
                    SimKind::Dict
                };
                match stack.last_mut() {
                    Some(target) if target.kind == want => items.iter().for_each(|i| target.adopt(i)),
                    _ => return Err("an item is added to something that is not a list or dict".into()),
                }
                None
            }
            b'.' => break,
            b'b' => {
                let args = pop(&mut stack)?;
                let obj = pop(&mut stack)?;
                Some(if obj.kind == SimKind::Dict && args.kind == SimKind::Dict {
                    let mut merged = obj;
                    merged.nodes = merged.nodes.saturating_add(args.nodes);
                    merged.depth = merged.depth.max(args.depth);
                    merged.strings = merged.strings.saturating_add(args.strings);
                    merged
                } else {
                    Sim::parent(SimKind::Other, &[obj, args])
                })
            }
            b'd' => {
                let items = to_mark(&mut stack)?;
                if items.len() % 2 != 0 {
                    return Err("DICT with an odd number of items".into());
                }
                Some(Sim::parent(SimKind::Dict, &items))
            }
            b'(' => Some(Sim::leaf(SimKind::Mark, 0)),
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                Some(if op == b'R' && callable.kind == SimKind::DictClass {
                    Sim::leaf(SimKind::Dict, 0)
                } else {
                    Sim::parent(SimKind::Other, &[callable, args])
                })
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    take(1, &mut r)?[0] as u32
                } else {
                    u32_at(&mut r)?
                };
                let sim = *memo
                    .get(&id)
                    .ok_or_else(|| format!("memo {id} is read before it is written"))?;
                // Candle pushes a copy of the memoized object: its objects and strings count again.
                objects = objects.saturating_add(sim.nodes - 1);
                string_bytes = string_bytes.saturating_add(sim.strings);
                Some(sim)
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    take(1, &mut r)?[0] as u32
                } else {
                    u32_at(&mut r)?
                };
                let top = *stack.last().ok_or("MEMOIZE of an empty stack")?;
                // Candle stores a copy.
                objects = objects.saturating_add(top.nodes);
                string_bytes = string_bytes.saturating_add(top.strings);
                memo.insert(id, top);
                None
            }
            other => return Err(format!("unknown pickle opcode 0x{other:02x}")),
        };
        if let Some(s) = pushed {
            objects = objects.saturating_add(1);
            stack.push(s);
        }
        // Only the top can have grown (pushed, or added to).
        if stack.last().is_some_and(|s| s.depth > MAX_PICKLE_DEPTH) {
            return Err(format!("objects nested deeper than {MAX_PICKLE_DEPTH} levels"));
        }
        if objects > MAX_PICKLE_OBJECTS {
            return Err(format!("more than {MAX_PICKLE_OBJECTS} objects (memo copies included)"));
        }
        if string_bytes > MAX_PICKLE_STRING_BYTES {
            return Err(format!(
                "more than {MAX_PICKLE_STRING_BYTES} bytes of strings (memo copies included)"
            ));
        }
    }
    if stack.is_empty() {
        return Err("the pickle leaves no object".into());
    }
    Ok(())
}

/// One member of a zip archive, from its central-directory record.
#[derive(Debug, Clone, Copy)]
struct ZipEntry<'a> {
    name: &'a [u8],
    method: u16,
    compressed: u64,
    size: u64,
    local: u64,
}

/// The central directory of a zip archive held in memory. `torch.save` writes uncompressed entries, so
/// reading one is a matter of finding it (this crate has no zip dependency; Candle's is not used because
/// it trusts sizes it reads).
struct Zip<'a> {
    bytes: &'a [u8],
    entries: Vec<ZipEntry<'a>>,
}

impl<'a> Zip<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let (mut at, count) = central_directory(bytes)?;
        // Each record is at least 46 bytes: a count larger than the file allows is a lie.
        let mut entries = Vec::with_capacity(count.min(bytes.len() / 46));
        while bytes.get(at..at.saturating_add(4)) == Some(b"PK\x01\x02") {
            let (name_len, extra_len, comment_len) =
                (le(bytes, at + 28, 2)?, le(bytes, at + 30, 2)?, le(bytes, at + 32, 2)?);
            let name_start = at + 46;
            let name = bytes
                .get(name_start..name_start + name_len)
                .ok_or("truncated zip directory")?;
            let extra = bytes
                .get(name_start + name_len..name_start + name_len + extra_len)
                .ok_or("truncated zip directory")?;
            let mut e = ZipEntry {
                name,
                method: le(bytes, at + 10, 2)? as u16,
                compressed: le(bytes, at + 20, 4)? as u64,
                size: le(bytes, at + 24, 4)? as u64,
                local: le(bytes, at + 42, 4)? as u64,
            };
            zip64_extra(extra, &mut e)?;
            entries.push(e);
            at = name_start + name_len + extra_len + comment_len;
        }
        Ok(Zip { bytes, entries })
    }

    /// The name and bytes of the `*data.pkl` entry.
    fn data_pkl(&self) -> Result<(&'a [u8], &'a [u8]), String> {
        let e = self
            .entries
            .iter()
            .find(|e| e.name.ends_with(b"data.pkl"))
            .ok_or("no `data.pkl` entry")?;
        Ok((e.name, self.data(e)?))
    }

    /// The bytes of the entry called `name`.
    fn entry(&self, name: &[u8]) -> Result<&'a [u8], String> {
        let e = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("its data `{}` is not in the archive", String::from_utf8_lossy(name)))?;
        self.data(e)
    }

    fn data(&self, e: &ZipEntry<'a>) -> Result<&'a [u8], String> {
        let name = String::from_utf8_lossy(e.name);
        if e.method != 0 || e.compressed != e.size {
            return Err(format!(
                "zip entry `{name}` is compressed (torch.save stores entries uncompressed)"
            ));
        }
        let local = usize::try_from(e.local).map_err(|_| "zip offset out of range")?;
        if self.bytes.get(local..local.saturating_add(4)) != Some(b"PK\x03\x04") {
            return Err(format!("zip entry `{name}` has no local header"));
        }
        // The local header repeats the name and has its own extra field (torch pads with it).
        let start = local + 30 + le(self.bytes, local + 26, 2)? + le(self.bytes, local + 28, 2)?;
        let size = usize::try_from(e.size).map_err(|_| "zip size out of range")?;
        self.bytes
            .get(start..start.saturating_add(size))
            .ok_or_else(|| format!("zip entry `{name}` is truncated"))
    }
}

/// Applies the zip64 extended-information extra field (id 1) to the fields saturated at `0xffffffff`.
fn zip64_extra(mut extra: &[u8], e: &mut ZipEntry<'_>) -> Result<(), String> {
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = u16::from_le_bytes([extra[2], extra[3]]) as usize;
        let body = extra.get(4..4 + len).ok_or("truncated zip extra field")?;
        if id == 1 {
            let mut fields = body
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
            for f in [&mut e.size, &mut e.compressed, &mut e.local] {
                if *f == 0xffff_ffff {
                    *f = fields.next().ok_or("truncated zip64 extra field")?;
                }
            }
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}

/// Offset of the central directory and its entry count, from the end-of-central-directory record (or its
/// zip64 version, which files over 4 GiB need).
fn central_directory(bytes: &[u8]) -> Result<(usize, usize), String> {
    if bytes.len() < 22 {
        return Err("too short for a zip file".into());
    }
    let search_from = bytes.len().saturating_sub(22 + 0xffff);
    let eocd = (search_from..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes[i..i + 4] == *b"PK\x05\x06")
        .ok_or("no zip end-of-directory record")?;
    let (offset, count) = (le(bytes, eocd + 16, 4)?, le(bytes, eocd + 10, 2)?);
    if offset != 0xffff_ffff && count != 0xffff {
        return Ok((offset, count));
    }
    let locator = eocd
        .checked_sub(20)
        .filter(|&l| bytes[l..l + 4] == *b"PK\x06\x07")
        .ok_or("bad zip64 locator")?;
    let zip64_eocd = le(bytes, locator + 8, 8)?;
    Ok((
        le(bytes, zip64_eocd.saturating_add(48), 8)?,
        le(bytes, zip64_eocd.saturating_add(32), 8)?,
    ))
}

/// The little-endian unsigned integer of `n` (at most 8) bytes at `at`.
fn le(bytes: &[u8], at: usize, n: usize) -> Result<usize, String> {
    let b = bytes.get(at..at.saturating_add(n)).ok_or("truncated zip file")?;
    let v = b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64);
    usize::try_from(v).map_err(|_| "zip offset out of range".to_string())
}
