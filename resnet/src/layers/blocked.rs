//! The channel-blocked activation layout, NCHW16c, and the choice of layout a network's activations take.
//!
//! In NCHW a pixel's channels are a plane apart; in NCHW16c (the layout ONNX Runtime and oneDNN run
//! convolutions on) the channels come in blocks of 16 and each block is an `h x w` map of 64-byte lines, one
//! per pixel, holding that pixel's 16 channels: element `(n, c, y, x)` is at `(((n * C/16 + c/16) * H + y) * W
//! + x) * 16 + c % 16`. A tensor in this layout has shape `(N, C/16, H, W, 16)`: the shape says which layout
//! a tensor is in ([`is_blocked`]). A 1x1 conv on it reads one sequential stream per 16 input channels and
//! broadcasts values straight from the lines, with no packed copy of its operand (`engine::nchw16c`).
//!
//! [`Layout`] is the explicit choice, like [`crate::layers::Lowering`]'s: under [`Layout::Nchw16c`] (the
//! environment variable `ZOO_LAYOUT=nchw16c`, or [`Layout::set_default`] before loading) the convs of a model loaded
//! for CPU inference on the AVX-512 engine that have whole blocks of 16 channels on both sides hold their weights
//! for the blocked kernels (a direct conv on the layout; Winograd on it for the stride-1 3x3s), and a network whose
//! every block suits the layout ([`crate::ResNet::block_layout`]) converts its stem's output once, runs its blocks
//! on NCHW16c and converts the last block's output back: features and logits come out as NCHW as always. Any conv
//! takes an input in either layout and answers in the input's, converting around itself where it computes in the
//! other. It is not the default yet: on the 2-vCPU Xeon we measure on, ResNet-50 takes 1.04-1.17x and ResNet-18
//! 1.12-1.15x the time of the NCHW pass (`benches/README.md`, 2026-12-05, night).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use resnet::layers::blocked::{from_blocked, is_blocked, to_blocked};
//! # fn main() -> candle_core::Result<()> {
//! let x = Tensor::arange(0f32, 2. * 32. * 3. * 3., &Device::Cpu)?.reshape((2, 32, 3, 3))?;
//! let b = to_blocked(&x)?;
//! assert_eq!(b.dims(), &[2, 2, 3, 3, 16]);
//! assert!(is_blocked(&b) && !is_blocked(&x));
//! // Channel 17 of image 1 at pixel (2, 1): block 1, lane 1.
//! let at = |t: &Tensor, i: &[usize]| i.iter().try_fold(t.clone(), |t, &i| t.get(i))?.to_scalar::<f32>();
//! assert_eq!(at(&b, &[1, 1, 2, 1, 1])?, at(&x, &[1, 17, 2, 1])?);
//! let back = from_blocked(&b)?;
//! assert_eq!(back.dims(), x.dims());
//! assert_eq!(back.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, DType, Device, Result, Storage, Tensor};

/// Channels per block of NCHW16c: one AVX-512 vector of f32.
pub const LANES: usize = 16;

/// The layout a network's activations take between its convolutions on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Channel planes, (N, C, H, W): the layout of every tensor a model takes and returns.
    Nchw,
    /// Channel blocks of 16, (N, C/16, H, W, 16) (see the module's docs), inside a network's blocks.
    Nchw16c,
}

/// [`Layout::set_default`]'s choice: 0 for none, else 1 + its index in [`Layout::ALL`].
static DEFAULT: AtomicU8 = AtomicU8::new(0);

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 2] = [Layout::Nchw, Layout::Nchw16c];

    /// `ZOO_LAYOUT` when it names a layout (`nchw` or `nchw16c`), else [`Layout::Nchw`]. Read once per process.
    pub fn detect() -> Layout {
        static CHOSEN: OnceLock<Layout> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            super::engine::from_env(
                "ZOO_LAYOUT",
                "a layout (nchw, nchw16c)",
                Layout::Nchw,
                Layout::from_name,
                |_| true,
                Layout::name,
            )
        })
    }

    /// The layout models loaded now take: the one given to [`Layout::set_default`], else [`Layout::detect`]'s.
    pub fn current() -> Layout {
        match DEFAULT.load(Ordering::Relaxed) {
            0 => Layout::detect(),
            i => Layout::ALL[usize::from(i - 1)],
        }
    }

    /// Makes `layout` the one models loaded from now on take (`None`: back to [`Layout::detect`]'s); models
    /// already loaded keep theirs.
    pub fn set_default(layout: Option<Layout>) {
        let code = layout.map_or(0, |l| 1 + Layout::ALL.iter().position(|&x| x == l).unwrap_or(0) as u8);
        DEFAULT.store(code, Ordering::Relaxed);
    }

    /// The name `ZOO_LAYOUT` uses.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "nchw",
            Layout::Nchw16c => "nchw16c",
        }
    }

    /// The layout called `name` (see [`Layout::name`]).
    pub fn from_name(name: &str) -> Option<Layout> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name() == name.trim().to_ascii_lowercase())
    }
}

/// True for a tensor in NCHW16c: five dimensions, the last [`LANES`].
pub fn is_blocked(x: &Tensor) -> bool {
    matches!(x.dims(), &[_, _, _, _, LANES])
}

/// (N, C, H, W) -> (N, C/16, H, W, 16), contiguous; `C` must be a multiple of [`LANES`]. An f32 CPU tensor's
/// lines start on cache lines (a line straddling two would take two loads).
pub fn to_blocked(x: &Tensor) -> Result<Tensor> {
    let &[n, c, h, w] = x.dims() else {
        bail!("to_blocked expects an (N, C, H, W) tensor, got {:?}", x.dims())
    };
    if !c.is_multiple_of(LANES) {
        bail!("to_blocked: {c} channels are not whole blocks of {LANES}")
    }
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x
            .reshape((n, c / LANES, LANES, h, w))?
            .permute((0, 1, 3, 4, 2))?
            .contiguous();
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let src = cpu_f32(&storage, layout)?;
    let hw = h * w;
    let (mut out, start) = aligned(src.len());
    let dst = &mut out[start..];
    // Per image and block, 16 channel rows of the map into its lines, a run of pixels at a time (in cache).
    for (plane, lines) in src.chunks_exact(LANES * hw).zip(dst.chunks_exact_mut(LANES * hw)) {
        for p0 in (0..hw).step_by(RUN) {
            let p1 = (p0 + RUN).min(hw);
            for (l, row) in plane.chunks_exact(hw).enumerate() {
                for (p, &v) in row[p0..p1].iter().enumerate() {
                    lines[(p0 + p) * LANES + l] = v;
                }
            }
        }
    }
    drop(storage);
    into_tensor(out, start, [n, c / LANES, h, w, LANES])
}

/// (N, C/16, H, W, 16) -> (N, C, H, W), contiguous.
pub fn from_blocked(x: &Tensor) -> Result<Tensor> {
    let &[n, blocks, h, w, LANES] = x.dims() else {
        bail!("from_blocked expects an (N, C/16, H, W, 16) tensor, got {:?}", x.dims())
    };
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x
            .permute((0, 1, 4, 2, 3))?
            .contiguous()?
            .reshape((n, blocks * LANES, h, w));
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let src = cpu_f32(&storage, layout)?;
    let hw = h * w;
    let mut out = vec![0f32; src.len()];
    for (lines, plane) in src.chunks_exact(LANES * hw).zip(out.chunks_exact_mut(LANES * hw)) {
        for p0 in (0..hw).step_by(RUN) {
            let p1 = (p0 + RUN).min(hw);
            for (l, row) in plane.chunks_exact_mut(hw).enumerate() {
                for (p, v) in row[p0..p1].iter_mut().enumerate() {
                    *v = lines[(p0 + p) * LANES + l];
                }
            }
        }
    }
    drop(storage);
    Tensor::from_vec(out, (n, blocks * LANES, h, w), &Device::Cpu)
}

/// Pixels per run of a conversion: 16 rows of this many floats and their lines stay in L1.
const RUN: usize = 128;

/// The f32 values of a contiguous CPU tensor's storage.
fn cpu_f32<'a>(s: &'a Storage, l: &candle_core::Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) => Ok(&data[a..b]),
        _ => bail!("expected a contiguous f32 CPU tensor"),
    }
}

/// A buffer for `len` floats whose data starts on a 64-byte cache line: the vector, and the index the data
/// starts at (the floats before it zero). A line of NCHW16c that straddled two cache lines would take two loads
/// and two stores. The data's values are left to the caller, who must write every one before it is read.
pub(crate) fn aligned(len: usize) -> (Vec<f32>, usize) {
    let mut v: Vec<f32> = Vec::with_capacity(len + LANES - 1);
    let start = v.as_ptr().align_offset(64).min(LANES - 1);
    v.resize(start, 0.0);
    // SAFETY: the capacity holds `start + len` floats; the caller writes the last `len` before reading them
    // (f32 has no invalid values; none is read before it is written).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(start + len)
    };
    (v, start)
}

/// The tensor of `shape` over `v[start..]` (a view that shares `v`, its first value on `v`'s alignment).
pub(crate) fn into_tensor(v: Vec<f32>, start: usize, shape: [usize; 5]) -> Result<Tensor> {
    let len = v.len() - start;
    Tensor::from_vec(v, start + len, &Device::Cpu)?
        .narrow(0, start, len)?
        .reshape(&shape[..])
}

/// `x` in the layout of `like`: converted where the two differ (NCHW16c needs whole channel blocks).
pub(crate) fn like(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    match (is_blocked(x), is_blocked(like)) {
        (false, true) => to_blocked(x),
        (true, false) => from_blocked(x),
        _ => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Every element lands where the layout's formula puts it, and back.
    #[test]
    fn blocks_follow_the_formula() -> Result<()> {
        let (n, c, h, w) = (2, 48, 3, 5);
        let x = Tensor::arange(0f32, (n * c * h * w) as f32, &Device::Cpu)?.reshape((n, c, h, w))?;
        let b = to_blocked(&x)?.flatten_all()?.to_vec1::<f32>()?;
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        let at = (((i * c / LANES + ch / LANES) * h + y) * w + xx) * LANES + ch % LANES;
                        assert_eq!(b[at], (((i * c + ch) * h + y) * w + xx) as f32);
                    }
                }
            }
        }
        let back = from_blocked(&to_blocked(&x)?)?;
        assert_eq!(back.dims(), x.dims());
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    /// Partial blocks and other ranks are errors, not wrong tensors.
    #[test]
    fn partial_blocks_are_refused() -> Result<()> {
        let x = Tensor::zeros((1, 24, 2, 2), candle_core::DType::F32, &Device::Cpu)?;
        assert!(to_blocked(&x).is_err());
        assert!(from_blocked(&x).is_err());
        assert!(to_blocked(&x.flatten_all()?).is_err());
        Ok(())
    }

    #[test]
    fn names_round_trip() {
        for l in Layout::ALL {
            assert_eq!(Layout::from_name(l.name()), Some(l));
        }
        assert_eq!(Layout::from_name("NCHW16C"), Some(Layout::Nchw16c));
        assert_eq!(Layout::from_name("nhwc"), None);
    }
}
