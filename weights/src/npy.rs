//! NumPy `.npy` arrays, read safely.
//!
//! Candle's `Tensor::read_npy` sizes its buffer from the header alone, so a 100-byte file claiming a shape
//! of `(10**12,)` makes it try to allocate terabytes. [`NpyFile::open`] instead parses the header with a
//! strict grammar (magic, version 1.0/2.0/3.0, a Python dict literal with exactly `descr`, `fortran_order`
//! and `shape`), accepts only little-endian `float16`/`float32`/`float64` in C order, checks that the
//! shape's byte size equals what the file holds, and only then reads, at most [`NpyLimits::max_read_bytes`]
//! at a time. [`NpyFile::read_rows`] reads a range along the first axis, so a large batch can be streamed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// Why a `.npy` file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened or read (also: it is a FIFO, a device or a directory).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid `.npy` file (bad magic, header, sizes).
    #[error("{}: not a valid .npy file: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A valid `.npy` file of a kind that is not read (dtype, byte order, Fortran order).
    #[error("{}: unsupported .npy array: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported, and how to convert it.
        reason: String,
    },
    /// Reading it would allocate more than the limit.
    #[error(
        "{}: reading {bytes} bytes at once is over the limit of {limit} bytes; read it in smaller parts \
         (rows along the first axis)", path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What the read would allocate.
        bytes: u64,
        /// [`NpyLimits::max_read_bytes`].
        limit: u64,
    },
    /// The row range asked for is not inside the array.
    #[error("{}: rows {start}..{end} are outside the array's {rows} rows", path.display())]
    Rows {
        /// The file.
        path: PathBuf,
        /// Requested range start.
        start: usize,
        /// Requested range end.
        end: usize,
        /// Rows in the array.
        rows: usize,
    },
    /// Building the tensor failed.
    #[error("{}: {source}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// Candle's error.
        #[source]
        source: candle_core::Error,
    },
}

/// Limits applied by [`NpyFile`]. The defaults suit inputs of a classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyLimits {
    /// The most bytes one read allocates (default 1 GiB). The file itself may be larger and read by rows.
    pub max_read_bytes: u64,
    /// The most dimensions (default 32, as NumPy before 2.0).
    pub max_rank: usize,
    /// The longest header (default 10,000 bytes, NumPy's own `max_header_size`).
    pub max_header_bytes: usize,
}

impl Default for NpyLimits {
    fn default() -> Self {
        NpyLimits {
            max_read_bytes: 1 << 30,
            max_rank: 32,
            max_header_bytes: 10_000,
        }
    }
}

/// The element type of an array that [`NpyFile`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDType {
    /// `<f2`.
    F16,
    /// `<f4`.
    F32,
    /// `<f8`.
    F64,
}

impl NpyDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDType::F16 => 2,
            NpyDType::F32 => 4,
            NpyDType::F64 => 8,
        }
    }

    /// The Candle dtype read into.
    pub fn dtype(self) -> DType {
        match self {
            NpyDType::F16 => DType::F16,
            NpyDType::F32 => DType::F32,
            NpyDType::F64 => DType::F64,
        }
    }
}

/// A parsed, checked `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: NpyDType,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Where the data starts in the file.
    pub data_offset: usize,
    /// Bytes of data the shape needs.
    pub data_bytes: u64,
}

/// Parses the header at the start of `bytes` (which must hold at least the whole header; the data may
/// follow or not). Errors are `(unsupported?, reason)`: `true` for a valid but unsupported array.
pub fn parse_header(bytes: &[u8], limits: &NpyLimits) -> Result<NpyHeader, (bool, String)> {
    let invalid = |r: String| (false, r);
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(invalid("no NumPy magic (\\x93NUMPY) at the start".into()));
    }
    let major = *bytes.get(6).ok_or_else(|| invalid("truncated header".into()))?;
    let (len, start) = match major {
        1 => (bytes.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize), 10),
        2 | 3 => (
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            12,
        ),
        v => return Err(invalid(format!("unknown format version {v}"))),
    };
    let len = len.ok_or_else(|| invalid("truncated header".into()))?;
    if len > limits.max_header_bytes {
        return Err(invalid(format!(
            "a header of {len} bytes (the limit is {})",
            limits.max_header_bytes
        )));
    }
    let text = bytes
        .get(start..start + len)
        .ok_or_else(|| invalid("truncated header".into()))?;
    let text = std::str::from_utf8(text).map_err(|_| invalid("the header is not text".into()))?;
    let dict = parse_dict(text).map_err(|e| invalid(format!("bad header {:?}: {e}", clip(text))))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) if descr.is_none() => descr = Some(s),
            ("fortran_order", Value::Bool(b)) if fortran.is_none() => fortran = Some(b),
            ("shape", Value::Tuple(t)) if shape.is_none() => shape = Some(t),
            (k, _) => return Err(invalid(format!("unexpected or repeated header key `{}`", clip(k)))),
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(invalid("the header lacks `descr`, `fortran_order` or `shape`".into()));
    };
    let dtype = match descr.as_str() {
        "<f2" => NpyDType::F16,
        "<f4" => NpyDType::F32,
        "<f8" => NpyDType::F64,
        ">f2" | ">f4" | ">f8" => {
            return Err((
                true,
                format!("big-endian `{descr}`; save it little-endian: `a.astype('<f4')`"),
            ))
        }
        other => {
            return Err((
                true,
                format!(
                    "dtype `{}`: only float16/32/64 are read; convert with `a.astype('float32')`",
                    clip(other)
                ),
            ))
        }
    };
    if fortran {
        return Err((
            true,
            "Fortran (column-major) order; save it with `np.ascontiguousarray(a)`".into(),
        ));
    }
    if shape.len() > limits.max_rank {
        return Err(invalid(format!(
            "{} dimensions (the limit is {})",
            shape.len(),
            limits.max_rank
        )));
    }
    let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    let data_bytes = elems
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .ok_or_else(|| invalid(format!("shape {shape:?} is too large to exist")))?;
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset: start + len,
        data_bytes,
    })
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Values of the header's dict literal.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 224, 224), }` and the spacing variants NumPy
/// writes or accepts: a dict of string keys to a string, a bool or a tuple of non-negative integers.
fn parse_dict(text: &str) -> Result<Vec<(String, Value)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    p.eat(b'{')?;
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.peek() == Some(b'}') {
            p.i += 1;
            break;
        }
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        let value = match p.peek() {
            Some(b'\'' | b'"') => Value::Str(p.string()?),
            Some(b'(') => Value::Tuple(p.tuple()?),
            Some(b'T' | b'F') => Value::Bool(p.boolean()?),
            _ => return Err(format!("unexpected value at byte {}", p.i)),
        };
        out.push((key, value));
        if out.len() > 8 {
            return Err("too many keys".into());
        }
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {}
            _ => return Err(format!("expected `,` or `}}` at byte {}", p.i)),
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("text after the dict".into());
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let q = self
            .peek()
            .filter(|c| matches!(c, b'\'' | b'"'))
            .ok_or("expected a string")?;
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(s);
            }
            if c == b'\\' {
                return Err("escapes in header strings are not supported".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }
    fn boolean(&mut self) -> Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.eat(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(b')') => {
                    self.i += 1;
                    return Ok(dims);
                }
                Some(b'0'..=b'9') => {
                    let start = self.i;
                    while matches!(self.peek(), Some(b'0'..=b'9')) {
                        self.i += 1;
                    }
                    let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("x");
                    // Python 2 wrote longs as `3L`.
                    if self.peek() == Some(b'L') {
                        self.i += 1;
                    }
                    dims.push(
                        digits
                            .parse::<usize>()
                            .map_err(|_| format!("dimension {digits} is too large"))?,
                    );
                    if dims.len() > 64 {
                        return Err("more than 64 dimensions".into());
                    }
                }
                _ => return Err(format!("expected a dimension at byte {}", self.i)),
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b')') => {}
                _ => return Err(format!("expected `,` or `)` at byte {}", self.i)),
            }
        }
    }
}

/// An opened `.npy` file whose header has been checked against the file's size.
#[derive(Debug)]
pub struct NpyFile {
    path: PathBuf,
    file: File,
    header: NpyHeader,
    limits: NpyLimits,
}

impl NpyFile {
    /// Opens and checks `path` (a regular file; FIFOs and devices are refused without blocking): the
    /// header must parse and the data after it must be exactly the shape's size.
    pub fn open(path: impl AsRef<Path>, limits: NpyLimits) -> Result<Self, NpyError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| NpyError::Io {
            path: path.clone(),
            source,
        };
        let (mut file, meta) = crate::fsutil::open_regular(&path).map_err(io)?;
        // The header fits in its length fields plus `max_header_bytes`.
        let mut head = Vec::new();
        (&mut file)
            .take(12 + limits.max_header_bytes as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        let header = parse_header(&head, &limits).map_err(|(unsupported, reason)| {
            if unsupported {
                NpyError::Unsupported {
                    path: path.clone(),
                    reason,
                }
            } else {
                NpyError::Invalid {
                    path: path.clone(),
                    reason,
                }
            }
        })?;
        let held = meta.len().saturating_sub(header.data_offset as u64);
        if meta.len() < header.data_offset as u64 || held != header.data_bytes {
            return Err(NpyError::Invalid {
                path,
                reason: format!(
                    "shape {:?} of {:?} needs {} bytes of data but the file holds {held}: truncated or corrupt",
                    header.shape, header.dtype, header.data_bytes
                ),
            });
        }
        Ok(NpyFile {
            path,
            file,
            header,
            limits,
        })
    }

    /// The checked header.
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// Reads the whole array in its stored dtype.
    pub fn read_all(&mut self, device: &Device) -> Result<Tensor, NpyError> {
        let shape = self.header.shape.clone();
        self.read_span(0, self.header.data_bytes, &shape, device)
    }

    /// Reads rows `rows` along the first axis (shape `(rows.len(), ...rest)`), in the stored dtype.
    pub fn read_rows(&mut self, rows: Range<usize>, device: &Device) -> Result<Tensor, NpyError> {
        let n = self.header.shape.first().copied().unwrap_or(0);
        if self.header.shape.is_empty() || rows.start > rows.end || rows.end > n {
            let path = self.path.clone();
            return Err(NpyError::Rows {
                path,
                start: rows.start,
                end: rows.end,
                rows: n,
            });
        }
        // Bytes per row: the total divided by the rows (exact, and no overflow: the total fits).
        let row_bytes = if n == 0 { 0 } else { self.header.data_bytes / n as u64 };
        let mut shape = self.header.shape.clone();
        shape[0] = rows.len();
        self.read_span(
            rows.start as u64 * row_bytes,
            rows.len() as u64 * row_bytes,
            &shape,
            device,
        )
    }

    fn read_span(&mut self, offset: u64, len: u64, shape: &[usize], device: &Device) -> Result<Tensor, NpyError> {
        if len > self.limits.max_read_bytes {
            return Err(NpyError::TooLarge {
                path: self.path.clone(),
                bytes: len,
                limit: self.limits.max_read_bytes,
            });
        }
        let io = |source| NpyError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.header.data_offset as u64 + offset))
            .map_err(io)?;
        let mut bytes = Vec::with_capacity(len as usize);
        (&mut self.file).take(len).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 != len {
            let reason = format!("the file shrank while it was read ({} of {len} bytes)", bytes.len());
            return Err(NpyError::Invalid {
                path: self.path.clone(),
                reason,
            });
        }
        Tensor::from_raw_buffer(&bytes, self.header.dtype.dtype(), shape, device).map_err(|source| NpyError::Tensor {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads a whole `.npy` array with [`NpyLimits::default`], in its stored dtype.
pub fn read_npy(path: impl AsRef<Path>, device: &Device) -> Result<Tensor, NpyError> {
    NpyFile::open(path, NpyLimits::default())?.read_all(device)
}

/// The bytes of a version-1.0 `.npy` file holding `values` (little-endian f32, C order) of `shape`, as
/// NumPy writes it (header padded with spaces and a newline to a multiple of 64 bytes).
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut out = header_f32(shape, 0);
    out.reserve(4 * values.len());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The header (magic, version 1.0, dict) of a little-endian f32 C-order `.npy` file of `shape`, padded to a
/// multiple of 64 bytes and to at least `min_len`: a writer that streams rows reserves the header with a
/// placeholder shape and `min_len`, then rewrites it with the final shape at the same length.
pub fn header_f32(shape: &[usize], min_len: usize) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) || 10 + header.len() + 1 < min_len {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_headers_keep_their_length() {
        let a = header_f32(&[0, 0], 128);
        let b = header_f32(&[123_456_789, 1024], 128);
        assert_eq!((a.len(), b.len()), (128, 128));
        // Without a minimum: NumPy's own header (padded to a multiple of 64).
        let numpy = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &[]);
        assert_eq!(header_f32(&[2, 3], 0), numpy);
    }

    #[test]
    fn encoded_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [vec![3usize], vec![2, 3], vec![1, 2, 3]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let path = write(dir.path(), &encode_f32(&shape, &values));
            let t = read_npy(&path, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), shape.as_slice());
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), values);
        }
    }

    /// A version-1.0 `.npy` file as NumPy writes it (header padded to a multiple of 64 with `\n`).
    pub(crate) fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("a.npy");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_arrays_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let p = write(
            dir.path(),
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 2), }",
                &floats(&data),
            ),
        );
        let t = read_npy(&p, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 2, 2]);
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);
        let mut f = NpyFile::open(&p, NpyLimits::default()).unwrap();
        let r = f.read_rows(1..3, &Device::Cpu).unwrap();
        assert_eq!(r.dims(), &[2, 2, 2]);
        assert_eq!(r.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &data[4..]);
        assert!(matches!(f.read_rows(2..4, &Device::Cpu), Err(NpyError::Rows { .. })));
        // f64 and f16, a scalar, an empty array, version 2.0 and Python 2's `3L`.
        let p = write(
            dir.path(),
            &npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': ()}",
                &2.5f64.to_le_bytes(),
            ),
        );
        assert_eq!(read_npy(&p, &Device::Cpu).unwrap().to_scalar::<f64>().unwrap(), 2.5);
        let p = write(
            dir.path(),
            &npy("{'descr': '<f2', 'fortran_order': False, 'shape': (0, 3)}", &[]),
        );
        assert_eq!(read_npy(&p, &Device::Cpu).unwrap().dims(), &[0, 3]);
        let mut v2 = npy("{'descr':'<f4','fortran_order':False,'shape':(1L,)}", &floats(&[7.0]));
        v2[6] = 2;
        v2.splice(8..10, [(v2[8]), v2[9], 0, 0]);
        let p = write(dir.path(), &v2);
        assert_eq!(read_npy(&p, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap(), [7.0]);
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&[u8], &str)] = &[
            // A huge shape over a few bytes: refused from the file size, nothing allocated.
            (
                &npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,)}",
                    &[0; 16],
                ),
                "needs 4000000000000 bytes",
            ),
            (
                &npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296)}",
                    &[],
                ),
                "too large to exist",
            ),
            (
                &npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
                    &[],
                ),
                "too large",
            ),
            (
                &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", &[0; 9]),
                "holds 9",
            ),
            (
                &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", &[]),
                "bad header",
            ),
            (&npy("{'descr': '<f4', 'fortran_order': False}", &[]), "lacks"),
            (
                &npy(
                    "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "repeated",
            ),
            (
                &npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}", &[0; 4]),
                "big-endian",
            ),
            (
                &npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}", &[0; 8]),
                "float32",
            ),
            (
                &npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", &[0; 8]),
                "dtype `|O`",
            ),
            (
                &npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}", &[0; 4]),
                "Fortran",
            ),
            (
                &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", &[0; 4]),
                "text after",
            ),
            (b"\x93NUMPY\x01\x00\xff\xff{", "header of 65535 bytes"),
            (b"\x93NUMPY\x09\x00", "version 9"),
            (b"\x93NUM", "magic"),
            (b"", "magic"),
        ];
        for (bytes, want) in cases {
            let p = write(dir.path(), bytes);
            let err = read_npy(&p, &Device::Cpu).unwrap_err().to_string();
            assert!(err.contains("a.npy") && err.contains(want), "want `{want}` in: {err}");
        }
        let many = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({})}}",
            "1,".repeat(40)
        );
        let p = write(dir.path(), &npy(&many, &[0; 4]));
        assert!(read_npy(&p, &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("40 dimensions"));
    }

    #[test]
    fn reads_over_the_limit_are_refused_but_rows_stream() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2)}",
                &floats(&[1.0; 8]),
            ),
        );
        let limits = NpyLimits {
            max_read_bytes: 8,
            ..NpyLimits::default()
        };
        let mut f = NpyFile::open(&p, limits).unwrap();
        assert!(matches!(
            f.read_all(&Device::Cpu),
            Err(NpyError::TooLarge {
                bytes: 32,
                limit: 8,
                ..
            })
        ));
        for i in 0..4 {
            assert_eq!(f.read_rows(i..i + 1, &Device::Cpu).unwrap().dims(), &[1, 2]);
        }
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused() {
        let err = read_npy("/dev/zero", &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
    }
}
