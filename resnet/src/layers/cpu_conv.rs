//! The CPU inference convolution: a matrix product per tile of each image's output ([`super::engine`]: our
//! AVX-512/AVX2 micro-kernels, or `gemm` on other CPUs) over the input read in place, packed straight from
//! the image (implicit GEMM) or unfolded by im2col, with the bias, the residual add and the ReLU fused in,
//! as a Candle custom op.
//!
//! Candle's own CPU `conv2d` repacks the input to NHWC single-threaded and re-lays the weights on every
//! call, and the bias, residual add and ReLU that follow are each a full pass with a fresh allocation.
//! Here the OIHW weight is already the (out, in/groups * k * k) row-major GEMM operand the kernel wants
//! (read in place, BatchNorm folded in at load); activations stay NCHW, so a 1x1 stride-1 convolution
//! reads the input in place as the right-hand GEMM operand. On our micro-kernels (AVX-512, AVX2, int8)
//! 3x3 / 7x7 / strided convolutions of stride 1 or 2 are implicit GEMMs: the engine packs its strips of the
//! unfolded operand straight from the image (`engine::implicit`), so the unfolded copy never exists.
//! Elsewhere (the portable engine, groups, dilation, stride 3+) they unfold it band by band into a
//! reused per-thread buffer small enough to stay in L2. The engine applies the bias, residual and ReLU as
//! it stores each tile. Stride-1 3x3 convolutions up to 256 x 256 channels are instead lowered to Winograd's
//! F(2x2, 3x3) or, on AVX-512 up to 128 x 128 channels, F(4x4, 3x3) on the same micro-kernels
//! (`engine::winograd`, [`Lowering`]), their weights held as the same
//! panels and transformed as the conv runs; on AVX-512 a thin strided stem (3 input channels, stride 2) runs
//! as a direct convolution on the same panels (`engine::direct`). A residual block's strided first conv and
//! its 1x1 projection shortcut, which reads one of its taps, run on one packed input
//! ([`PackedConv::forward_shared`], `engine::twin`).
//!
//! Threads: the work of one pass is cut into tasks on rayon's pool (the process's one pool, sized by
//! `zoo --threads N` or `RAYON_NUM_THREADS`, or the pool a caller runs the model in with
//! `ThreadPool::install`): images at batch > 1 (and, with fewer images than threads, each image's tiles
//! too); at batch 1, bands of output pixels, or blocks of output channels for maps too small to band.
//! Several models run from a caller's own threads share that pool, so they never put more threads on the
//! cores than it has. A model's forward pass runs as one [`crate::pass::pass`], which keeps the pool's other
//! threads at hand between the convs.
//!
//! Only used for f32 tensors on the CPU in inference (folded BatchNorm); every other case goes through
//! Candle's generic ops, which keep autograd and the CUDA/Metal backends.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::blocked::{self as layout, Layout as ActLayout, LANES};
use super::conv::ConvSpec;
#[cfg(target_arch = "x86_64")]
use super::engine::direct;
use super::engine::implicit::Implicit;
use super::engine::twin::Twin;
#[cfg(target_arch = "x86_64")]
use super::engine::{nchw16c, winograd16};
use super::engine::{
    reduced, winograd, with_buffer, Bf16Kernel, Engine, Epilogue, Gemm, Int8Kernel, Lhs, Lowering, MicroKernel,
};

/// Weights and bias of one convolution, laid out once, at load, for its [`Engine`].
pub struct PackedConv {
    spec: ConvSpec,
    weights: Weights,
    /// One per output channel (zeros when the conv has none).
    bias: Vec<f32>,
    /// Who multiplies: [`Engine::current`] when built, unless given to [`PackedConv::with_engine`].
    engine: Engine,
    /// Statistics of the inputs, while calibrating for int8 ([`PackedConv::observe`]).
    observer: std::sync::Mutex<Option<super::quant::Observer>>,
    /// For an int8 conv (on the int8 kernel or its f32 fallback), how its inputs are quantized.
    int8: Option<super::quant::ActQuant>,
}

/// The weights in the layout the engine reads.
enum Weights {
    /// OIHW f32, contiguous (the portable engine): read in place as the (out, in/groups * k * k)
    /// row-major left GEMM operand, whose column order (c, i, j) is im2col's row order. Shares its buffer
    /// with the model's weight tensor, so the weights are held in memory once.
    Oihw(Tensor),
    /// The micro-kernels' layout: per group, panels of `rows` output channels over the whole depth, step
    /// `k` of row `i` at `k * rows + i` (zero past the group's last channel). Replaces the OIHW copy (the
    /// model keeps none), so the weights are held once here too.
    Panels { data: Vec<f32>, rows: usize },
    /// The same panels in bf16, depth steps in pairs ([`super::engine::reduced::bf16_panels`]): half the
    /// memory; multiplied by AVX512-BF16 dot products where the CPU has them, else widened to f32.
    Bf16 { data: Vec<u32>, rows: usize, dot: bool },
    /// bf16 OIHW rows padded to `kpad` steps, for the AMX kernel (channels per group a multiple of 16).
    Bf16Rows { data: Vec<u16>, kpad: usize },
    /// int8 OIHW rows padded to `kpad` bytes, per-channel scales, and how inputs are quantized (AMX-INT8 or
    /// AVX512-VNNI).
    Int8(Box<Int8Weights>),
    /// The f32 panels' layout in f16, widened to f32 block by block as the kernel goes.
    F16 { data: Vec<u16>, rows: usize },
    /// A 3x3 stride-1 conv lowered to Winograd's F(2x2, 3x3) or F(4x4, 3x3) (`engine::winograd`): the same f32
    /// panels as `Panels`, each transformed as the conv runs.
    Winograd {
        data: Vec<f32>,
        rows: usize,
        tile: winograd::Tile,
    },
    /// A thin strided stem run as a direct convolution (`engine::direct`, on AVX-512): the same f32 panels.
    Direct { data: Vec<f32>, rows: usize },
    /// A conv for activations in NCHW16c (`engine::nchw16c`, on AVX-512; see [`ActLayout::Nchw16c`]): f32 panels
    /// of [`LANES`] output channels over the depth, from `data[start]` on (a 64-byte boundary); a stride-1 3x3
    /// lowered to Winograd's F(m x m, 3x3) where `winograd` is `Some(m)` (`engine::winograd16`).
    Blocked {
        data: Vec<f32>,
        start: usize,
        winograd: Option<usize>,
    },
}

/// A conv's int8 weights and the constants that turn its i32 sums back into f32 (see `engine::int8`).
struct Int8Weights {
    /// Each row's depth in OIHW's (channel, tap) order, or (tap, channel) where [`tap_major`] says so.
    data: Vec<i8>,
    kpad: usize,
    /// Per output channel: the weights' scale `s_w`.
    w_scale: Vec<f32>,
    /// Per output channel: `s_x * s_w`.
    mul: Vec<f32>,
    /// Per output channel: `z * sum_k q_w`.
    zw: Vec<i32>,
    act: super::quant::ActQuant,
    /// AMX-INT8 or AVX512-VNNI (never [`Int8Kernel::Dequantized`]: those weights are f32 panels).
    kernel: Int8Kernel,
}

impl std::fmt::Debug for PackedConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv")
            .field("spec", &self.spec)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl PackedConv {
    /// Takes an OIHW f32 CPU weight and an optional bias, for [`Engine::current`].
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, spec: ConvSpec) -> Result<Self> {
        Self::with_engine(weight, bias, spec, Engine::current())
    }

    /// The same for `engine` (one this CPU supports; else the portable one).
    pub fn with_engine(weight: &Tensor, bias: Option<&Tensor>, spec: ConvSpec, engine: Engine) -> Result<Self> {
        let engine = Self::engine_for(&spec, engine);
        if engine.panel_rows().is_none() {
            return Self::build(Weights::Oihw(weight.contiguous()?.detach()), bias, spec, engine);
        }
        Self::from_vec(weight.flatten_all()?.to_vec1::<f32>()?, bias, spec, engine)
    }

    /// From an OIHW f32 buffer the conv takes over: the micro-kernel engines rearrange it into their
    /// panels in place (one panel's worth of scratch), so loading never holds two copies of a weight.
    /// Convs that [`Lowering::detect`]'s lowering applies to run as Winograd's F(2x2, 3x3) or F(4x4, 3x3) on
    /// those panels.
    pub fn from_vec(oihw: Vec<f32>, bias: Option<&Tensor>, spec: ConvSpec, engine: Engine) -> Result<Self> {
        Self::from_vec_lowered(oihw, bias, spec, engine, Lowering::detect())
    }

    /// [`PackedConv::from_vec`] lowered as `lowering` says (where it applies, on an engine with a
    /// micro-kernel; else as one GEMM).
    pub fn from_vec_lowered(
        oihw: Vec<f32>,
        bias: Option<&Tensor>,
        spec: ConvSpec,
        engine: Engine,
        lowering: Lowering,
    ) -> Result<Self> {
        Self::from_vec_laid(oihw, bias, spec, engine, lowering, ActLayout::current())
    }

    /// [`PackedConv::from_vec_lowered`] for activations in `layout`: under [`ActLayout::Nchw16c`] the convs the
    /// blocked kernels run (on AVX-512) hold their weights for them.
    pub(crate) fn from_vec_laid(
        mut oihw: Vec<f32>,
        bias: Option<&Tensor>,
        spec: ConvSpec,
        engine: Engine,
        lowering: Lowering,
        layout: ActLayout,
    ) -> Result<Self> {
        let engine = Self::engine_for(&spec, engine);
        if oihw.len() != spec.out_channels * spec.depth() {
            bail!("packed conv: {} weight values do not match {spec:?}", oihw.len())
        }
        let weights = match engine.panel_rows() {
            None => {
                let t = Tensor::from_vec(oihw, spec.weight_shape(), &candle_core::Device::Cpu)?;
                Weights::Oihw(t)
            }
            Some(rows) => {
                // Under NCHW16c a conv the blocked kernels run holds panels of a block's 16 channels: every one
                // the direct kernel applies to, its Winograd lowering kept (`winograd16`); not the direct stem
                // (it converts its output).
                let chosen = lowering.choose(&spec, engine);
                #[cfg(target_arch = "x86_64")]
                let blocked = layout == ActLayout::Nchw16c
                    && engine == Engine::Avx512
                    && nchw16c::applies(&spec)
                    && match chosen {
                        Lowering::Gemm => true,
                        Lowering::Winograd | Lowering::Winograd4 => winograd16::applies(&spec),
                        Lowering::Direct => false,
                    };
                #[cfg(not(target_arch = "x86_64"))]
                let blocked = {
                    let _ = (layout, chosen);
                    false
                };
                let rows = if blocked { LANES } else { rows };
                // `engine_for` keeps panels whole within groups, so the panels are consecutive blocks of
                // `rows` output channels: each block's (rows, depth) matrix is transposed in place.
                let kk = spec.depth();
                let mut scratch = vec![0f32; rows * kk];
                for block in oihw.chunks_exact_mut(rows * kk) {
                    scratch.copy_from_slice(block);
                    for (i, row) in scratch.chunks_exact(kk).enumerate() {
                        for (k, &w) in row.iter().enumerate() {
                            block[k * rows + i] = w;
                        }
                    }
                }
                // An engine with panels has a micro-kernel for Winograd's products (`engine_for`: it runs here).
                match chosen {
                    _ if blocked => {
                        // On a cache line, so that no weight vector straddles two.
                        let (mut data, start) = layout::aligned(oihw.len());
                        data[start..].copy_from_slice(&oihw);
                        let winograd = match chosen {
                            Lowering::Winograd4 => Some(4),
                            Lowering::Winograd => Some(2),
                            _ => None,
                        };
                        Weights::Blocked { data, start, winograd }
                    }
                    Lowering::Winograd4 => Weights::Winograd {
                        data: oihw,
                        rows,
                        tile: winograd::Tile::F4,
                    },
                    Lowering::Winograd => Weights::Winograd {
                        data: oihw,
                        rows,
                        tile: winograd::Tile::F2,
                    },
                    Lowering::Direct => Weights::Direct { data: oihw, rows },
                    Lowering::Gemm => Weights::Panels { data: oihw, rows },
                }
            }
        };
        Self::build(weights, bias, spec, engine)
    }

    /// [`PackedConv::from_vec`] with the weights held in `dtype`: f32, or bf16 / f16 (rounded to nearest, half
    /// the memory; products and sums in f32, see [`Engine::bf16_dot`]). Reduced precision needs a
    /// micro-kernel engine's panels: where the conv gets the portable engine (a CPU without AVX2, thin
    /// groups) its weights stay f32 ([`PackedConv::dtype`] says which).
    pub fn from_vec_as(
        oihw: Vec<f32>,
        bias: Option<&Tensor>,
        spec: ConvSpec,
        engine: Engine,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_vec_with(oihw, bias, spec, engine, dtype, Bf16Kernel::detect())
    }

    /// [`PackedConv::from_vec_as`] with bf16 weights multiplied by `kernel` (where it applies: AMX needs
    /// output channels per group in multiples of 16 and the AVX-512 engine, dot products the AVX-512
    /// engine; otherwise the weights are widened).
    pub fn from_vec_with(
        oihw: Vec<f32>,
        bias: Option<&Tensor>,
        spec: ConvSpec,
        engine: Engine,
        dtype: DType,
        kernel: Bf16Kernel,
    ) -> Result<Self> {
        let engine = Self::engine_for(&spec, engine);
        let rows = match (dtype, engine.panel_rows()) {
            (DType::BF16 | DType::F16, Some(rows)) => rows,
            (DType::F32 | DType::BF16 | DType::F16, _) => return Self::from_vec(oihw, bias, spec, engine),
            (other, _) => bail!("packed conv: weights cannot be held in {other:?} (f32, bf16 or f16)"),
        };
        let k = spec.depth();
        if oihw.len() != spec.out_channels * k {
            bail!("packed conv: {} weight values do not match {spec:?}", oihw.len())
        }
        let og = spec.out_channels / spec.groups.max(1);
        let avx512 = engine == Engine::Avx512;
        let weights = match dtype {
            #[cfg(target_arch = "x86_64")]
            DType::BF16 if kernel == Bf16Kernel::Amx && kernel.is_supported() && avx512 && og.is_multiple_of(16) => {
                let kpad = k.div_ceil(32) * 32;
                Weights::Bf16Rows {
                    data: reduced::bf16_rows(&oihw, k, kpad),
                    kpad,
                }
            }
            DType::BF16 => Weights::Bf16 {
                data: reduced::bf16_panels(&oihw, k, rows),
                rows,
                dot: kernel == Bf16Kernel::Dot && kernel.is_supported() && avx512,
            },
            _ => Weights::F16 {
                data: reduced::f16_panels(&oihw, k, rows),
                rows,
            },
        };
        drop(oihw);
        Self::build(weights, bias, spec, engine)
    }

    /// The kernel that multiplies this conv's bf16 weights (`None`: they are not bf16).
    pub fn bf16_kernel(&self) -> Option<Bf16Kernel> {
        match self.weights {
            Weights::Bf16Rows { .. } => Some(Bf16Kernel::Amx),
            Weights::Bf16 { dot: true, .. } => Some(Bf16Kernel::Dot),
            Weights::Bf16 { dot: false, .. } => Some(Bf16Kernel::Widen),
            _ => None,
        }
    }

    /// Output channels a row tile starts on a multiple of: the A tile (16) or the weight panel.
    fn row_step(&self) -> usize {
        match self.weights {
            Weights::Bf16Rows { .. } | Weights::Int8(_) => 16,
            _ => self.engine.panel_rows().unwrap_or(8),
        }
    }

    /// The dtype the weights are held in.
    pub fn dtype(&self) -> DType {
        match self.weights {
            Weights::Oihw(_)
            | Weights::Panels { .. }
            | Weights::Winograd { .. }
            | Weights::Direct { .. }
            | Weights::Blocked { .. } => DType::F32,
            Weights::Bf16 { .. } | Weights::Bf16Rows { .. } => DType::BF16,
            // Candle has no i8: an int8 conv reports the one 8-bit dtype it has.
            Weights::Int8(_) => DType::U8,
            Weights::F16 { .. } => DType::F16,
        }
    }

    /// `engine`, unless this CPU cannot run it or the conv's groups do not fill whole weight panels (ResNeXt's
    /// 4-channel groups would be half zeros: twice the memory and work); then the portable engine, whose
    /// `gemm` takes any shape.
    fn engine_for(spec: &ConvSpec, engine: Engine) -> Engine {
        let og = spec.out_channels / spec.groups.max(1);
        let whole = engine.panel_rows().is_none_or(|rows| og.is_multiple_of(rows));
        if engine.is_supported() && whole {
            engine
        } else {
            Engine::Portable
        }
    }

    fn build(weights: Weights, bias: Option<&Tensor>, spec: ConvSpec, engine: Engine) -> Result<Self> {
        let bias = match bias {
            Some(b) => b.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; spec.out_channels],
        };
        let count = match &weights {
            Weights::Oihw(t) => t.elem_count(),
            Weights::Panels { data, .. } => data.len(),
            Weights::F16 { data, .. } => data.len(),
            Weights::Bf16 { .. } => spec.out_channels * spec.depth(),
            Weights::Bf16Rows { data, kpad } => data.len() / kpad.max(&1) * spec.depth(),
            Weights::Int8(w) => w.data.len() / w.kpad.max(1) * spec.depth(),
            Weights::Winograd { data, .. } | Weights::Direct { data, .. } => data.len(),
            Weights::Blocked { data, start, .. } => data.len() - start,
        };
        if count != spec.out_channels * spec.depth() || bias.len() != spec.out_channels {
            bail!("packed conv: weight/bias do not match {spec:?}")
        }
        Ok(Self {
            spec,
            weights,
            bias,
            engine,
            observer: std::sync::Mutex::new(None),
            int8: None,
        })
    }

    /// An int8 conv from f32 OIHW weights: quantized per output channel, inputs quantized with `act`, on
    /// [`Int8Kernel::detect`]'s kernel (see [`PackedConv::from_vec_int8_with`]).
    pub fn from_vec_int8(
        oihw: Vec<f32>,
        bias: Option<&Tensor>,
        spec: ConvSpec,
        act: super::quant::ActQuant,
    ) -> Result<Self> {
        Self::from_vec_int8_with(oihw, bias, spec, act, Int8Kernel::detect())
    }

    /// [`PackedConv::from_vec_int8`] on a given int8 kernel. Where it does not apply (the CPU lacks it,
    /// it is [`Int8Kernel::Dequantized`], output channels per group are not a multiple of 16, or the
    /// engine is not AVX-512) the weights are the dequantized int8 values in f32, multiplied in f32
    /// ([`PackedConv::int8_kernel`] tells which).
    pub fn from_vec_int8_with(
        oihw: Vec<f32>,
        bias: Option<&Tensor>,
        spec: ConvSpec,
        act: super::quant::ActQuant,
        kernel: Int8Kernel,
    ) -> Result<Self> {
        let k = spec.depth();
        if oihw.len() != spec.out_channels * k {
            bail!("packed conv: {} weight values do not match {spec:?}", oihw.len())
        }
        let kpad = k.div_ceil(64) * 64;
        let (data, w_scale, sums) = reduced::quantize_int8(&oihw, k, kpad);
        let engine = Self::engine_for(&spec, Engine::current());
        let og = spec.out_channels / spec.groups.max(1);
        if !(kernel.is_integer() && kernel.is_supported() && engine == Engine::Avx512 && og.is_multiple_of(16)) {
            // The values the int8 weights stand for, in f32.
            let mut deq = oihw;
            for (o, row) in deq.chunks_exact_mut(k.max(1)).enumerate() {
                let q = &data[o * kpad..o * kpad + k];
                row.iter_mut().zip(q).for_each(|(w, &q)| *w = f32::from(q) * w_scale[o]);
            }
            let mut conv = Self::from_vec(deq, bias, spec, engine)?;
            conv.int8 = Some(act);
            return Ok(conv);
        }
        let mul = w_scale.iter().map(|s| s * act.scale).collect();
        let zw = sums.iter().map(|s| s * i32::from(act.zero)).collect();
        let mut data = data;
        if tap_major(&spec) {
            let mut row = vec![0i8; k];
            for dst in data.chunks_exact_mut(kpad) {
                row.copy_from_slice(&dst[..k]);
                for (i, &w) in row.iter().enumerate() {
                    dst[tap_major_index(i, &spec)] = w;
                }
            }
        }
        let weights = Weights::Int8(Box::new(Int8Weights {
            data,
            kpad,
            w_scale,
            mul,
            zw,
            act,
            kernel,
        }));
        let mut conv = Self::build(weights, bias, spec, engine)?;
        conv.int8 = Some(act);
        Ok(conv)
    }

    /// For an int8 conv, the kernel that multiplies it ([`Int8Kernel::Dequantized`] where its dequantized
    /// weights are multiplied in f32); `None` for other convs.
    pub fn int8_kernel(&self) -> Option<Int8Kernel> {
        match (&self.weights, self.int8) {
            (Weights::Int8(w), _) => Some(w.kernel),
            (_, Some(_)) => Some(Int8Kernel::Dequantized),
            _ => None,
        }
    }

    /// For a conv built by [`PackedConv::from_vec_int8`], how its inputs are quantized.
    pub fn int8_quant(&self) -> Option<super::quant::ActQuant> {
        self.int8
    }

    /// True when the conv multiplies int8 weights by int8 activations.
    pub fn is_int8(&self) -> bool {
        matches!(self.weights, Weights::Int8(_))
    }

    /// Starts recording statistics of this conv's inputs (calibration for int8): their range, and with
    /// `histogram = Some(max)` also a histogram of `|x|` over `[0, max]`. `None` stops and returns what was
    /// recorded.
    pub fn observe(&self, histogram: Option<Option<f32>>) -> Option<super::quant::Observer> {
        let mut guard = self.observer.lock().unwrap_or_else(|e| e.into_inner());
        match histogram {
            Some(h) => {
                *guard = Some(super::quant::Observer::new(h));
                None
            }
            None => guard.take(),
        }
    }

    /// How the conv is lowered onto matrix products.
    pub fn lowering(&self) -> Lowering {
        match self.weights {
            Weights::Winograd {
                tile: winograd::Tile::F2,
                ..
            } => Lowering::Winograd,
            Weights::Winograd {
                tile: winograd::Tile::F4,
                ..
            } => Lowering::Winograd4,
            Weights::Direct { .. } => Lowering::Direct,
            Weights::Blocked { winograd: Some(4), .. } => Lowering::Winograd4,
            Weights::Blocked { winograd: Some(_), .. } => Lowering::Winograd,
            _ => Lowering::Gemm,
        }
    }

    /// The layout this conv computes in: [`ActLayout::Nchw16c`] for a conv held for the blocked kernel (it
    /// converts an NCHW input, and its output back), else [`ActLayout::Nchw`] (it converts an NCHW16c input, and
    /// its output back where its channels are whole blocks).
    pub fn layout(&self) -> ActLayout {
        match self.weights {
            Weights::Blocked { .. } => ActLayout::Nchw16c,
            _ => ActLayout::Nchw,
        }
    }

    /// True when the weights live only here (packed for a micro-kernel), not in an OIHW tensor too.
    pub fn owns_weights(&self) -> bool {
        !matches!(self.weights, Weights::Oihw(_))
    }

    /// The weights as an OIHW tensor in [`PackedConv::dtype`] (the shared one, or unpacked from the panels).
    pub fn weight(&self) -> Result<Tensor> {
        let s = &self.spec;
        let (m, k) = (s.out_channels, s.depth());
        let reduced = |oihw: Vec<f32>| {
            Tensor::from_vec(oihw, s.weight_shape(), &candle_core::Device::Cpu)?.to_dtype(self.dtype())
        };
        // f32 panels of `rows` output channels over the depth, back to OIHW rows.
        let unpanel = |data: &[f32], rows: usize| {
            let mut oihw = vec![0f32; m * k];
            for o in 0..m {
                let panel = &data[(o / rows) * rows * k..];
                for (i, w) in oihw[o * k..(o + 1) * k].iter_mut().enumerate() {
                    *w = panel[i * rows + o % rows];
                }
            }
            Tensor::from_vec(oihw, s.weight_shape(), &candle_core::Device::Cpu)
        };
        match &self.weights {
            Weights::Oihw(t) => Ok(t.clone()),
            Weights::Bf16 { data, rows, .. } => reduced(reduced::bf16_unpanel(data, m, k, *rows)),
            Weights::Bf16Rows { data, kpad } => reduced(reduced::bf16_unrows(data, m, k, *kpad)),
            // The values the int8 weights stand for, in f32.
            Weights::Int8(w) => {
                let mut oihw = vec![0f32; m * k];
                let reordered = tap_major(s);
                for (o, row) in oihw.chunks_exact_mut(k.max(1)).enumerate() {
                    let q = &w.data[o * w.kpad..o * w.kpad + k];
                    for (i, v) in row.iter_mut().enumerate() {
                        let at = if reordered { tap_major_index(i, s) } else { i };
                        *v = f32::from(q[at]) * w.w_scale[o];
                    }
                }
                Tensor::from_vec(oihw, s.weight_shape(), &candle_core::Device::Cpu)
            }
            Weights::F16 { data, rows } => reduced(reduced::f16_unpanel(data, m, k, *rows)),
            Weights::Panels { data, rows } | Weights::Winograd { data, rows, .. } | Weights::Direct { data, rows } => {
                unpanel(data, *rows)
            }
            Weights::Blocked { data, start, .. } => unpanel(&data[*start..], LANES),
        }
    }

    /// `relu?(conv(x) + bias + residual?)` for a contiguous-or-not f32 CPU tensor `x` (N, C, H, W); for a
    /// conv on an int8 kernel ([`PackedConv::is_int8`]) `x` may also be u8, taken as already quantized
    /// the way this conv quantizes its inputs ([`PackedConv::int8_quant`]), as
    /// [`PackedConv::forward_added_emitting`] leaves them.
    pub fn forward(self: &Arc<Self>, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        self.forward_op(x, residual, relu, None)
    }

    /// `relu?(conv(x) + bias + residual?)` handed straight to `next`: where both convs are on an int8
    /// kernel the output is u8, quantized the way `next` quantizes its inputs (the bytes `next` would make of
    /// the f32 output, a quarter of the memory, no second pass), else f32 as [`PackedConv::forward`].
    pub fn forward_added_emitting(
        self: &Arc<Self>,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        next: &PackedConv,
    ) -> Result<Tensor> {
        let emit = match (&self.weights, &next.weights, next.int8) {
            (Weights::Int8(_), Weights::Int8(_), Some(act)) => Some(act),
            _ => None,
        };
        self.forward_op(x, residual, relu, emit)
    }

    /// True when this conv runs [`PackedConv::forward_pooled`] as one kernel: a direct conv
    /// ([`Lowering::Direct`], a stem's), whose tasks pool the rows they compute.
    pub fn pools_fused(&self) -> bool {
        matches!(self.weights, Weights::Direct { .. })
    }

    /// `maxpool3x3s2(relu?(conv(x) + bias))`, the max-pool of kernel 3, stride 2 and padding 1 (ResNet's after
    /// its stem), for an f32 CPU tensor `x` (N, C, H, W), fused where [`PackedConv::pools_fused`] (the conv's
    /// map is never written out); else the conv, then the pool.
    pub fn forward_pooled(self: &Arc<Self>, x: &Tensor, relu: bool) -> Result<Tensor> {
        if !self.pools_fused() || x.dtype() != DType::F32 {
            return super::pool::max_pool_3x3_s2(&self.forward(x, None, relu)?);
        }
        let op = ConvOp {
            packed: self.clone(),
            relu,
            emit: None,
            pool: true,
            twin: None,
        };
        x.contiguous()?.apply_op1_no_bwd(&op)
    }

    /// True when this conv and `twin` can run on one packed input ([`PackedConv::forward_shared`]) for inputs of
    /// `dims` (N, C, H, W): `twin` is an ungrouped undilated 1x1 of the same stride and input channels, without
    /// padding, whose every pixel is one tap of this conv (an implicit GEMM: stride 1 or 2, ungrouped,
    /// undilated, padding under the kernel) on maps of the same size; both hold f32 panels for the same
    /// micro-kernel and are not int8 convs; and at this batch both leave their images' last columns to a product
    /// over the batch alike (see `batched_remainder`). ResNet-18/34's strided 3x3 and 1x1 projection: yes.
    pub fn shares_input(&self, twin: &PackedConv, (n, c, h, w): (usize, usize, usize, usize)) -> bool {
        let (s, t) = (&self.spec, &twin.spec);
        let panels = match (&self.weights, &twin.weights) {
            (Weights::Panels { rows: a, .. }, Weights::Panels { rows: b, .. }) => a == b,
            _ => false,
        };
        let one_tap = t.kernel == 1 && t.padding == 0 && t.groups == 1 && t.dilation == 1;
        let beside = t.stride == s.stride && t.in_channels == s.in_channels && c == s.in_channels;
        let implicit = self.implicit_gemm() && !(s.kernel == 1 && s.stride == 1 && s.padding == 0);
        let sized = h + 2 * s.padding >= s.kernel
            && w + 2 * s.padding >= s.kernel
            && s.padding < s.kernel
            && s.output_size(h) == t.output_size(h)
            && s.output_size(w) == t.output_size(w);
        let p = s.output_size(h) * s.output_size(w);
        panels
            && one_tap
            && beside
            && implicit
            && sized
            && self.engine == twin.engine
            && self.engine.micro_kernel().is_some()
            && self.int8.is_none()
            && twin.int8.is_none()
            && self.batched_remainder(n, p, None) == twin.batched_remainder(n, p, None)
    }

    /// `(relu?(conv(x) + bias), twin(x) + twin's bias)` for an f32 CPU tensor `x` (N, C, H, W), the two convs
    /// on one packed input where [`PackedConv::shares_input`] (`engine::twin`: the twin's operand is copied
    /// out of this conv's as it is packed, not gathered from the image again); `None` where it does not. Each
    /// output is the one its conv gives alone, to the bit.
    pub fn forward_shared(
        self: &Arc<Self>,
        x: &Tensor,
        twin: &Arc<PackedConv>,
        relu: bool,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let &[n, c, h, w] = x.dims() else {
            return Ok(None);
        };
        if x.dtype() != DType::F32 || !self.shares_input(twin, (n, c, h, w)) {
            return Ok(None);
        }
        let op = ConvOp {
            packed: self.clone(),
            relu,
            emit: None,
            pool: false,
            twin: Some(twin.clone()),
        };
        let both = x.contiguous()?.apply_op1_no_bwd(&op)?;
        let (oh, ow) = (self.spec.output_size(h), self.spec.output_size(w));
        let (mine, its) = (self.spec.out_channels, twin.spec.out_channels);
        // One buffer, this conv's output then the twin's: two contiguous views of it.
        let y = both.narrow(0, 0, n * mine * oh * ow)?.reshape((n, mine, oh, ow))?;
        let t = both
            .narrow(0, n * mine * oh * ow, n * its * oh * ow)?
            .reshape((n, its, oh, ow))?;
        Ok(Some((y, t)))
    }

    fn forward_op(
        self: &Arc<Self>,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        emit: Option<super::quant::ActQuant>,
    ) -> Result<Tensor> {
        // The output takes the input's layout: a conv computes in its own (`layout`), converting around itself
        // where the input's differs (an NCHW16c output needs whole blocks of output channels; else it is NCHW).
        let blocked_in = layout::is_blocked(x);
        if let Weights::Blocked { .. } = self.weights {
            if emit.is_some() {
                bail!("a conv held for NCHW16c hands on f32 only")
            }
            let x = if blocked_in { x.clone() } else { layout::to_blocked(x)? };
            let residual = residual.map(|r| layout::like(r, &x)).transpose()?;
            let y = self.forward_blocked(&x, residual.as_ref(), relu)?;
            return if blocked_in { Ok(y) } else { layout::from_blocked(&y) };
        }
        if blocked_in {
            let x = layout::from_blocked(x)?;
            let residual = residual.map(|r| layout::like(r, &x)).transpose()?;
            let y = self.forward_op(&x, residual.as_ref(), relu, emit)?;
            return match y.dtype() == DType::F32 && self.spec.out_channels.is_multiple_of(LANES) {
                true => layout::to_blocked(&y),
                false => Ok(y),
            };
        }
        let residual = residual.map(|r| layout::like(r, x)).transpose()?;
        let residual = residual.as_ref();
        let op = ConvOp {
            packed: self.clone(),
            relu,
            emit,
            pool: false,
            twin: None,
        };
        let x = x.contiguous()?;
        match residual {
            None => x.apply_op1_no_bwd(&op),
            Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op),
        }
    }

    /// The conv on NCHW16c: `x` (N, C/16, H, W, 16), `residual` (if any) the output's shape; the output's lines
    /// start on cache lines ([`layout::aligned`]).
    fn forward_blocked(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let residual = residual.map(|r| r.to_dtype(DType::F32)?.contiguous()).transpose()?;
        let (xs, xl) = x.storage_and_layout();
        let held = residual.as_ref().map(|r| r.storage_and_layout());
        let r = match &held {
            Some((rs, rl)) => Some((cpu_f32(rs, rl)?, rl.dims())),
            None => None,
        };
        self.run_blocked(cpu_f32(&xs, xl)?, xl.dims(), r, relu)
    }

    /// [`PackedConv::forward_blocked`] on one batch: `x` and `residual` (with its dims) in NCHW16c, `dims` the
    /// input's.
    fn run_blocked(
        &self,
        x: &[f32],
        dims: &[usize],
        residual: Option<(&[f32], &[usize])>,
        relu: bool,
    ) -> Result<Tensor> {
        let Weights::Blocked {
            data,
            start: w0,
            winograd,
        } = &self.weights
        else {
            bail!("only a conv held for NCHW16c runs on it")
        };
        let s = &self.spec;
        let &[n, blocks, h, w, LANES] = dims else {
            bail!("a conv on NCHW16c expects an (N, C/16, H, W, 16) input, got {dims:?}")
        };
        if blocks * LANES != s.in_channels {
            bail!("conv expects {} input channels, got {}", s.in_channels, blocks * LANES)
        }
        let reach = (s.kernel - 1) * s.dilation + 1;
        if h + 2 * s.padding < reach || w + 2 * s.padding < reach {
            bail!("conv input {h}x{w} smaller than the kernel")
        }
        let (oh, ow) = (s.output_size(h), s.output_size(w));
        let shape = [n, s.out_channels / LANES, oh, ow, LANES];
        if let Some((_, d)) = residual {
            if d != shape {
                bail!("residual of shape {d:?} does not match the conv output {shape:?}")
            }
        }
        let len = n * s.out_channels * oh * ow;
        if x.len() != n * s.in_channels * h * w {
            bail!("conv input does not match its shape")
        }
        if let Some(o) = self.observer.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            o.record(x);
        }
        let (mut out, start) = layout::aligned(len);
        #[cfg(target_arch = "x86_64")]
        {
            let (g, r, threads) = (&data[*w0..], residual.map(|r| r.0), rayon::current_num_threads());
            // SAFETY: the kernels write every output value (`aligned` leaves them to them) before anything reads
            // them; blocked weights exist only on the AVX-512 engine, which runs on this CPU (`engine_for`); the
            // shapes are checked above.
            unsafe {
                let dst = out.as_mut_ptr().add(start);
                match *winograd {
                    Some(m) => winograd16::Winograd16 {
                        g,
                        bias: &self.bias,
                        in_channels: s.in_channels,
                        out_channels: s.out_channels,
                        hw: (h, w),
                        relu,
                        m,
                    }
                    .run(x, n, r, dst, threads),
                    None => nchw16c::Conv16 {
                        w: g,
                        bias: &self.bias,
                        spec: *s,
                        hw: (h, w),
                        relu,
                    }
                    .run(x, n, r, dst, threads),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (data, w0, winograd, relu, &mut out);
            bail!("convs on NCHW16c run on x86-64 only")
        }
        layout::into_tensor(out, start, shape)
    }

    fn out_shape(&self, dims: &[usize]) -> Result<(usize, usize, usize, usize)> {
        let s = &self.spec;
        let &[n, c, h, w] = dims else {
            bail!("conv expects a 4-D input, got {dims:?}")
        };
        if c != s.in_channels {
            bail!("conv expects {} input channels, got {c}", s.in_channels)
        }
        if h + 2 * s.padding < s.kernel || w + 2 * s.padding < s.kernel {
            bail!("conv input {h}x{w} smaller than the kernel")
        }
        Ok((n, s.out_channels, s.output_size(h), s.output_size(w)))
    }

    /// This conv as a direct convolution of its panels `w` (`rows` output channels each) over inputs of
    /// `chw`, max-pooled as it goes where `pool`.
    #[cfg(target_arch = "x86_64")]
    fn direct<'a>(
        &'a self,
        w: &'a [f32],
        rows: usize,
        relu: bool,
        chw: (usize, usize, usize),
        pool: bool,
    ) -> direct::Conv<'a> {
        debug_assert_eq!(rows, direct::MR, "weights packed for another micro-kernel");
        let s = &self.spec;
        direct::Conv {
            w,
            bias: &self.bias,
            relu,
            chw,
            out_channels: s.out_channels,
            kernel: s.kernel,
            padding: s.padding,
            pool,
        }
    }

    /// [`PackedConv::forward_pooled`]'s fused kernel on one batch (dims of the input): the pooled output.
    fn run_pooled(&self, x: Input, (n, c, h, w): (usize, usize, usize, usize), relu: bool) -> Result<CpuStorage> {
        let (Weights::Direct { data, rows }, Input::F32(x)) = (&self.weights, x) else {
            bail!("only a direct conv on f32 inputs pools as it goes")
        };
        if let Some(o) = self.observer.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            o.record(x);
        }
        let s = &self.spec;
        let (oh, ow) = (s.output_size(h), s.output_size(w));
        let out_img = s.out_channels * super::pool::pooled(oh) * super::pool::pooled(ow);
        if x.len() != n * c * h * w {
            bail!("conv input does not match its shape")
        }
        #[cfg(target_arch = "x86_64")]
        {
            let conv = self.direct(data, *rows, relu, (c, h, w), true);
            let mut out = Vec::with_capacity(n * out_img);
            // SAFETY: the fused kernel writes every pooled value (each band every row of every channel,
            // the bands covering the map) before anything reads it; direct weights exist only on the
            // AVX-512 engine (`Lowering::choose`), which runs on this CPU (`engine_for`).
            #[allow(clippy::uninit_vec)]
            unsafe {
                out.set_len(n * out_img);
                conv.run(x, n, None, out.as_mut_ptr(), rayon::current_num_threads());
            }
            Ok(CpuStorage::F32(out))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (data, rows, relu, out_img);
            bail!("direct convs run on x86-64 only")
        }
    }

    /// The conv of a batch (dims of the input), with the residual added before the ReLU, as f32 (or the bytes
    /// `emit` quantizes to); with a `twin` ([`PackedConv::forward_shared`]), its output follows this conv's in the
    /// same buffer.
    fn run(
        &self,
        x: Input,
        (n, c, h, w): (usize, usize, usize, usize),
        residual: Option<&[f32]>,
        relu: bool,
        emit: Option<super::quant::ActQuant>,
        twin: Option<&PackedConv>,
    ) -> Result<CpuStorage> {
        if let Input::F32(x) = x {
            for conv in std::iter::once(self).chain(twin) {
                if let Some(o) = conv.observer.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    o.record(x);
                }
            }
        }
        if let Some(t) = twin {
            if !self.shares_input(t, (n, c, h, w)) || emit.is_some() {
                bail!("{:?} cannot share its packed input with {:?}", self.spec, t.spec)
            }
        }
        if matches!(x, Input::U8(_)) && !matches!(self.weights, Weights::Int8(_)) {
            bail!("the CPU conv kernel takes u8 inputs only into a conv on an int8 kernel")
        }
        if emit.is_some() && !matches!(self.weights, Weights::Int8(_)) {
            bail!("only an int8 conv can hand u8 outputs to the next")
        }
        let guard;
        let weight: &[f32] = match &self.weights {
            Weights::Oihw(t) => {
                guard = t.storage_and_layout();
                let (storage, layout) = (&guard.0, guard.1);
                let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
                    (&**storage, layout.contiguous_offsets())
                else {
                    bail!("packed conv: the weight is not a contiguous f32 CPU tensor")
                };
                &data[start..end]
            }
            Weights::Panels { data, .. } => data,
            // Read by `tile` straight from `self.weights`.
            Weights::Bf16 { .. } | Weights::Bf16Rows { .. } | Weights::F16 { .. } | Weights::Int8(_) => &[],
            // Read by `winograd::Conv` or `direct::Conv` below.
            Weights::Winograd { .. } | Weights::Direct { .. } => &[],
            Weights::Blocked { .. } => bail!("a conv held for NCHW16c runs only on that layout"),
        };
        let s = &self.spec;
        let (oh, ow) = (s.output_size(h), s.output_size(w));
        let (in_img, out_img) = (c * h * w, s.out_channels * oh * ow);
        if x.len() != n * in_img || residual.is_some_and(|r| r.len() != n * out_img) {
            bail!("conv input or residual does not match its shape")
        }
        let twin_img = twin.map_or(0, |t| t.spec.out_channels * oh * ow);
        let (mut out_f32, mut out_u8) = (Vec::new(), Vec::new());
        // SAFETY: every element is written by a tile's GEMM (which does not read it first) before it is read
        // (the twin's by its tiles, see `engine::twin`, and its remainders).
        #[allow(clippy::uninit_vec)]
        let out = unsafe {
            match emit {
                None => {
                    out_f32.reserve_exact(n * (out_img + twin_img));
                    out_f32.set_len(n * (out_img + twin_img));
                }
                Some(_) => {
                    out_u8.reserve_exact(n * out_img);
                    out_u8.set_len(n * out_img);
                }
            }
            OutPtr {
                f32: out_f32.as_mut_ptr(),
                u8: out_u8.as_mut_ptr(),
            }
        };
        let image = |i: usize| {
            (
                x.image(i * in_img, in_img),
                residual.map(|r| &r[i * out_img..(i + 1) * out_img]),
                out.offset(i * out_img),
            )
        };
        let twin_out = out.offset(n * out_img);
        let post = Post {
            relu,
            emit,
            twin: twin.map(|conv| TwinOut { conv, out: twin_out }),
        };
        // The post of image `i`: its twin's output.
        let post_of = |i: usize| post.offset(i * twin_img);
        if let (Weights::Winograd { data, rows, tile }, Input::F32(x)) = (&self.weights, x) {
            let Some(MicroKernel {
                tile: kernel,
                mr,
                nr,
                extra,
            }) = self.engine.micro_kernel()
            else {
                bail!("Winograd weights without a micro-kernel")
            };
            debug_assert_eq!(mr, *rows, "weights packed for another micro-kernel");
            let threads = rayon::current_num_threads();
            let conv = winograd::Conv {
                g: data,
                kernel,
                mr,
                nr,
                extra,
                bias: &self.bias,
                relu,
                chw: (c, h, w),
                out_channels: s.out_channels,
                engine: self.engine,
                tile: tile.for_call(n, (h, w), threads),
            };
            // SAFETY: `out_f32` holds the whole output; the engine's kernel runs on this CPU (`engine_for`).
            unsafe { conv.run(x, n, residual, out.f32, threads) };
            return Ok(CpuStorage::F32(out_f32));
        }
        #[cfg(target_arch = "x86_64")]
        if let (Weights::Direct { data, rows }, Input::F32(x)) = (&self.weights, x) {
            let conv = self.direct(data, *rows, relu, (c, h, w), false);
            // SAFETY: `out_f32` holds the whole output; direct weights exist only on the AVX-512 engine
            // (`Lowering::choose`), which runs on this CPU (`engine_for`).
            unsafe { conv.run(x, n, residual, out.f32, rayon::current_num_threads()) };
            return Ok(CpuStorage::F32(out_f32));
        }
        if let (Some(rem), Input::F32(x)) = (self.batched_remainder(n, oh * ow, emit), x) {
            let main = oh * ow - rem;
            (0..n).into_par_iter().for_each(|i| {
                let (_, res, dst) = image(i);
                let post = post_of(i);
                let src = &x[i * in_img..(i + 1) * in_img];
                let rhs = Rhs {
                    data: match s.kernel == 1 && s.stride == 1 && s.padding == 0 {
                        true => RhsData::F32(src),
                        false => RhsData::ImageF32(src, (h, w)),
                    },
                    stride: oh * ow,
                    first_col: 0,
                };
                let t = Tile {
                    group: 0,
                    rows: (0, s.out_channels),
                    cols: (0, main),
                };
                // SAFETY: images cover disjoint parts of the output; the remainder columns are left to
                // `remainders`.
                unsafe { self.tile(weight, rhs, dst, oh * ow, res, post, t) }
            });
            let alone = Post { twin: None, ..post };
            self.remainders(weight, x, (n, h, w), (oh, ow), rem, residual, out, alone);
            if let Some(t) = twin {
                // The twin's last columns of each image, as it runs them alone (`shares_input` checked it has as
                // many).
                let post = Post {
                    relu: false,
                    emit: None,
                    twin: None,
                };
                t.remainders(t.panels(), x, (n, h, w), (oh, ow), rem, None, twin_out, post);
            }
            return Ok(CpuStorage::F32(out_f32));
        }
        if n == 1 || rayon::current_num_threads() == 1 {
            // Too few images to go around: split each image's output into tiles across the threads.
            for i in 0..n {
                let (src, res, dst) = image(i);
                self.run_image(weight, src, (c, h, w), (oh, ow), dst, res, post_of(i), true);
            }
        } else {
            // An image per task; with fewer images than threads (a batch of 8 on a 16-64-core server) each
            // image's tiles are spread over the pool too, nested in its task, so that every thread has work.
            let split = n < rayon::current_num_threads();
            (0..n).into_par_iter().for_each(|i| {
                let (src, res, dst) = image(i);
                self.run_image(weight, src, (c, h, w), (oh, ow), dst, res, post_of(i), split);
            });
        }
        Ok(match emit {
            None => CpuStorage::F32(out_f32),
            Some(_) => CpuStorage::U8(out_u8),
        })
    }

    /// The columns each image of a batch of `n` leaves to one product over the whole batch ([`remainders`]):
    /// a conv multiplied from its input as it is (a 1x1 stride-1 conv, or an implicit GEMM) on our AVX-512
    /// kernel (f32, bf16 or f16 panels, f32 output) whose `p` output pixels per image are whole strips but
    /// for at most [`avx512::NARROW`] (a 14x14 map's last 4, a 7x7 map's 49th). One image at a time, those columns are a thin product that runs at a quarter to a half
    /// of the kernel's speed (the narrow kernel, vectorised over 8 output channels); gathered over a batch
    /// they fill whole vectors (8 images of a 14x14 map: 32 columns). `None` for one image, one thread, fewer
    /// images than threads, or where the images' columns are whole strips already.
    ///
    /// [`remainders`]: PackedConv::remainders
    /// [`avx512::NARROW`]: super::engine::avx512::NARROW
    fn batched_remainder(&self, n: usize, p: usize, emit: Option<super::quant::ActQuant>) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            let s = &self.spec;
            let direct = s.kernel == 1 && s.stride == 1 && s.padding == 0 && s.groups == 1;
            let gemm = direct || self.implicit_gemm();
            let panels = matches!(
                self.weights,
                Weights::Panels { .. } | Weights::Bf16 { .. } | Weights::F16 { .. }
            );
            let (nr, narrow) = (super::engine::avx512::NR, super::engine::avx512::NARROW);
            let rem = p % nr;
            // A 1x1 conv's narrow tiles pack their few columns cheaply from the matrix: measured on ResNet-50 at
            // batch 8, its 14x14 maps' 4 columns ran 2 % slower batched, its 7x7 maps' 1 column 3 % faster.
            // An implicit GEMM's gather from the image costs more per column: its 14x14 maps gained too.
            let most = if direct { 2 } else { narrow };
            let fits = gemm && panels && emit.is_none() && self.engine == Engine::Avx512 && p > nr;
            // With fewer images than threads, each image's tiles go over the pool instead (see `run`).
            let threads = rayon::current_num_threads();
            (fits && n > 1 && threads > 1 && n >= threads && (1..=most).contains(&rem) && n * rem > narrow)
                .then_some(rem)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (n, p, emit);
            None
        }
    }

    /// The last `rem` output columns of each of the `n` images (see [`PackedConv::batched_remainder`]) as one
    /// product: those columns of B (unfolded from each image) and of the residual gathered side by side,
    /// multiplied with the output channels split over the threads, the result scattered back into each
    /// image's output.
    #[allow(clippy::too_many_arguments)]
    fn remainders(
        &self,
        weight: &[f32],
        x: &[f32],
        (n, h, w): (usize, usize, usize),
        (oh, ow): (usize, usize),
        rem: usize,
        residual: Option<&[f32]>,
        out: OutPtr,
        post: Post,
    ) {
        let s = &self.spec;
        let (c, m, p) = (s.in_channels, s.out_channels, oh * ow);
        let (main, cols) = (p - rem, n * rem);
        // Rows `r0..r1` of an (n images, rows, p) tensor's last `rem` columns into `dst`, images side by side.
        let gather = |src: &[f32], rows: usize, (r0, r1): (usize, usize), dst: &mut [f32]| {
            for (r, line) in (r0..r1).zip(dst.chunks_exact_mut(cols)) {
                for (i, vals) in line.chunks_exact_mut(rem).enumerate() {
                    let at = (i * rows + r) * p + main;
                    vals.copy_from_slice(&src[at..at + rem]);
                }
            }
        };
        // B's depth rows `d0..d1` (im2col's (channel, tap) order) at those columns: the pixel each tap reads
        // from each image (`at[t * rem + j]`: its offset in the channel's plane for column `main + j`), or the
        // zero padding (`None`).
        let taps = s.kernel * s.kernel;
        let at: Vec<Option<usize>> = (0..taps * rem)
            .map(|tj| {
                let (t, q) = (tj / rem, main + tj % rem);
                let (ki, kj) = (t / s.kernel, t % s.kernel);
                let y = ((q / ow) * s.stride + ki).checked_sub(s.padding).filter(|&y| y < h)?;
                let x = ((q % ow) * s.stride + kj).checked_sub(s.padding).filter(|&x| x < w)?;
                Some(y * w + x)
            })
            .collect();
        let unfold = |(d0, d1): (usize, usize), dst: &mut [f32]| {
            for (d, line) in (d0..d1).zip(dst.chunks_exact_mut(cols)) {
                let (ci, t) = (d / taps, d % taps);
                let at = &at[t * rem..(t + 1) * rem];
                for (i, vals) in line.chunks_exact_mut(rem).enumerate() {
                    let plane = &x[(i * c + ci) * h * w..(i * c + ci + 1) * h * w];
                    for (v, off) in vals.iter_mut().zip(at) {
                        *v = off.map_or(0.0, |o| plane[o]);
                    }
                }
            }
        };
        let depth = c * taps;
        let mut b = vec![0f32; depth * cols];
        const ROWS: usize = 256;
        b.par_chunks_mut(ROWS * cols)
            .enumerate()
            .for_each(|(j, dst)| unfold((j * ROWS, ((j + 1) * ROWS).min(depth)), dst));
        let rhs = Rhs {
            data: RhsData::F32(&b),
            stride: cols,
            first_col: 0,
        };
        // The residual's and the product's (m, cols) matrices; each task fills and reads its own rows.
        let mut res = residual.map(|_| vec![0f32; m * cols]);
        let mut y = vec![0f32; m * cols];
        let (res_out, y_out) = (
            OutPtr {
                f32: res.as_mut().map_or(std::ptr::null_mut(), |r| r.as_mut_ptr()),
                u8: std::ptr::null_mut(),
            },
            OutPtr {
                f32: y.as_mut_ptr(),
                u8: std::ptr::null_mut(),
            },
        );
        let res = res.as_deref();
        let threads = rayon::current_num_threads();
        let rows = self.row_step();
        let step = m.div_ceil(threads).div_ceil(rows) * rows;
        (0..m.div_ceil(step)).into_par_iter().for_each(|t| {
            let (r0, r1) = (t * step, ((t + 1) * step).min(m));
            let block = (r1 - r0) * cols;
            if let Some(r) = residual {
                // SAFETY: rows `r0..r1` of the residual's matrix are this task's alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(res_out.offset(r0 * cols).f32, block) };
                gather(r, m, (r0, r1), dst);
            }
            let tile = Tile {
                group: 0,
                rows: (r0, r1),
                cols: (0, cols),
            };
            // SAFETY: the tasks' row blocks are disjoint rows of `y` (and read only their rows of `res`).
            unsafe { self.tile(weight, rhs, y_out, cols, res, post, tile) }
            // SAFETY: as above; `y`'s rows `r0..r1` are written.
            let done = unsafe { std::slice::from_raw_parts(y_out.offset(r0 * cols).f32, block) };
            for (r, row) in (r0..r1).zip(done.chunks_exact(cols)) {
                for (i, vals) in row.chunks_exact(rem).enumerate() {
                    // SAFETY: columns `main..p` of row `r` of image `i` lie in the output, written by this task
                    // alone.
                    unsafe {
                        let dst = out.offset((i * m + r) * p + main).f32;
                        std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, rem);
                    }
                }
            }
        });
    }

    /// Runs `f` on one image as im2col should read it: for a conv on an int8 kernel quantized once (in this
    /// thread's buffer; by the pool if `parallel`), so that unfolding moves bytes, not floats; else as it is.
    fn with_image<R>(&self, x: Input, parallel: bool, f: impl FnOnce(Image) -> R) -> R {
        let x = match x {
            Input::F32(x) => x,
            // Already quantized (only ever handed to an int8 conv, see `run`).
            Input::U8(x) => return f(Image::U8(x, self.int8.map_or(0, |a| a.zero))),
        };
        #[cfg(target_arch = "x86_64")]
        if let Weights::Int8(w) = &self.weights {
            let (inv, zero) = (1.0 / w.act.scale, w.act.zero);
            return with_buffer(&IMAGE8, x.len(), |buf| {
                // SAFETY: int8 weights exist only on the AVX-512 engine (`from_vec_int8_with`).
                let quantize =
                    |(src, dst): (&[f32], &mut [u8])| unsafe { super::engine::int8::quantize(src, inv, zero, dst) };
                const CHUNK: usize = 16 * 1024;
                match parallel {
                    true => x.par_chunks(CHUNK).zip(buf.par_chunks_mut(CHUNK)).for_each(quantize),
                    false => quantize((x, buf)),
                }
                f(Image::U8(buf, zero))
            });
        }
        f(Image::F32(x))
    }

    /// One image; `parallel` spreads it over the thread pool (im2col by channel, the GEMM by group, or by
    /// column blocks, row blocks or both: [`tile_steps`]).
    #[allow(clippy::too_many_arguments)]
    fn run_image(
        &self,
        weight: &[f32],
        x: Input,
        (c, h, w): (usize, usize, usize),
        (oh, ow): (usize, usize),
        out: OutPtr,
        residual: Option<&[f32]>,
        post: Post,
        parallel: bool,
    ) {
        let s = &self.spec;
        let p = oh * ow;
        let g = s.groups;
        let og = s.out_channels / g;
        let direct = s.kernel == 1 && s.stride == 1 && s.padding == 0;
        let implicit = !direct && self.implicit_gemm();
        debug_assert!(
            post.twin.is_none() || implicit,
            "a twin shares an implicit GEMM's packing only"
        );
        let threads = if parallel { rayon::current_num_threads() } else { 1 };
        if !direct && !implicit && g == 1 {
            if let Some(band) = band_cols(c * s.kernel * s.kernel, oh * ow, threads, self.engine.strip_cols()) {
                return self.with_image(x, parallel, |img| {
                    self.run_banded(weight, img, (c, h, w), (oh, ow), band, out, residual, post, parallel)
                });
            }
        }
        let dispatch = |rhs: RhsData| {
            let rhs = Rhs {
                data: rhs,
                stride: p,
                first_col: 0,
            };
            let tile = |t: Tile| {
                // SAFETY: tiles cover disjoint (row, column) blocks of `dst`.
                unsafe { self.tile(weight, rhs, out, p, residual, post, t) }
            };
            if threads == 1 {
                (0..g).for_each(|gi| {
                    tile(Tile {
                        group: gi,
                        rows: (0, og),
                        cols: (0, p),
                    })
                });
            } else if g > 1 {
                (0..g).into_par_iter().for_each(|gi| {
                    tile(Tile {
                        group: gi,
                        rows: (0, og),
                        cols: (0, p),
                    })
                });
            } else {
                let (rows, cols) = tile_steps(p, og, self.row_step(), self.engine.strip_cols(), threads);
                let blocks = p.div_ceil(cols);
                // Row-major, so that the run of tasks a thread takes shares its weight panels.
                (0..og.div_ceil(rows) * blocks).into_par_iter().for_each(|t| {
                    let (r, b) = (t / blocks, t % blocks);
                    tile(Tile {
                        group: 0,
                        rows: (r * rows, ((r + 1) * rows).min(og)),
                        cols: (b * cols, ((b + 1) * cols).min(p)),
                    })
                });
            }
        };
        if direct {
            dispatch(match x {
                Input::F32(x) => RhsData::F32(x),
                Input::U8(x) => RhsData::U8(x),
            });
        } else if implicit {
            self.with_image(x, parallel, |img| match img {
                Image::U8(bytes, _) => dispatch(RhsData::Image(bytes, (h, w))),
                Image::F32(x) => dispatch(RhsData::ImageF32(x, (h, w))),
            });
        } else {
            self.with_image(x, parallel, |img| {
                unfold(img, (c, h, w), s, ow, (0, p), parallel, dispatch)
            });
        }
    }

    /// True when the engine packs B straight from the input image (implicit GEMM, no im2col): ungrouped
    /// undilated convs of stride 1 or 2 on an int8 kernel (from the quantized image), on AMX-BF16 or on our
    /// AVX-512 or AVX2 micro-kernels, whose weights are panels (f32, bf16 or f16; from the f32 image). OIHW
    /// weights are the portable engine's.
    fn implicit_gemm(&self) -> bool {
        implicit_spec(&self.spec)
            && match self.weights {
                Weights::Int8(_)
                | Weights::Panels { .. }
                | Weights::Bf16 { .. }
                | Weights::Bf16Rows { .. }
                | Weights::F16 { .. } => true,
                Weights::Oihw(_) | Weights::Winograd { .. } | Weights::Direct { .. } | Weights::Blocked { .. } => false,
            }
    }

    /// This conv's input image `x` ((C, h, w), f32 or quantized) as the implicit GEMM's B for output columns
    /// from `first_col` on.
    fn implicit<T>(&self, x: &[T], (h, w): (usize, usize), first_col: usize) -> Implicit<T> {
        let s = &self.spec;
        Implicit {
            x: x.as_ptr(),
            chw: (s.in_channels, h, w),
            kernel: s.kernel,
            stride: s.stride,
            tap_major: matches!(self.weights, Weights::Int8(_)) && tap_major(s),
            pad: s.padding,
            ow: s.output_size(w),
            first_col,
        }
    }

    /// One image in bands of `band` output columns: each band is unfolded into the thread's buffer and
    /// multiplied at once, while its panel is still in L2 (unfolding the whole image first writes
    /// 9 - 49x the input, far more than L2, and the GEMM then reads it back from memory).
    #[allow(clippy::too_many_arguments)]
    fn run_banded(
        &self,
        weight: &[f32],
        x: Image,
        (c, h, w): (usize, usize, usize),
        (oh, ow): (usize, usize),
        band: usize,
        out: OutPtr,
        residual: Option<&[f32]>,
        post: Post,
        parallel: bool,
    ) {
        let s = &self.spec;
        let p = oh * ow;
        let run = |b: usize| {
            let (c0, c1) = (b * band, ((b + 1) * band).min(p));
            unfold(x, (c, h, w), s, ow, (c0, c1), false, |cols| {
                let rhs = Rhs {
                    data: cols,
                    stride: c1 - c0,
                    first_col: c0,
                };
                let t = Tile {
                    group: 0,
                    rows: (0, s.out_channels),
                    cols: (c0, c1),
                };
                // SAFETY: bands cover disjoint column ranges of the output.
                unsafe { self.tile(weight, rhs, out, p, residual, post, t) }
            })
        };
        let bands = p.div_ceil(band);
        if parallel {
            (0..bands).into_par_iter().for_each(run);
        } else {
            (0..bands).for_each(run);
        }
    }

    /// Output rows `t.rows` of group `t.group`, columns `t.cols`, computed by the conv's [`Engine`] with
    /// the bias, residual and ReLU applied as the tile is stored. Single-threaded.
    ///
    /// # Safety
    /// `out` points at this image's (out_channels, p) output, and no other thread touches this tile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        weight: &[f32],
        rhs: Rhs,
        out: OutPtr,
        p: usize,
        residual: Option<&[f32]>,
        post: Post,
        t: Tile,
    ) {
        let s = &self.spec;
        let og = s.out_channels / s.groups;
        let kk = s.in_channels / s.groups * s.kernel * s.kernel;
        let (r0, r1) = t.rows;
        let (c0, c1) = t.cols;
        let first = t.group * og + r0;
        let a = match &self.weights {
            Weights::Oihw(_) => Lhs::Rows {
                a: weight.as_ptr().add(first * kk),
                lda: kk,
            },
            Weights::Panels { rows, .. } => {
                debug_assert_eq!(r0 % rows, 0, "row tiles start on whole panels");
                Lhs::Panels {
                    a: weight.as_ptr().add(first * kk),
                    rows: *rows,
                }
            }
            Weights::Bf16 { data, rows, dot } => {
                debug_assert_eq!(first % rows, 0, "row tiles start on whole panels");
                Lhs::Bf16 {
                    a: data.as_ptr().add(first * kk.div_ceil(2)),
                    rows: *rows,
                    dot: *dot,
                }
            }
            Weights::Bf16Rows { data, kpad } => {
                debug_assert_eq!(first % 16, 0, "row tiles start on whole A tiles");
                Lhs::Bf16Rows {
                    a: data.as_ptr().add(first * kpad),
                    kpad: *kpad,
                }
            }
            #[cfg(target_arch = "x86_64")]
            Weights::Int8(w) => {
                debug_assert_eq!(first % 16, 0, "row tiles start on whole A tiles");
                Lhs::Int8Rows {
                    a: w.data.as_ptr().add(first * w.kpad),
                    kpad: w.kpad,
                    q: super::engine::int8::Requant {
                        inv_scale: 1.0 / w.act.scale,
                        zero: w.act.zero,
                        mul: w.mul.as_ptr().add(first),
                        zw: w.zw.as_ptr().add(first),
                        b8: match rhs.data {
                            RhsData::U8(d) => d.as_ptr().add(t.group * kk * rhs.stride + c0 - rhs.first_col),
                            _ => std::ptr::null(),
                        },
                        image: match rhs.data {
                            RhsData::Image(x, hw) => Some(self.implicit(x, hw, c0)),
                            _ => None,
                        },
                        emit: post.emit.map(|act| super::engine::int8::Emit {
                            c: out.u8.add(first * p + c0),
                            inv_scale: 1.0 / act.scale,
                            zero: act.zero,
                        }),
                    },
                    vnni: w.kernel == Int8Kernel::Vnni,
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Weights::Int8(_) => unreachable!("int8 weights need the x86 AMX kernel"),
            Weights::F16 { data, rows } => {
                debug_assert_eq!(first % rows, 0, "row tiles start on whole panels");
                Lhs::F16 {
                    a: data.as_ptr().add(first * kk),
                    rows: *rows,
                }
            }
            Weights::Winograd { .. } | Weights::Direct { .. } => unreachable!("Winograd and direct convs run in `run`"),
            Weights::Blocked { .. } => unreachable!("`run` refuses a conv held for NCHW16c"),
        };
        let twin = match (post.twin, rhs.data) {
            (Some(t), RhsData::ImageF32(..)) => self.twin(t, (r0, r1), (c0, p)),
            _ => None,
        };
        self.engine.gemm(&Gemm {
            m: r1 - r0,
            n: c1 - c0,
            k: kk,
            a,
            b: match rhs.data {
                RhsData::F32(d) => d.as_ptr().add(t.group * kk * rhs.stride + c0 - rhs.first_col),
                _ => std::ptr::null(),
            },
            ldb: rhs.stride,
            image: match rhs.data {
                RhsData::ImageF32(x, hw) => Some(self.implicit(x, hw, c0)),
                _ => None,
            },
            c: out.f32.wrapping_add(first * p + c0),
            ldc: p,
            epilogue: Epilogue {
                bias: self.bias.as_ptr().add(first),
                residual: residual.map(|r| (r.as_ptr().add(first * p + c0), p)),
                relu: post.relu,
            },
            twin,
        });
    }

    /// The twin's share of this conv's tile of rows `r0..r1` (whole panels of its `og` rows) from column `c0` of
    /// `p` (see [`PackedConv::forward_shared`]): its rows in the same proportion, cut at whole panels, so that
    /// the tiles of rows that cover this conv's cover the twin's; `None` where that share is empty.
    fn twin(&self, t: TwinOut, (r0, r1): (usize, usize), (c0, p): (usize, usize)) -> Option<Twin> {
        let (og, tm) = (self.spec.out_channels, t.conv.spec.out_channels);
        let Weights::Panels { data, rows } = &t.conv.weights else {
            return None;
        };
        let at = |r: usize| match r >= og {
            true => tm,
            false => r * tm / og / rows * rows,
        };
        let (t0, t1) = (at(r0), at(r1));
        let s = &self.spec;
        let k = t.conv.spec.in_channels;
        (t1 > t0).then(|| Twin {
            a: data.as_ptr().wrapping_add(t0 * k),
            m: t1 - t0,
            k,
            tap: s.padding * s.kernel + s.padding,
            taps: s.kernel * s.kernel,
            c: t.out.f32.wrapping_add(t0 * p + c0),
            ldc: p,
            epilogue: Epilogue {
                bias: t.conv.bias.as_ptr().wrapping_add(t0),
                residual: None,
                relu: false,
            },
        })
    }

    /// The f32 panels, for a conv holding them (else empty).
    fn panels(&self) -> &[f32] {
        match &self.weights {
            Weights::Panels { data, .. } => data,
            _ => &[],
        }
    }
}

/// The convs that run as an implicit GEMM (see [`PackedConv::implicit_gemm`]): ungrouped, undilated, stride
/// 1 or 2.
fn implicit_spec(s: &ConvSpec) -> bool {
    s.stride <= 2 && s.groups == 1 && s.dilation == 1
}

/// True when an int8 conv's weight rows hold their depth tap by tap, (tap, channel), rather than OIHW's
/// (channel, tap): implicit-GEMM convs with more than one tap whose channels come in quads, so that a depth
/// quad is four channels at one tap, which the implicit GEMM packs with one set of offsets.
fn tap_major(s: &ConvSpec) -> bool {
    implicit_spec(s) && s.kernel > 1 && s.in_channels.is_multiple_of(4)
}

/// Where OIHW depth step `i` (channel `i / taps`, tap `i % taps`) lies in a tap-major row.
fn tap_major_index(i: usize, s: &ConvSpec) -> usize {
    let taps = s.kernel * s.kernel;
    (i % taps) * s.in_channels + i / taps
}

/// The output rows and columns per tile when one image's `og` x `p` output (one group) is cut over `threads`
/// threads (see [`PackedConv::run_image`]):
/// - column blocks, a multiple of the micro-kernel's 16-float vector, where each thread gets 192 columns (four
///   AVX-512 strips) or more: a smaller map (14x14 at batch 1 on 2 threads) cut at a vector boundary leaves
///   each thread a partial strip, and splitting the rows costs nothing;
/// - else row blocks of whole weight panels (`panel` rows), and where those are fewer than the threads (a
///   64-channel conv is 8 panels: on 64 threads, 8 tasks) each also cut into column blocks of whole strips
///   (`strip` columns) of 192 columns or more: a 56x56 map's 64-channel 1x1 on 64 threads, 8 x 8 tiles.
fn tile_steps(p: usize, og: usize, panel: usize, strip: usize, threads: usize) -> (usize, usize) {
    if p >= 192 * threads {
        return (og, p.div_ceil(threads).div_ceil(16) * 16);
    }
    let rows = og.div_ceil(threads).div_ceil(panel) * panel;
    let row_blocks = og.div_ceil(rows);
    let col_blocks = threads.div_ceil(row_blocks).min(p / 192).max(1);
    let cols = match col_blocks {
        1 => p,
        _ => p.div_ceil(col_blocks).div_ceil(strip) * strip,
    };
    (rows, cols)
}

/// Target size of one band's unfolded panel: a quarter of this machine's 2 MiB L2 left room for the
/// weights and the output tile.
const BAND_BYTES: usize = 512 * 1024;
/// Narrower bands make the GEMM's loops too short to pay for its setup.
const MIN_BAND_COLS: usize = 128;

/// Output columns per im2col band for an unfolded depth of `k` and `p` output pixels (see
/// [`PackedConv::run_banded`]), a multiple of the engine's strip width `step` so that only an image's last
/// band has a partial strip; `None` when the bands would be too few to go around `threads` (small
/// late-stage maps at batch 1, which split the output channels over the threads instead).
fn band_cols(k: usize, p: usize, threads: usize, step: usize) -> Option<usize> {
    let min = MIN_BAND_COLS.div_ceil(step) * step;
    let fit = (BAND_BYTES / (4 * k) / step * step).max(min);
    if threads == 1 {
        return Some(fit.min(p));
    }
    let cols = fit.min(p / threads / step * step);
    (cols >= min).then_some(cols)
}

/// The right GEMM operand a tile reads: (in/groups * k * k per group, columns), row-major with `stride`,
/// whose column 0 is output column `first_col`.
#[derive(Clone, Copy)]
struct Rhs<'a> {
    data: RhsData<'a>,
    stride: usize,
    first_col: usize,
}

/// The values of a GEMM operand: f32, (an int8 conv's unfolded input) bytes quantized before im2col, or
/// (an implicit-GEMM conv, see [`PackedConv::implicit_gemm`]) the image (C, H, W) itself, quantized or f32,
/// which the engine unfolds as it packs.
#[derive(Clone, Copy)]
enum RhsData<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
    Image(&'a [u8], (usize, usize)),
    ImageF32(&'a [f32], (usize, usize)),
}

/// One image's input before im2col: f32, or quantized once to bytes for an int8 conv, with the zero point
/// that stands for 0 (and pads).
#[derive(Clone, Copy)]
enum Image<'a> {
    F32(&'a [f32]),
    U8(&'a [u8], u8),
}

/// A block of one image's output: rows (within the group) and columns, half-open.
#[derive(Clone, Copy)]
struct Tile {
    group: usize,
    rows: (usize, usize),
    cols: (usize, usize),
}

/// A conv's input: f32, or (into a conv on an int8 kernel) bytes already quantized for it.
#[derive(Clone, Copy)]
enum Input<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl<'a> Input<'a> {
    fn len(&self) -> usize {
        match self {
            Input::F32(x) => x.len(),
            Input::U8(x) => x.len(),
        }
    }

    /// The `len` values from `start`.
    fn image(&self, start: usize, len: usize) -> Input<'a> {
        match self {
            Input::F32(x) => Input::F32(&x[start..start + len]),
            Input::U8(x) => Input::U8(&x[start..start + len]),
        }
    }
}

/// What the epilogue does besides the bias and residual: the ReLU, and whether the output is stored as
/// the next conv's quantized bytes (see `engine::int8::Emit`); and the twin conv computed on the same packed
/// input, if any (see [`PackedConv::forward_shared`]).
#[derive(Clone, Copy)]
struct Post<'a> {
    relu: bool,
    emit: Option<super::quant::ActQuant>,
    twin: Option<TwinOut<'a>>,
}

/// The twin of a conv that shares its packed input ([`PackedConv::forward_shared`]): the twin conv and its
/// output for the image at hand (`out_channels` x the same pixels).
#[derive(Clone, Copy)]
struct TwinOut<'a> {
    conv: &'a PackedConv,
    out: OutPtr,
}

impl<'a> Post<'a> {
    /// The same for the image whose twin output starts `n` values further on.
    fn offset(self, n: usize) -> Post<'a> {
        Post {
            twin: self.twin.map(|t| TwinOut {
                out: t.out.offset(n),
                ..t
            }),
            ..self
        }
    }
}

/// The output pointer (f32, or bytes for an int8 conv handing its output to the next; the other null),
/// shared by the threads that fill disjoint tiles of it.
#[derive(Clone, Copy)]
struct OutPtr {
    f32: *mut f32,
    u8: *mut u8,
}

impl OutPtr {
    /// The output `n` values further on.
    fn offset(self, n: usize) -> OutPtr {
        OutPtr {
            f32: self.f32.wrapping_add(n),
            u8: self.u8.wrapping_add(n),
        }
    }
}
// SAFETY: only used for disjoint writes (see `PackedConv::tile`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

thread_local! {
    /// The im2col buffer, kept per thread so that steady-state inference does not allocate it.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The same for int8 convs' unfolded bytes.
    static COLS8: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// An int8 conv's input image, quantized.
    static IMAGE8: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Unfolds output columns `cols` of one image (see [`im2col`]) into this thread's buffer of its type and
/// hands it to `f`.
fn unfold<R>(
    x: Image,
    chw: (usize, usize, usize),
    s: &ConvSpec,
    ow: usize,
    cols: (usize, usize),
    parallel: bool,
    f: impl FnOnce(RhsData) -> R,
) -> R {
    let len = chw.0 * s.kernel * s.kernel * (cols.1 - cols.0);
    match x {
        Image::F32(x) => with_buffer(&COLS, len, |buf| {
            im2col(x, chw, s, ow, cols, buf, 0.0, parallel);
            f(RhsData::F32(buf))
        }),
        Image::U8(x, zero) => with_buffer(&COLS8, len, |buf| {
            im2col(x, chw, s, ow, cols, buf, zero, parallel);
            f(RhsData::U8(buf))
        }),
    }
}

/// Unfolds the output columns (flattened y * OW + x) `c0..c1` of one image (C, H, W) into
/// (C * k * k, c1 - c0): row (c, i, j), column (y, x) holds the input pixel kernel tap (i, j) sees for
/// output (y, x), `zero` in the padding (0 for f32; for quantized bytes the zero point, which stands for 0).
#[allow(clippy::too_many_arguments)]
fn im2col<T: Copy + Send + Sync>(
    x: &[T],
    (c, h, w): (usize, usize, usize),
    s: &ConvSpec,
    ow: usize,
    (c0, c1): (usize, usize),
    cols: &mut [T],
    zero: T,
    parallel: bool,
) {
    let (k, st, pad) = (s.kernel, s.stride, s.padding);
    let p = c1 - c0;
    // One row per (channel, tap): enough rows to keep every thread busy even for the 3-channel stem.
    let fill = |r: usize, row: &mut [T]| {
        let (ci, i, j) = (r / (k * k), r / k % k, r % k);
        let src = &x[ci * h * w..(ci + 1) * h * w];
        // Output columns ox whose input column ox*st + j - pad lies inside [0, w).
        let x0 = (pad.saturating_sub(j)).div_ceil(st).min(ow);
        let x1 = if w + pad > j {
            ((w + pad - j - 1) / st + 1).min(ow)
        } else {
            0
        }
        .max(x0);
        // The range crosses output rows: one segment [xs, xe) of row oy at a time.
        let mut q = c0;
        while q < c1 {
            let (oy, xs) = (q / ow, q % ow);
            let xe = ow.min(xs + (c1 - q));
            let out = &mut row[q - c0..q - c0 + (xe - xs)];
            q += xe - xs;
            let y = (oy * st + i) as isize - pad as isize;
            if y < 0 || y >= h as isize {
                out.fill(zero);
                continue;
            }
            let line = &src[y as usize * w..(y as usize + 1) * w];
            let (a, b) = (x0.clamp(xs, xe), x1.clamp(xs, xe));
            out[..a - xs].fill(zero);
            out[b - xs..].fill(zero);
            if b > a {
                gather(&mut out[a - xs..b - xs], &line[a * st + j - pad..], st);
            }
        }
    };
    match parallel {
        false => cols.chunks_exact_mut(p).enumerate().for_each(|(r, row)| fill(r, row)),
        true => cols
            .par_chunks_mut(p)
            .with_min_len(8)
            .enumerate()
            .for_each(|(r, row)| fill(r, row)),
    }
    debug_assert_eq!(cols.len(), c * k * k * p);
}

/// `dst[n] = src[n * stride]`.
fn gather<T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    let n = dst.len();
    match stride {
        1 => dst.copy_from_slice(&src[..n]),
        // Whole pairs, so the compiler can vectorise the gather (`step_by` stays scalar).
        2 => {
            let pairs = src[..2 * (n - 1)].chunks_exact(2);
            dst[..n - 1].iter_mut().zip(pairs).for_each(|(d, pair)| *d = pair[0]);
            dst[n - 1] = src[2 * (n - 1)];
        }
        _ => dst
            .iter_mut()
            .zip(src.iter().step_by(stride))
            .for_each(|(d, v)| *d = *v),
    }
}

/// The custom op: `x` alone, or `x` and the residual to add before the ReLU.
struct ConvOp {
    packed: Arc<PackedConv>,
    relu: bool,
    /// Store the output as u8, quantized this way (see [`PackedConv::forward_added_emitting`]).
    emit: Option<super::quant::ActQuant>,
    /// Max-pool the output as it is computed (see [`PackedConv::forward_pooled`]); `x` alone.
    pool: bool,
    /// A conv computed on the same packed input (see [`PackedConv::forward_shared`]); `x` alone. The output is
    /// then one flat buffer, this conv's output followed by the twin's.
    twin: Option<Arc<PackedConv>>,
}

/// The f32 values of a contiguous CPU tensor's storage.
fn cpu_f32<'a>(s: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) => Ok(&data[a..b]),
        _ => bail!("the CPU conv kernel needs a contiguous f32 CPU tensor"),
    }
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match contiguous(s, l)? {
        Input::F32(x) => Ok(x),
        Input::U8(_) => bail!("the CPU conv kernel adds only f32 residuals"),
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<Input<'a>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("the CPU conv kernel needs a contiguous input")
    };
    match s {
        CpuStorage::F32(data) => Ok(Input::F32(&data[a..b])),
        CpuStorage::U8(data) => Ok(Input::U8(&data[a..b])),
        _ => bail!("the CPU conv kernel only handles f32 (and u8 into int8 convs)"),
    }
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        "zoo-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l)?;
        let dims = self.packed.out_shape(l.dims())?;
        let d = l.dims();
        if self.pool {
            let pooled = (dims.0, dims.1, super::pool::pooled(dims.2), super::pool::pooled(dims.3));
            let out = self.packed.run_pooled(x, (d[0], d[1], d[2], d[3]), self.relu)?;
            return Ok((out, Shape::from(pooled)));
        }
        let twin = self.twin.as_deref();
        let out = self
            .packed
            .run(x, (d[0], d[1], d[2], d[3]), None, self.relu, self.emit, twin)?;
        match twin {
            None => Ok((out, Shape::from(dims))),
            Some(t) => {
                let len = dims.0 * (dims.1 + t.spec.out_channels) * dims.2 * dims.3;
                Ok((out, Shape::from(len)))
            }
        }
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "zoo-conv2d-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if self.pool || self.twin.is_some() {
            bail!("a pooled conv, or one with a twin, takes no residual")
        }
        let x = contiguous(s1, l1)?;
        let r = contiguous_f32(s2, l2)?;
        let dims = self.packed.out_shape(l1.dims())?;
        if l2.dims() != [dims.0, dims.1, dims.2, dims.3] {
            bail!(
                "residual of shape {:?} does not match the conv output {dims:?}",
                l2.dims()
            )
        }
        let d = l1.dims();
        let out = self
            .packed
            .run(x, (d[0], d[1], d[2], d[3]), Some(r), self.relu, self.emit, None)?;
        Ok((out, Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A conv held for NCHW16c and one that is not each take an input in either layout and answer in the input's,
    /// the values of the conv on NCHW (the residual in either layout too); the held one runs the blocked kernels
    /// (direct, and Winograd for the stride-1 3x3).
    #[test]
    fn either_layout_in_gives_the_same_layout_out() -> Result<()> {
        if Engine::current() != Engine::Avx512 {
            return Ok(());
        }
        let dev = Device::Cpu;
        for (k, stride, pad, lowering) in [
            (1, 1, 0, Lowering::Gemm),
            (1, 2, 0, Lowering::Gemm),
            (3, 2, 1, Lowering::Gemm),
            (3, 1, 1, Lowering::Gemm),
            (3, 1, 1, Lowering::Winograd),
            (3, 1, 1, Lowering::Winograd4),
        ] {
            let mut spec = ConvSpec::new(32, 48, k, stride);
            spec.padding = pad;
            let w: Vec<f32> = (0..48 * spec.depth())
                .map(|i| ((i * 37) % 23) as f32 / 23.0 - 0.5)
                .collect();
            let bias = Tensor::randn(0f32, 1., 48, &dev)?;
            let build =
                |layout| PackedConv::from_vec_laid(w.clone(), Some(&bias), spec, Engine::Avx512, lowering, layout);
            let (plain, held) = (Arc::new(build(ActLayout::Nchw)?), Arc::new(build(ActLayout::Nchw16c)?));
            assert_eq!((plain.layout(), held.layout()), (ActLayout::Nchw, ActLayout::Nchw16c));
            assert_eq!(held.lowering(), lowering);
            let x = Tensor::randn(0f32, 1., (2, 32, 9, 11), &dev)?;
            let (oh, ow) = (spec.output_size(9), spec.output_size(11));
            let r = Tensor::randn(0f32, 1., (2, 48, oh, ow), &dev)?;
            let want = plain.forward(&x, Some(&r), true)?;
            let (xb, rb) = (layout::to_blocked(&x)?, layout::to_blocked(&r)?);
            for conv in [&plain, &held] {
                for (input, res) in [(&x, &r), (&x, &rb), (&xb, &rb), (&xb, &r)] {
                    let y = conv.forward(input, Some(res), true)?;
                    assert_eq!(
                        layout::is_blocked(&y),
                        layout::is_blocked(input),
                        "{spec:?} {lowering:?}"
                    );
                    let y = if layout::is_blocked(&y) {
                        layout::from_blocked(&y)?
                    } else {
                        y
                    };
                    let diff = (y - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff < 1e-4,
                        "{spec:?} {lowering:?} held {}: {diff}",
                        conv.layout() == ActLayout::Nchw16c
                    );
                }
            }
        }
        Ok(())
    }

    /// The shapes that reach every path of the kernel: direct 1x1, banded im2col (one and many bands), channel
    /// split for small maps, strided 1x1, grouped; `(n, c, out, k, stride, groups, size)`.
    const PATHS: [(usize, usize, usize, usize, usize, usize, usize); 10] = [
        (1, 64, 64, 1, 1, 1, 56),
        (2, 32, 48, 3, 1, 1, 57),
        (1, 3, 64, 7, 2, 1, 224),
        (3, 3, 16, 7, 2, 1, 61),
        (1, 256, 256, 3, 1, 1, 14),
        (1, 512, 512, 3, 1, 1, 7),
        (2, 64, 128, 3, 2, 1, 29),
        (1, 64, 128, 1, 2, 1, 28),
        (2, 64, 64, 3, 1, 8, 20),
        (1, 128, 128, 3, 2, 32, 56),
    ];

    /// The kernel against Candle's own `conv2d` + bias + residual + ReLU over [`PATHS`] (batch 1 split over
    /// the threads, batch > 1 an image per thread).
    #[test]
    fn every_path_matches_candle_conv2d() -> Result<()> {
        check_paths(&PATHS)
    }

    /// [`PATHS`] in batches of 2 and 3 on a pool of 7 threads (a batch of 8 on a 16-64-core server): each
    /// image's tiles spread over the pool, nested in the images' tasks.
    #[test]
    fn fewer_images_than_threads_match_candle_conv2d() -> Result<()> {
        let pool = pool(7)?;
        let cases = PATHS.map(|(n, c, o, k, stride, groups, size)| (2 + n % 2, c, o, k, stride, groups, size));
        pool.install(|| check_paths(&cases))
    }

    /// Batch 1 on a pool of 64 threads (a 64-core server), where convs of few output channels cut their row
    /// panels into column blocks too ([`tile_steps`]): [`PATHS`] at batch 1, plus maps of 8-40 channels whose
    /// rows and columns both split (a 1x1, an implicit GEMM of stride 2, a 3x3 too wide for Winograd).
    #[test]
    fn many_threads_at_batch_one_match_candle_conv2d() -> Result<()> {
        let pool = pool(64)?;
        let mut cases = PATHS
            .map(|(_, c, o, k, stride, groups, size)| (1, c, o, k, stride, groups, size))
            .to_vec();
        cases.extend([
            (1, 16, 24, 1, 1, 1, 45),
            (1, 8, 40, 3, 2, 1, 61),
            (1, 600, 8, 3, 1, 1, 30),
        ]);
        pool.install(|| check_paths(&cases))
    }

    /// [`tile_steps`]' tiles cover the output once, start on whole panels (and, cut both ways, on whole
    /// strips), give a 64-core server at least as many tasks as it has threads for ResNet's batch-1 1x1s at
    /// 56x56 and 28x28, and on two threads cut as before (columns from 384 on, else rows).
    #[test]
    fn tiles_cover_the_output_and_go_around_the_threads() {
        for threads in [1, 2, 3, 7, 16, 64, 100] {
            for p in [1, 47, 49, 196, 383, 384, 784, 3136, 12544] {
                for og in [1, 8, 16, 24, 64, 256, 2048] {
                    let (rows, cols) = tile_steps(p, og, 8, 48, threads);
                    let what = format!("p {p} og {og} threads {threads}: {rows} x {cols}");
                    assert!(rows > 0 && cols > 0 && (rows == og || rows % 8 == 0), "{what}");
                    assert!(cols == p || cols % 16 == 0, "{what}");
                    let (rb, cb) = (og.div_ceil(rows), p.div_ceil(cols));
                    // Disjoint blocks that reach the last row and column, none of them empty.
                    assert!((rb - 1) * rows < og && (cb - 1) * cols < p, "{what}");
                    if rb > 1 && cb > 1 {
                        assert_eq!(cols % 48, 0, "{what}");
                    }
                    if threads == 2 {
                        let old = match p >= 384 {
                            true => (og, p.div_ceil(2).div_ceil(16) * 16),
                            false => (og.div_ceil(2).div_ceil(8) * 8, p),
                        };
                        assert_eq!((rows, cols), old, "{what}");
                    }
                }
            }
        }
        for (p, og) in [(3136, 64), (3136, 256), (784, 128), (784, 512)] {
            let (rows, cols) = tile_steps(p, og, 8, 48, 64);
            let tasks = og.div_ceil(rows) * p.div_ceil(cols);
            assert!(tasks >= 64, "{og} channels at {p} pixels: {tasks} tasks on 64 threads");
        }
    }

    /// A rayon pool of `threads` threads.
    fn pool(threads: usize) -> Result<rayon::ThreadPool> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(candle_core::Error::wrap)
    }

    /// One conv per case, packed and run as `PackedConv::forward`, against Candle's `conv2d` + bias (+ residual
    /// + ReLU) on the same random tensors.
    fn check_paths(cases: &[(usize, usize, usize, usize, usize, usize, usize)]) -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, o, k, stride, groups, size) in cases {
            let spec = ConvSpec::new(c, o, k, stride).with_groups(groups);
            let weight = Tensor::randn(0f32, 0.1, spec.weight_shape(), &dev)?;
            let bias = Tensor::randn(0f32, 1., o, &dev)?;
            let x = Tensor::randn(0f32, 1., (n, c, size, size), &dev)?;
            let expected = x
                .conv2d(&weight, spec.padding, stride, 1, groups)?
                .broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
            let residual = Tensor::randn(0f32, 1., expected.shape(), &dev)?;
            let packed = Arc::new(PackedConv::new(&weight, Some(&bias), spec)?);
            for (res, relu) in [(None, false), (Some(&residual), true)] {
                let ours = packed.forward(&x, res, relu)?;
                let mut want = expected.clone();
                if let Some(r) = res {
                    want = (want + r)?;
                }
                if relu {
                    want = want.relu()?;
                }
                let diff = (ours - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-3,
                    "n{n} c{c} o{o} k{k} s{stride} g{groups} {size}x{size} residual {}: {diff}",
                    res.is_some()
                );
            }
        }
        Ok(())
    }

    /// Convs on 14x14 and 7x7 output maps in batches, whose last columns per image go to one product over the
    /// batch (`remainders`), against Candle's `conv2d` + bias + residual + ReLU: 1x1 stride 1, and implicit
    /// GEMMs (3x3 stride 1 too wide for Winograd, 3x3 and 1x1 stride 2, whose gathered columns read the
    /// padding); bf16 and f32 weights, with and without a residual, output channels that do and do not fill
    /// the threads' row blocks evenly.
    #[test]
    fn batch_remainders_match_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        let pool = pool(3)?;
        let cases = [
            // (n, c, o, k, stride, input size)
            (8, 64, 256, 1, 1, 14),
            (3, 32, 40, 1, 1, 14),
            (2, 48, 24, 1, 1, 7),
            (6, 48, 24, 1, 1, 7),
            (5, 16, 72, 1, 1, 7),
            (5, 264, 264, 3, 1, 7),
            (6, 24, 32, 3, 2, 14),
            (6, 40, 24, 1, 2, 13),
        ];
        for (n, c, o, k, stride, size) in cases {
            let spec = ConvSpec::new(c, o, k, stride);
            let weight = Tensor::randn(0f32, 0.1, spec.weight_shape(), &dev)?;
            let bias = Tensor::randn(0f32, 1., o, &dev)?;
            let x = Tensor::randn(0f32, 1., (n, c, size, size), &dev)?;
            let out = spec.output_size(size);
            let residual = Tensor::randn(0f32, 1., (n, o, out, out), &dev)?;
            for dtype in [DType::F32, DType::BF16] {
                // bf16 as panels (the dot-product kernel, else widened; AMX's rows take another path), whose
                // dot products round the activations to bf16 too: the reference rounds them the same way.
                let kernel = [Bf16Kernel::Dot, Bf16Kernel::Widen]
                    .into_iter()
                    .find(|k| k.is_supported());
                let kernel = kernel.unwrap_or(Bf16Kernel::Widen);
                let round = |t: &Tensor| t.to_dtype(dtype)?.to_dtype(DType::F32);
                let xr = match dtype == DType::BF16 && kernel.rounds_inputs() {
                    true => round(&x)?,
                    false => x.clone(),
                };
                let expected = xr
                    .conv2d(&round(&weight)?, spec.padding, stride, 1, 1)?
                    .broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
                let tolerance = 1e-4;
                let packed = Arc::new(PackedConv::from_vec_with(
                    weight.flatten_all()?.to_vec1()?,
                    Some(&bias),
                    spec,
                    Engine::current(),
                    dtype,
                    kernel,
                )?);
                if Engine::current() == Engine::Avx512 {
                    let used = pool.install(|| packed.batched_remainder(n, out * out, None));
                    // Not for 2 images of a 7x7 map (2 columns are still the narrow kernel's), nor for a 1x1
                    // conv's 14x14 map (4 columns per image).
                    let rem = out * out % 48;
                    let direct = k == 1 && stride == 1;
                    let want = (n >= 3 && n * rem > 4 && (rem <= 2 || !direct)).then_some(rem);
                    assert_eq!(used, want, "batch {n} of {out}x{out}, k {k} s {stride}");
                }
                for (res, relu) in [(None, false), (Some(&residual), true)] {
                    let ours = pool.install(|| packed.forward(&x, res, relu))?;
                    let mut want = expected.clone();
                    if let Some(r) = res {
                        want = (want + r)?;
                    }
                    if relu {
                        want = want.relu()?;
                    }
                    let diff = (ours - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                    let what = format!(
                        "n{n} c{c} o{o} k{k} s{stride} {size}x{size} {dtype:?} residual {}",
                        res.is_some()
                    );
                    assert!(diff < tolerance, "{what}: {diff}");
                }
            }
        }
        Ok(())
    }

    /// Batch-1 passes inside a caller's own parallel loop: the kernel's nested rayon work may pick up
    /// another of the caller's passes on the same thread, which must not trip over the first one's buffer.
    #[test]
    fn concurrent_batch_one_passes_in_a_rayon_loop() -> Result<()> {
        let dev = Device::Cpu;
        for (k, size) in [(3, 14), (3, 56), (1, 28)] {
            let spec = ConvSpec::new(64, 64, k, 1);
            let weight = Tensor::randn(0f32, 0.1, spec.weight_shape(), &dev)?;
            let packed = Arc::new(PackedConv::new(&weight, None, spec)?);
            let x = Tensor::randn(0f32, 1., (1, 64, size, size), &dev)?;
            let expected = x.conv2d(&weight, spec.padding, 1, 1, 1)?;
            let outs: Vec<Tensor> = (0..64)
                .into_par_iter()
                .map(|_| packed.forward(&x, None, false))
                .collect::<Result<_>>()?;
            for out in outs {
                let diff = (out - &expected)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-3, "k{k} {size}x{size}: {diff}");
            }
        }
        Ok(())
    }

    /// A direct conv's fused max-pool gives the conv's map pooled, bit for bit (the same sums, and the max is
    /// exact), over the stems it runs (the 7x7 of an image at 224 and at odd sizes, the deep stem's first
    /// 3x3, a 4x4 kernel without padding), with and without the ReLU, at batch 1 (bands over the pool) and
    /// 3 (images over the pool), and on one thread; a conv without the fused kernel pools after the conv.
    #[test]
    fn fused_stem_pool_is_the_pool_of_the_conv() -> Result<()> {
        let dev = Device::Cpu;
        let pool1 = pool(1)?;
        let mut spec4 = ConvSpec::new(4, 16, 4, 2);
        spec4.padding = 0;
        let cases = [
            (ConvSpec::new(3, 64, 7, 2), (224, 224)),
            (ConvSpec::new(3, 32, 7, 2), (37, 53)),
            (ConvSpec::new(3, 24, 3, 2), (33, 20)),
            (spec4, (19, 70)),
            (ConvSpec::new(3, 8, 7, 2), (5, 6)),
        ];
        for (spec, (h, w)) in cases {
            let weight = Tensor::randn(0f32, 0.2, spec.weight_shape(), &dev)?;
            let bias = Tensor::randn(0f32, 0.5, spec.out_channels, &dev)?;
            for (engine, lowering) in [(Engine::Avx512, Lowering::Direct), (Engine::current(), Lowering::Gemm)] {
                if !engine.is_supported() {
                    continue;
                }
                let oihw = weight.flatten_all()?.to_vec1::<f32>()?;
                let packed = Arc::new(PackedConv::from_vec_lowered(oihw, Some(&bias), spec, engine, lowering)?);
                assert_eq!(packed.pools_fused(), packed.lowering() == Lowering::Direct);
                for (n, relu) in [(1, true), (3, false), (1, false)] {
                    let x = Tensor::randn(0f32, 1., (n, spec.in_channels, h, w), &dev)?;
                    // On the pool and on one thread (how the GEMM lowering splits a conv depends on the threads).
                    let pair = || -> Result<_> {
                        let want = super::super::pool::max_pool_3x3_s2(&packed.forward(&x, None, relu)?)?;
                        Ok((packed.forward_pooled(&x, relu)?, want))
                    };
                    for (got, want) in [pair()?, pool1.install(pair)?] {
                        assert_eq!(got.dims(), want.dims());
                        let (got, want) = (
                            got.flatten_all()?.to_vec1::<f32>()?,
                            want.flatten_all()?.to_vec1::<f32>()?,
                        );
                        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{spec:?} {h}x{w} batch {n} relu {relu} {lowering:?}");
                    }
                }
            }
        }
        Ok(())
    }
}
