//! The matrix product under every CPU inference convolution, and the micro-kernels that compute it.
//!
//! One call computes a tile of one image's output, `C[o, q] = relu?(sum_k A[o, k] * B[k, q] + bias[o] +
//! R[o, q])`, where A is the folded OIHW weight read in place (row `o` is output channel `o`, its columns
//! `(c, i, j)` the input channel and kernel tap), B is the input itself (a 1x1 stride-1 conv), its im2col
//! unfolding, or, on our micro-kernels, the unfolding packed block by block straight from the image
//! (`implicit`: an implicit GEMM, no unfolded copy), and R the residual. How it is computed is an explicit
//! choice, [`Engine`]:
//!
//! - [`Engine::Avx512`] and [`Engine::Avx2Fma`]: our own register-blocked micro-kernels
//!   (`avx512`, `avx2`). B is copied, `KC` rows at a time, into strips `NR` columns wide laid out in
//!   the order the kernel reads them (`pack`), small enough for L1; the weights are packed once, at load,
//!   into panels of `MR` output channels over the whole depth (interleaved, so a kernel reads them with one
//!   pointer), which replace the OIHW copy (held once); every strip is multiplied by every panel's `KC`
//!   steps. (OIHW rows, and bf16/f16 panels on a kernel that widens them, are copied or widened per block
//!   into a small per-thread buffer instead.) Partial sums stay in registers over a whole `KC` block, and on
//!   the last block the bias, the residual add and the ReLU are applied in registers before the only store of
//!   the result.
//! - [`Engine::Portable`]: the `gemm` crate (what Candle itself multiplies with, for every CPU it knows)
//!   followed by one pass over the tile for bias, residual and ReLU. Used on CPUs without AVX2/FMA (ARM
//!   included) and kept as the reference the fast kernels are tested against.
//!
//! Weights may also be held in bf16 or f16 (half the memory; see `reduced`): f16 and, by default off AMX,
//! bf16 are widened to f32 block by block into the same panels; bf16 may instead be multiplied as bf16, by
//! AMX-BF16 tiles (`amx`) or AVX512-BF16 dot products (`avx512_bf16`), with the activations rounded to bf16
//! as B is packed. Sums are f32 on every path; [`Bf16Kernel`] is that choice.
//!
//! On our micro-kernels the ungrouped stride-1 3x3 convolutions up to 256 x 256 channels take another route to
//! the same kernels, [`Lowering::Winograd`] (`winograd`): Winograd's F(2x2, 3x3), 16 matrix products of the
//! transformed weights (transformed as the conv runs) by the transformed input, 2.25x fewer multiply-adds; on
//! AVX-512, those up to 128 x 128 channels [`Lowering::Winograd4`], F(4x4, 3x3): 36 products, 4x fewer.
//! On AVX-512 the thin stride-2 stem is no matrix product at all, [`Lowering::Direct`] (`direct`): a direct
//! convolution reading the image's even and odd columns, 16 output pixels per load and tap.
//!
//! Under the channel-blocked layout ([`crate::layers::Layout::Nchw16c`], opt-in) the convs of a network's blocks
//! take another route: a direct convolution on NCHW16c (`nchw16c`: 16 output channels per vector, each input value
//! broadcast from its 64-byte line, no packed operand), and for the stride-1 3x3s Winograd's F(2x2) or F(4x4) on
//! that layout (`winograd16`: the transforms with the channels in the lanes, the products on `nchw16c`'s kernel).
//!
//! A product may carry a twin (`twin`): a residual block's 1x1 projection shortcut, whose operand is one kernel
//! tap's rows of its strided first conv's, copied out of that conv's strips as they are packed rather than
//! gathered from the image a second time.
//!
//! [`Engine::detect`] picks the best the running CPU supports (runtime detection), unless the environment
//! variable `ZOO_CONV_ENGINE` (`avx512`, `avx2` or `portable`) names one; [`Engine::set_default`] changes
//! the choice for models loaded afterwards (how `zoo bench --engine` compares engines in one process).
//!
//! ```
//! use resnet::layers::Engine;
//! // The fastest engine this CPU runs; `Portable` runs everywhere.
//! assert!(Engine::current().is_supported());
//! assert!(Engine::Portable.is_supported());
//! ```

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512_bf16;
mod bandwidth;
#[cfg(target_arch = "x86_64")]
pub(crate) mod direct;
pub(crate) mod implicit;
#[cfg(target_arch = "x86_64")]
pub(crate) mod int8;
#[cfg(target_arch = "x86_64")]
pub(crate) mod nchw16c;
pub(crate) mod pack;
mod peak;
pub(crate) mod portable;
pub(crate) mod reduced;
pub(crate) mod twin;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni;
pub(crate) mod winograd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod winograd16;

pub use bandwidth::memory_bandwidth;
pub use peak::{bf16_dot_speedup, fma_peak};

/// How the CPU convolution multiplies: one of our micro-kernels, or the portable `gemm` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// AVX-512F micro-kernel: 8 output channels x 48 pixels per register tile.
    Avx512,
    /// AVX2 + FMA micro-kernel: 6 output channels x 16 pixels per register tile.
    Avx2Fma,
    /// The `gemm` crate, then one pass for bias, residual and ReLU. Runs on every CPU.
    Portable,
}

impl Engine {
    /// Every engine, fastest first.
    pub const ALL: [Engine; 3] = [Engine::Avx512, Engine::Avx2Fma, Engine::Portable];

    /// The engine convolutions use unless told otherwise: `ZOO_CONV_ENGINE` when it names one this CPU
    /// can run, else the fastest this CPU supports. Read once per process.
    pub fn detect() -> Engine {
        static CHOSEN: OnceLock<Engine> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let names = "an engine this CPU runs (avx512, avx2, portable)";
            from_env(
                "ZOO_CONV_ENGINE",
                names,
                Engine::best(),
                Engine::from_name,
                Engine::is_supported,
                Engine::name,
            )
        })
    }

    /// The engine convolutions built now use: the one given to [`Engine::set_default`], else
    /// [`Engine::detect`]'s.
    pub fn current() -> Engine {
        match DEFAULT.load(Ordering::Relaxed) {
            0 => Engine::detect(),
            i => Engine::ALL[usize::from(i - 1)],
        }
    }

    /// Makes `engine` the one models loaded from now on use (`None`: back to [`Engine::detect`]); models
    /// already loaded keep theirs. An engine this CPU cannot run is refused (`Err` names it).
    pub fn set_default(engine: Option<Engine>) -> Result<(), String> {
        let code = match engine {
            None => 0,
            Some(e) if e.is_supported() => 1 + Engine::ALL.iter().position(|&x| x == e).unwrap_or(2) as u8,
            Some(e) => return Err(format!("this CPU cannot run the {} convolution engine", e.name())),
        };
        DEFAULT.store(code, Ordering::Relaxed);
        Ok(())
    }

    /// The fastest engine this CPU supports.
    pub fn best() -> Engine {
        Engine::ALL
            .into_iter()
            .find(|e| e.is_supported())
            .unwrap_or(Engine::Portable)
    }

    /// True when the running CPU has the instructions this engine needs.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Engine::Avx512 | Engine::Avx2Fma => false,
            Engine::Portable => true,
        }
    }

    /// The column widths a tile is best cut at: the micro-kernel's strip width (the `gemm` crate's 4 x 16
    /// tile for the portable engine), so that only an image's last tile has a partial strip.
    pub(crate) fn strip_cols(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 => avx512::NR,
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2Fma => avx2::NR,
            _ => 64,
        }
    }

    /// Rows of the weight panels this engine's micro-kernel reads (`None`: it reads OIHW rows in place).
    pub(crate) fn panel_rows(self) -> Option<usize> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 => Some(avx512::MR),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2Fma => Some(avx2::MR),
            _ => None,
        }
    }

    /// This engine's micro-kernel (`None`: the portable engine has none).
    pub(crate) fn micro_kernel(self) -> Option<MicroKernel> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 if self.is_supported() => Some(MicroKernel {
                tile: avx512::tile,
                mr: avx512::MR,
                nr: avx512::NR,
                extra: avx512::NARROW,
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2Fma if self.is_supported() => Some(MicroKernel {
                tile: avx2::tile,
                mr: avx2::MR,
                nr: avx2::NR,
                extra: 0,
            }),
            _ => None,
        }
    }

    /// The name `ZOO_CONV_ENGINE` and `zoo bench` use.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Avx512 => "avx512",
            Engine::Avx2Fma => "avx2",
            Engine::Portable => "portable",
        }
    }

    /// The engine called `name` (see [`Engine::name`]).
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == name.trim().to_ascii_lowercase())
    }
}

/// The choice the environment variable `var` names, when it names one this CPU runs (`from_name`,
/// `supported`); else `best`, with a warning when `var` is set to something else (`names`: what it may be).
pub(crate) fn from_env<T: Copy>(
    var: &str,
    names: &str,
    best: T,
    from_name: fn(&str) -> Option<T>,
    supported: fn(T) -> bool,
    name: fn(T) -> &'static str,
) -> T {
    let Ok(wanted) = std::env::var(var) else {
        return best;
    };
    match from_name(&wanted) {
        Some(k) if supported(k) => k,
        _ => {
            eprintln!("warning: {var}={wanted} is not {names}; using {}", name(best));
            best
        }
    }
}

/// How an f32 convolution on our micro-kernels is computed, an explicit choice like [`Engine`]'s: per conv
/// [`Lowering::choose`] picks one of the lowerings a policy allows. [`Lowering::detect`]'s policy is
/// `ZOO_CONV_LOWERING` (`winograd4`, `winograd`, `direct` or `gemm`), else [`Lowering::Winograd4`], which allows
/// them all.
///
/// ```
/// use resnet::layers::{ConvSpec, Engine, Lowering};
/// // ResNet's 3x3 stride-1 convs up to 128 x 128 channels go through Winograd's F(4x4, 3x3)...
/// assert!(Lowering::Winograd4.applies(&ConvSpec::new(64, 64, 3, 1)));
/// assert_eq!(Lowering::Winograd4.choose(&ConvSpec::new(128, 128, 3, 1), Engine::Avx512), Lowering::Winograd4);
/// // ... up to 256 x 256 through F(2x2, 3x3)...
/// assert_eq!(Lowering::Winograd4.choose(&ConvSpec::new(256, 256, 3, 1), Engine::Avx512), Lowering::Winograd);
/// assert_eq!(Lowering::Winograd.choose(&ConvSpec::new(64, 64, 3, 1), Engine::Avx512), Lowering::Winograd);
/// // (F(4x4, 3x3)'s transforms are AVX-512's: on AVX2, F(2x2, 3x3).)
/// assert_eq!(Lowering::Winograd4.choose(&ConvSpec::new(64, 64, 3, 1), Engine::Avx2Fma), Lowering::Winograd);
/// assert!(Lowering::Winograd.applies(&ConvSpec::new(64, 64, 3, 1)));
/// // ... not the strided ones, 1x1s, or 512 x 512 (ResNet runs them on 7x7 maps, too small to pay).
/// assert!(!Lowering::Winograd.applies(&ConvSpec::new(64, 128, 3, 2)));
/// assert!(!Lowering::Winograd.applies(&ConvSpec::new(512, 512, 3, 1)));
/// assert!(!Lowering::Winograd.applies(&ConvSpec::new(4096, 8, 3, 1)));
/// assert!(!Lowering::Gemm.applies(&ConvSpec::new(64, 64, 3, 1)));
/// // The 7x7 stride-2 stem of 3 input channels runs direct, where the CPU has AVX-512.
/// let stem = ConvSpec::new(3, 64, 7, 2);
/// assert!(Lowering::Direct.applies(&stem));
/// assert_eq!(Lowering::Gemm.choose(&stem, Engine::Avx512), Lowering::Gemm);
/// assert_eq!(Lowering::Winograd.choose(&stem, Engine::Avx512), Lowering::Direct);
/// assert_eq!(Lowering::Winograd.choose(&stem, Engine::Avx2Fma), Lowering::Gemm);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lowering {
    /// Winograd's F(4x4, 3x3) (`winograd::f4`) for the 3x3 stride-1 convs of at most 128 x 128 channels, on the
    /// AVX-512 engine (see [`Lowering::applies`]): 36 products per 4x4 output tile and channel pair instead of
    /// 144, 4x fewer multiply-adds. A call with too few tiles to give every thread two chunks of its own (ResNet's
    /// 28x28 maps at batch 1) runs as [`Lowering::Winograd`] instead, on the same weights. As a policy, the
    /// default: it allows every lowering, [`Lowering::Winograd`] for the 3x3s too wide for this one.
    Winograd4,
    /// Every conv as one matrix product: a 1x1 reads its input in place, others are implicit GEMMs (the
    /// unfolded input packed straight from the image) or, elsewhere, im2col bands.
    Gemm,
    /// Winograd's F(2x2, 3x3) (`winograd`) for the 3x3 stride-1 convs it pays for (see
    /// [`Lowering::applies`]): 16 products per 2x2 output tile and channel pair instead of 36. The rest as
    /// [`Lowering::Gemm`]. As a policy, it allows [`Lowering::Direct`] too.
    Winograd,
    /// A direct convolution (`engine::direct`) for a thin strided stem, on the AVX-512 engine (see
    /// [`Lowering::applies`]): no packed operand, the image's even and odd columns split once per image and
    /// read by 16-pixel loads. ResNet's 7x7 stem as a GEMM packs 147 gathered values per output pixel for 64
    /// multiply-adds each. The rest as [`Lowering::Gemm`].
    Direct,
}

impl Lowering {
    /// Every lowering, the default policy first, each policy allowing the ones after it.
    pub const ALL: [Lowering; 4] = [
        Lowering::Winograd4,
        Lowering::Winograd,
        Lowering::Direct,
        Lowering::Gemm,
    ];

    /// `ZOO_CONV_LOWERING` when it names one, else [`Lowering::Winograd4`]. Read once per process.
    pub fn detect() -> Lowering {
        static CHOSEN: OnceLock<Lowering> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let names = "a lowering (winograd4, winograd, direct, gemm)";
            from_env(
                "ZOO_CONV_LOWERING",
                names,
                Lowering::Winograd4,
                Lowering::from_name,
                |_| true,
                Lowering::name,
            )
        })
    }

    /// True when a conv of `spec` can be lowered this way rather than to one GEMM. [`Lowering::Winograd4`]: those
    /// [`Lowering::Winograd`] applies to with at most 128 channels on either side (ResNet's 256-channel 3x3s run
    /// on 14x14 maps: 16 tiles of 4x4 per image, a quarter of each partly outside the map). [`Lowering::Direct`]:
    /// ungrouped undilated stride-2 convs of at most 4 input channels (an image's) and output channels in
    /// whole panels of 8. [`Lowering::Winograd`]: ungrouped undilated 3x3 stride-1 convs with padding 1 whose weights hold at most
    /// 256 x 256 channel pairs, neither side over 512. ResNet's 512-channel 3x3s run on 7x7 maps (16 tiles per
    /// image, a quarter of them partly outside the map), where transforming 512 x 512 kernels per pass costs
    /// what Winograd saves (measured: 0.97-1.00x the GEMM's time at batch 8 and 1).
    pub fn applies(self, spec: &crate::layers::ConvSpec) -> bool {
        match self {
            Lowering::Gemm => false,
            Lowering::Winograd4 => Self::winograd_applies(spec) && spec.in_channels.max(spec.out_channels) <= 128,
            Lowering::Winograd => Self::winograd_applies(spec),
            #[cfg(target_arch = "x86_64")]
            Lowering::Direct => direct::applies(spec),
            #[cfg(not(target_arch = "x86_64"))]
            Lowering::Direct => false,
        }
    }

    /// The lowering a conv of `spec` on `engine`'s micro-kernel gets under this policy: Winograd or the
    /// direct conv where the policy allows it and it [applies](Lowering::applies) (the direct conv only on
    /// [`Engine::Avx512`]), else one GEMM.
    pub fn choose(self, spec: &crate::layers::ConvSpec, engine: Engine) -> Lowering {
        let direct = engine == Engine::Avx512 && Lowering::Direct.applies(spec);
        match self {
            Lowering::Winograd4 if engine == Engine::Avx512 && Lowering::Winograd4.applies(spec) => Lowering::Winograd4,
            Lowering::Winograd4 | Lowering::Winograd if Lowering::Winograd.applies(spec) => Lowering::Winograd,
            Lowering::Winograd4 | Lowering::Winograd | Lowering::Direct if direct => Lowering::Direct,
            _ => Lowering::Gemm,
        }
    }

    fn winograd_applies(spec: &crate::layers::ConvSpec) -> bool {
        spec.kernel == 3
            && spec.stride == 1
            && spec.padding == 1
            && spec.dilation == 1
            && spec.groups == 1
            && spec.in_channels * spec.out_channels <= 256 * 256
            // A task's transformed input holds 16 x 96 values per input channel, whatever the map's size.
            && spec.in_channels.max(spec.out_channels) <= 512
    }

    /// The name `ZOO_CONV_LOWERING` uses.
    pub fn name(self) -> &'static str {
        match self {
            Lowering::Gemm => "gemm",
            Lowering::Winograd4 => "winograd4",
            Lowering::Winograd => "winograd",
            Lowering::Direct => "direct",
        }
    }

    /// The lowering called `name` (see [`Lowering::name`]).
    pub fn from_name(name: &str) -> Option<Lowering> {
        Lowering::ALL
            .into_iter()
            .find(|l| l.name() == name.trim().to_ascii_lowercase())
    }
}

/// Runs `f` on this thread's buffer `key`, grown to `len`. The buffer is taken out of the thread-local
/// while `f` runs: `f` may start rayon work, and rayon may meanwhile run another task on this thread (say,
/// another forward pass of a caller's parallel loop), which then simply gets a fresh buffer.
pub(crate) fn with_buffer<T: Copy + Default + 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = key.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    let result = f(&mut buf[..len]);
    key.with(|c| {
        let mut kept = c.borrow_mut();
        if kept.len() < buf.len() {
            *kept = buf;
        }
    });
    result
}

/// [`Engine::set_default`]'s choice: 0 for none, else 1 + its index in [`Engine::ALL`].
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// How convolutions holding bf16 weights multiply (see `Conv::new_inference_cpu_as`), an explicit choice
/// like [`Engine`]'s: [`Bf16Kernel::detect`] picks the fastest the CPU has unless `ZOO_BF16_KERNEL`
/// (`amx`, `dot` or `widen`) names one.
///
/// ```
/// use resnet::layers::Bf16Kernel;
/// assert!(Bf16Kernel::Widen.is_supported());
/// assert!(Bf16Kernel::detect().is_supported());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// AMX-BF16 tiles (Intel Sapphire Rapids and later, on Linux): 16 x 32 by 32 x 16 per instruction.
    /// Activations are rounded to bf16 as they are packed; sums are f32.
    Amx,
    /// AVX512-BF16 `vdpbf16ps` in the AVX-512 micro-kernel: pairs of bf16 per f32 lane. Activations are
    /// rounded to bf16; sums are f32. The default without AMX where the instruction does more multiply-adds
    /// per second than the f32 FMA (AMD Zen 4, measured at first use); where it issues at half the FMA's
    /// rate (Intel Sapphire Rapids) it is slower than [`Bf16Kernel::Widen`].
    Dot,
    /// bf16 storage only: each block of weights is widened to f32 (exact) and the f32 kernel multiplies
    /// f32 activations. Every engine with weight panels (AVX-512, AVX2).
    Widen,
}

impl Bf16Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 3] = [Bf16Kernel::Amx, Bf16Kernel::Dot, Bf16Kernel::Widen];

    /// `ZOO_BF16_KERNEL` when it names a kernel this CPU runs, else AMX where present, else dot products
    /// where they outrun the f32 FMA by a quarter or more (a few milliseconds' measurement of both in
    /// registers, [`bf16_dot_speedup`]), else widening.
    pub fn detect() -> Bf16Kernel {
        static CHOSEN: OnceLock<Bf16Kernel> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let dot = || Bf16Kernel::Dot.is_supported() && peak::bf16_dot_speedup(3).is_some_and(|r| r >= 1.25);
            let best = match Bf16Kernel::Amx.is_supported() {
                true => Bf16Kernel::Amx,
                false if dot() => Bf16Kernel::Dot,
                false => Bf16Kernel::Widen,
            };
            let (from_name, supported, name) = (Bf16Kernel::from_name, Bf16Kernel::is_supported, Bf16Kernel::name);
            let names = "a bf16 kernel this CPU runs (amx, dot, widen)";
            from_env("ZOO_BF16_KERNEL", names, best, from_name, supported, name)
        })
    }

    /// True when the running CPU (and, for AMX, the OS) supports this kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => Engine::Avx512.is_supported() && amx::is_supported(),
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Dot => Engine::Avx512.is_supported() && avx512_bf16::is_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            Bf16Kernel::Amx | Bf16Kernel::Dot => false,
            Bf16Kernel::Widen => true,
        }
    }

    /// True when activations are rounded to bf16 before they are multiplied (AMX and dot products).
    pub fn rounds_inputs(self) -> bool {
        self != Bf16Kernel::Widen
    }

    /// The name `ZOO_BF16_KERNEL` and `zoo bench` use.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Dot => "dot",
            Bf16Kernel::Widen => "widen",
        }
    }

    /// The kernel called `name` (see [`Bf16Kernel::name`]).
    pub fn from_name(name: &str) -> Option<Bf16Kernel> {
        Bf16Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name.trim().to_ascii_lowercase())
    }
}

/// How int8 convolutions multiply (see `PackedConv::from_vec_int8`), an explicit choice like [`Engine`]'s:
/// [`Int8Kernel::detect`] picks the fastest the CPU has unless `ZOO_INT8_KERNEL` (`amx`, `vnni` or `f32`)
/// names one. The int8 kernels compute the same integer sums exactly, so they give the same outputs.
///
/// ```
/// use resnet::layers::Int8Kernel;
/// assert!(Int8Kernel::Dequantized.is_supported());
/// assert!(Int8Kernel::detect().is_supported());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// AMX-INT8 tiles (`tdpbsud`, Intel Sapphire Rapids and later, on Linux): 16 x 64 by 64 x 16 bytes
    /// into 16 x 16 i32 per instruction.
    Amx,
    /// AVX512-VNNI `vpdpbusd` (Intel Cascade Lake / Ice Lake and later, AMD Zen 4 and later): four
    /// byte products summed into each i32 lane, in an 8 x 48 register tile.
    Vnni,
    /// No int8 instructions: the dequantized int8 weights multiplied in f32 by f32 inputs. Correct (the
    /// weights are the quantized ones), not faster than f32.
    Dequantized,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 3] = [Int8Kernel::Amx, Int8Kernel::Vnni, Int8Kernel::Dequantized];

    /// `ZOO_INT8_KERNEL` when it names a kernel this CPU runs, else the fastest this CPU runs.
    pub fn detect() -> Int8Kernel {
        static CHOSEN: OnceLock<Int8Kernel> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let (from_name, supported, name) = (Int8Kernel::from_name, Int8Kernel::is_supported, Int8Kernel::name);
            let names = "an int8 kernel this CPU runs (amx, vnni, f32)";
            from_env("ZOO_INT8_KERNEL", names, Int8Kernel::best(), from_name, supported, name)
        })
    }

    /// The fastest int8 kernel this CPU supports.
    pub fn best() -> Int8Kernel {
        Int8Kernel::ALL
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(Int8Kernel::Dequantized)
    }

    /// True when the running CPU (and, for AMX, the OS) supports this kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx => Engine::Avx512.is_supported() && amx::is_int8_supported(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni => Engine::Avx512.is_supported() && vnni::is_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            Int8Kernel::Amx | Int8Kernel::Vnni => false,
            Int8Kernel::Dequantized => true,
        }
    }

    /// True for the kernels that multiply int8 by int8 (not [`Int8Kernel::Dequantized`]).
    pub fn is_integer(self) -> bool {
        self != Int8Kernel::Dequantized
    }

    /// The name `ZOO_INT8_KERNEL` and `zoo bench` use.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx",
            Int8Kernel::Vnni => "vnni",
            Int8Kernel::Dequantized => "f32",
        }
    }

    /// The kernel called `name` (see [`Int8Kernel::name`]).
    pub fn from_name(name: &str) -> Option<Int8Kernel> {
        Int8Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name.trim().to_ascii_lowercase())
    }
}

/// What happens to a finished tile before it is stored: `relu?(acc + bias[o] + residual[o, q]?)`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue {
    /// The bias of the tile's first row; one per row.
    pub bias: *const f32,
    /// The residual at the tile's (first row, first column), and its row stride.
    pub residual: Option<(*const f32, usize)>,
    pub relu: bool,
}

/// The weights a tile multiplies by: rows `0..m` of its output channels, in one of the layouts a conv holds.
#[derive(Clone, Copy)]
pub(crate) enum Lhs {
    /// OIHW rows, `lda` floats apart (the portable engine's; also what the kernels pack per block).
    Rows { a: *const f32, lda: usize },
    /// f32 panels of `rows` output channels over the whole depth, as packed at load: panel `p` at
    /// `a + p * k * rows`, step `kk` of row `i` at `kk * rows + i`.
    Panels { a: *const f32, rows: usize },
    /// bf16 pair panels ([`reduced::bf16_panels`]): panel `p` at `a + p * ceil(k / 2) * rows`; `dot`:
    /// multiplied by the AVX512-BF16 kernel, else widened to f32.
    Bf16 { a: *const u32, rows: usize, dot: bool },
    /// bf16 OIHW rows padded to `kpad` steps ([`reduced::bf16_rows`]), for the AMX kernel.
    Bf16Rows { a: *const u16, kpad: usize },
    /// int8 OIHW rows padded to `kpad` bytes, for an int8 kernel (`vnni`: AVX512-VNNI, else AMX-INT8),
    /// with the tile's requantization.
    #[cfg(target_arch = "x86_64")]
    Int8Rows {
        a: *const i8,
        kpad: usize,
        q: int8::Requant,
        vnni: bool,
    },
    /// f16 panels in the f32 layout ([`reduced::f16_panels`]).
    F16 { a: *const u16, rows: usize },
}

/// One output tile: `m` x `n` of C (row stride `ldc`), the sum over `k` of A (`m` x `k`, see [`Lhs`]) times
/// B (`k` x `n`, row stride `ldb`), then the epilogue.
#[derive(Clone, Copy)]
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Lhs,
    pub b: *const f32,
    pub ldb: usize,
    /// The conv's f32 input image, when B is packed straight from it (implicit GEMM, our micro-kernels
    /// and AMX-BF16 only): `b` and `ldb` are then unused.
    pub image: Option<implicit::Implicit<f32>>,
    pub c: *mut f32,
    pub ldc: usize,
    pub epilogue: Epilogue,
    /// A second product on the same packed B (f32 panels on both sides, B packed from the image; see
    /// [`twin`]).
    pub twin: Option<twin::Twin>,
}

/// One register tile of a micro-kernel: at most `MR` rows and `NR` columns of C.
#[derive(Clone, Copy)]
pub(crate) struct MicroTile {
    /// A packed panel of A: `k` groups of the kernel's `MR` floats (row `i` of step `kk` at `kk * MR + i`),
    /// 64-byte aligned, zero in the rows past `rows`.
    pub a: *const f32,
    pub rows: usize,
    /// A packed strip: `k` rows of the kernel's strip width, 64-byte aligned, zero beyond `cols`.
    pub b: *const f32,
    pub cols: usize,
    pub k: usize,
    /// The A panel the next tile reads (as many bytes as this one's): the kernel prefetches it while it runs,
    /// so that weights streamed from memory (each read once per image at batch 1) arrive before they are
    /// needed. Never dereferenced.
    pub next_a: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    /// Start from zero (the first `KC` block) or add to what C holds.
    pub first: bool,
    /// Applied on the last `KC` block, with `bias`/`residual` already at this tile's corner.
    pub epilogue: Option<Epilogue>,
    /// This tile's share of the lines fetched ahead for the next block (see `blocked`).
    pub fetch: Fetch,
    /// The next strip's columns this tile computes too (a full strip's tile only; see [`Extra`]).
    pub extra: Extra,
}

/// The first `cols` columns of a packed strip, computed by the tile of a full strip before it too (AVX-512: at most
/// four). A column block's last few columns (a 7x7 map's 49th of 48 + 1, the tiles a Winograd chunk holds past
/// its one strip) then ride on the weights that tile loads anyway: on their own, a tile of `MR` rows by one column
/// loads every weight again (from L2, where they do not fit L1) for a single multiply-add each. ResNet-50 b1 spent
/// 5.4 % of its time in those tiles (`perf`); with them carried, layer4's convs at b1 ran 7-9 % faster, the
/// F(4x4) convs 4-6 %, whole passes at b1 2-3 % (ResNet-50, ResNet-18), at b8 alike (one process, alternating).
/// `b` is their first column in the strip (its rows as far apart as a strip's), `c` their output and `r` their
/// residual (used where the tile's epilogue has one), each with the tile's row stride: in C itself a later
/// column of the tile's rows, in the Winograd products' `M` the next strip's block.
#[derive(Clone, Copy)]
pub(crate) struct Extra {
    pub b: *const f32,
    pub c: *mut f32,
    pub r: *const f32,
    /// 0: none.
    pub cols: usize,
}

impl Extra {
    /// No extra columns.
    pub const NONE: Extra = Extra {
        b: std::ptr::null(),
        c: std::ptr::null_mut(),
        r: std::ptr::null(),
        cols: 0,
    };

    /// The tile of `t`'s rows over these columns alone.
    pub(crate) fn tile(&self, t: &MicroTile) -> MicroTile {
        MicroTile {
            b: self.b,
            cols: self.cols,
            c: self.c,
            epilogue: t.epilogue.map(|e| Epilogue {
                residual: e.residual.map(|(_, ld)| (self.r, ld)),
                ..e
            }),
            fetch: Fetch::NONE,
            extra: Extra::NONE,
            ..*t
        }
    }
}

/// How a column block's last strip, of at most the kernel's [`Extra`] columns, rides on the `full` strips before
/// it: full strip `s` takes its columns `s * last / full .. (s + 1) * last / full` (of `last`), so that each takes
/// at most one where there are at least as many full strips as columns, and the only one takes them all (48 + 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Fused {
    pub full: usize,
    pub last: usize,
}

impl Fused {
    /// For a block of `cols` columns in strips `nr` wide, on a kernel whose tiles take up to `extra` columns of
    /// a next strip: `None` where its last strip is full or wider than `extra`, or there is no full strip before it.
    pub(crate) fn of(cols: usize, nr: usize, extra: usize) -> Option<Fused> {
        let strips = cols.div_ceil(nr);
        let last = cols - (strips.max(1) - 1) * nr;
        (strips >= 2 && last <= extra).then_some(Fused { full: strips - 1, last })
    }

    /// The last strip's columns full strip `s` takes.
    pub(crate) fn share(&self, s: usize) -> std::ops::Range<usize> {
        s * self.last / self.full..(s + 1) * self.last / self.full
    }

    /// Full strip `s`'s [`Extra`], where the last strip's first column is at `b` (its rows as far apart as the
    /// tile's), its output at `c` and its residual at `r` (null: none); [`Extra::NONE`] where `s` takes none.
    pub(crate) fn extra(&self, s: usize, b: *const f32, c: *mut f32, r: *const f32) -> Extra {
        let cols = self.share(s);
        match cols.is_empty() {
            true => Extra::NONE,
            false => Extra {
                b: b.wrapping_add(cols.start),
                c: c.wrapping_add(cols.start),
                r: r.wrapping_add(cols.start),
                cols: cols.len(),
            },
        }
    }
}

/// A tile's share of a block's lines to fetch ahead: the next `lines` of the [`Ahead`] at `ahead`, which the
/// block's tiles share, each going on where the one before stopped (null: none). A pointer and a count, so that
/// tiles without it carry little.
#[derive(Clone, Copy)]
pub(crate) struct Fetch {
    pub ahead: *mut Ahead,
    pub lines: usize,
}

impl Fetch {
    /// Nothing to fetch.
    pub const NONE: Fetch = Fetch {
        ahead: std::ptr::null_mut(),
        lines: 0,
    };

    /// True when the tile has lines to fetch.
    #[inline(always)]
    pub(crate) fn some(&self) -> bool {
        !self.ahead.is_null()
    }

    /// The tile's share, as a run of its own (empty for [`Fetch::NONE`]).
    ///
    /// # Safety
    /// `ahead` is null or points at an `Ahead` no other thread uses.
    #[inline(always)]
    pub(crate) unsafe fn start(&self) -> Ahead {
        match self.ahead.as_ref() {
            Some(a) => Ahead {
                count: a.count.min(self.lines),
                ..*a
            },
            None => Ahead::NONE,
        }
    }

    /// Hands the shared run on past the tile's share, once `mine` (from [`Fetch::start`]) is all fetched.
    ///
    /// # Safety
    /// As [`Fetch::start`].
    #[inline(always)]
    pub(crate) unsafe fn finish(&self, mine: &Ahead) {
        debug_assert_eq!(mine.count, 0, "the tile's share is fetched in full");
        if let Some(a) = self.ahead.as_mut() {
            let count = a.count - a.count.min(self.lines);
            *a = Ahead { count, ..*mine };
        }
    }
}

/// A block of a matrix or image that a tile's kernel fetches ahead ([`Ahead`]): `planes` planes `plane_ld`
/// floats apart, in each `runs` runs of `cols` floats `run_ld` apart (a matrix's rows: planes of one run; an
/// image's channels: planes of one run of whole image rows, or at stride 2 a run per row a 1x1 reads).
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub at: *const f32,
    pub planes: usize,
    pub plane_ld: usize,
    pub runs: usize,
    pub run_ld: usize,
    pub cols: usize,
}

impl Region {
    /// `rows` rows of `cols` floats, `ld` apart.
    pub(crate) fn rows(at: *const f32, ld: usize, rows: usize, cols: usize) -> Region {
        Region {
            at,
            planes: rows,
            plane_ld: ld,
            runs: 1,
            run_ld: 0,
            cols,
        }
    }

    /// 64-byte lines per run: one more where runs may start inside a line (their last floats are then in one
    /// more).
    fn lines(&self) -> usize {
        let aligned = [
            self.at as usize,
            4 * self.plane_ld,
            4 * self.run_ld * usize::from(self.runs > 1),
        ]
        .iter()
        .all(|x| x.is_multiple_of(64));
        (4 * self.cols).div_ceil(64) + usize::from(!aligned)
    }

    /// The lines of the whole region.
    pub(crate) fn total_lines(&self) -> usize {
        self.planes * self.runs * self.lines()
    }
}

/// The 64-byte lines a micro-kernel fetches ahead, one per turn of its depth loop: `count` lines of a
/// [`Region`], starting at `at`, which is line `line` of run `run` of its plane. Only a hint: the lines are never
/// read through it, so it may name memory past the region's end.
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    pub at: *const u8,
    pub count: usize,
    line: usize,
    lines: usize,
    run: usize,
    runs: usize,
    /// Bytes from a run's start to the next run's, and from a plane's last run's start to the next plane's first.
    run_step: usize,
    plane_step: usize,
}

impl Ahead {
    /// Nothing to fetch.
    pub const NONE: Ahead = Ahead {
        at: std::ptr::null(),
        count: 0,
        line: 0,
        lines: 1,
        run: 0,
        runs: 1,
        run_step: 0,
        plane_step: 0,
    };

    /// Lines `first..first + count` of `r`, counted line by line along each run, run by run, plane by plane,
    /// and capped at its end.
    pub(crate) fn of(r: &Region, first: usize, count: usize) -> Ahead {
        let lines = r.lines();
        let count = count.min(r.total_lines().saturating_sub(first));
        let (plane, rest) = (first / (r.runs * lines), first % (r.runs * lines));
        let (run, line) = (rest / lines, rest % lines);
        let at = r.at.wrapping_add(plane * r.plane_ld + run * r.run_ld).cast::<u8>();
        Ahead {
            at: at.wrapping_add(64 * line),
            count,
            line,
            lines,
            run,
            runs: r.runs,
            run_step: 4 * r.run_ld,
            plane_step: 4 * (r.plane_ld - (r.runs - 1) * r.run_ld),
        }
    }

    /// The next line's address, if any is left.
    #[inline(always)]
    fn next(&mut self) -> Option<*const u8> {
        if self.count == 0 {
            return None;
        }
        let at = self.at;
        self.count -= 1;
        self.line += 1;
        self.at = match self.line == self.lines {
            false => at.wrapping_add(64),
            true => {
                // Back to the run's start, then on to the next run or plane.
                self.line = 0;
                self.run += 1;
                let start = at.wrapping_sub(64 * (self.lines - 1));
                match self.run == self.runs {
                    false => start.wrapping_add(self.run_step),
                    true => {
                        self.run = 0;
                        start.wrapping_add(self.plane_step)
                    }
                }
            }
        };
        Some(at)
    }

    /// Fetches the next line, if any is left.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn fetch(&mut self) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        if let Some(at) = self.next() {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
        }
    }
}

/// Rows of B per packed block: a strip of `KC x NR` floats (24 KiB for AVX-512's 48 columns) stays in L1
/// while every block of `MR` output channels passes over it.
const KC: usize = 128;
/// Columns of C per block: the `KC x NC` packed panel and the `m x NC` output block stay in L2.
const NC: usize = 192;
/// Floats of packed B per column block when rows go outer (see `blocked`): 256 KiB, which with the next block's
/// input fetched ahead meanwhile (as much again) fills half of a 1 MiB L2 (AMD Zen 4's; Intel's are larger).
/// With the fetch ahead, 512 KiB blocks ran ResNet-50 b8's 256 -> 64 1x1 at 171-183 GFLOP/s against 183-199;
/// 128 KiB ran its other 1x1s 5 % faster to 3 % slower (mixed).
const ROWS_OUTER_B: usize = 64 * 1024;
/// The smallest image whose next block a tile fetches ahead as B is packed from it (see `blocked`): 1 MiB, an
/// L2's worth (Zen 4's). Smaller images stay in cache from block to block, and fetching them only cost time:
/// ResNet-18 b8's 64 -> 128 stride-2 1x1 (784 KiB per image) ran at 65-67 % of the peak with it, 72-74 % without.
const AHEAD_IMAGE: usize = 1 << 20;
/// The deepest product that goes rows outer: deeper, a panel's whole depth no longer sits in L1.
const ROWS_OUTER_K: usize = 512;
/// The fewest columns that go rows outer: below, the output stays in cache either way (measured: ResNet-50's
/// layer3 and layer4 1x1 convs ran 2-8 % slower rows outer).
const ROWS_OUTER_N: usize = 512;

/// Whether a product goes rows outer (see `blocked`): B packed from a matrix (`from_matrix`, a 1x1 stride-1
/// conv's input), at most `ROWS_OUTER_K` deep, at least `ROWS_OUTER_N` columns wide, and `rows >= min_rows`.
fn rows_outer(from_matrix: bool, g: &Gemm, min_rows: usize) -> bool {
    from_matrix && g.k <= ROWS_OUTER_K && g.n >= ROWS_OUTER_N && g.m >= min_rows
}

/// The (strip, row block) of a column block's tile `t` of `strips x blocks`: strips outer (each strip stays in
/// L1 while every block of rows passes over it), or rows outer (see `blocked`).
fn tile_at(rows_outer: bool, t: usize, strips: usize, blocks: usize) -> (usize, usize) {
    match rows_outer {
        true => (t % strips, t / strips),
        false => (t / blocks, t % blocks),
    }
}

impl Engine {
    /// Computes one tile (see [`Gemm`]), single-threaded.
    ///
    /// # Safety
    /// The pointers cover the extents `g` describes, C does not overlap A, B or the residual, and no
    /// other thread writes this tile.
    pub(crate) unsafe fn gemm(self, g: &Gemm) {
        debug_assert!(
            g.image.is_none() || self != Engine::Portable,
            "implicit GEMM on our micro-kernels only"
        );
        #[cfg(target_arch = "x86_64")]
        match g.a {
            Lhs::Bf16Rows { a, kpad } => {
                debug_assert!(amx::is_supported(), "AMX weights on a CPU without AMX");
                return amx::gemm(g, a, kpad);
            }
            Lhs::Int8Rows { a, kpad, q, vnni: true } => {
                debug_assert!(Int8Kernel::Vnni.is_supported(), "VNNI weights on a CPU without it");
                return vnni::gemm_int8(g, a, kpad, &q);
            }
            Lhs::Int8Rows { a, kpad, q, .. } => {
                debug_assert!(amx::is_int8_supported(), "AMX-INT8 weights on a CPU without it");
                return amx::gemm_int8(g, a, kpad, &q);
            }
            _ => {}
        }
        match (self, self.micro_kernel()) {
            #[cfg(target_arch = "x86_64")]
            (Engine::Avx512, Some(kernel)) => {
                let dot = avx512_bf16::is_supported().then_some(avx512_bf16::tile as unsafe fn(&MicroTile));
                let packers = (pack::strips_avx512 as StripPacker, implicit::strips as ImagePacker);
                blocked(g, kernel, dot, packers)
            }
            #[cfg(target_arch = "x86_64")]
            (Engine::Avx2Fma, Some(kernel)) => {
                let packers = (pack::strips as StripPacker, implicit::strips_avx2 as ImagePacker);
                blocked(g, kernel, None, packers)
            }
            _ => match g.a {
                Lhs::Rows { a, lda } => portable::gemm(g, a, lda),
                _ => unreachable!("the portable engine reads OIHW rows (packed weights go with their kernel)"),
            },
        }
    }
}

/// The blocking around a micro-kernel: columns in blocks of `NC`; depth in blocks of `KC`, for which B is
/// packed into strips of `nr` columns (by `packers.0`, or straight from the image by `packers.1`, see
/// [`implicit`]) and A, unless packed at load in this kernel's layout, into panels of `mr` rows (f32: copied;
/// bf16/f16: widened); per strip every panel of rows, or for wide shallow products per panel every strip (rows
/// outer, see [`rows_outer`] and [`tile_at`]). bf16 weights with a `dot` kernel instead go to it as they are, with B
/// packed into bf16 pair strips `2 KC` steps deep (the same bytes as `KC` f32 steps).
unsafe fn blocked(
    g: &Gemm,
    micro: MicroKernel,
    dot: Option<unsafe fn(&MicroTile)>,
    (strips, image_strips): (StripPacker, ImagePacker),
) {
    let MicroKernel {
        tile: kernel, mr, nr, ..
    } = micro;
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 {
        // Nothing to multiply: the tile is the epilogue applied to zero.
        return portable::epilogue(g);
    }
    let rows = match g.a {
        Lhs::Rows { .. } | Lhs::Bf16Rows { .. } => mr,
        #[cfg(target_arch = "x86_64")]
        Lhs::Int8Rows { .. } => mr,
        Lhs::Panels { rows, .. } | Lhs::Bf16 { rows, .. } | Lhs::F16 { rows, .. } => rows,
    };
    // Weights packed at load are always in this engine's panels (`PackedConv` packs with its `MR`).
    debug_assert_eq!(rows, mr, "weights packed for another micro-kernel");
    let dot = match g.a {
        Lhs::Bf16 { dot: true, .. } => dot,
        _ => None,
    };
    let widen = !matches!(g.a, Lhs::Panels { .. }) && dot.is_none();
    let panels = g.m.div_ceil(mr);
    let a_len = if widen { panels * mr * KC } else { 0 };
    // A twin reads the main product's f32 strips as packed from the image.
    let twin = g.twin.filter(|_| !widen && dot.is_none() && g.image.is_some());
    debug_assert_eq!(
        twin.is_some(),
        g.twin.is_some(),
        "a twin beside a product it cannot share"
    );
    // Rows outer: for a product with many output columns, B packed from a matrix (a 1x1 conv's input) and
    // weights packed at load, B is packed over the whole depth for a wide column block held in L2, and each
    // panel of rows sweeps it. A tile's stores then continue its rows' runs, which the hardware prefetcher
    // follows, and C is written once, never read back. Strips outer instead touch every row of the output
    // once per strip: a 64 -> 256 1x1 conv on a 56x56 map writes 256 rows 48 floats at a time, and at batch 8
    // ran at half the speed. (Tried on B packed from an image, the 7x7 stem and the strided convs: no gain.)
    // Packing a block reads its input from memory (at batch 8 layer1's 25.7 MB, just written by the conv
    // before): while a block is multiplied, its tiles fetch the next block's input ahead ([`Ahead`]), a share
    // each, one line per turn of the kernel's depth loop, so that the reads overlap the arithmetic rather than
    // follow it. On AVX-512, ResNet-50 b8's 256 -> 64 1x1s went from 155 to 188 GFLOP/s, its 64 -> 64 from 160
    // to 180 (a burst of prefetches before each tile instead gained nothing with the input just written). B
    // packed from an image fetches the same way, the next block's channels as whole image rows (a stride-2 1x1:
    // only the rows it reads): the stride-2 1x1 downsamples at b8 +9-13 % (256 -> 512 at 56x56, 512 -> 1024 at
    // 28x28), the strided 3x3s +4 %.
    let rows_outer = rows_outer(g.image.is_none() && !widen, g, 4 * mr);
    // Depth per block: a bf16 pair strip holds two steps per lane, so twice the steps fill the same L1 (and
    // C is loaded and stored half as often).
    let kc = match (rows_outer, dot) {
        (true, _) => g.k,
        (false, Some(_)) => 2 * KC,
        (false, None) => KC,
    };
    let nc = match rows_outer {
        true => (ROWS_OUTER_B / kc).max(nr) / nr * nr,
        false => NC / nr * nr,
    };
    // The most columns a full strip's tile takes from the next strip ([`Extra`]; f32 strips only).
    let extra = if dot.is_none() { micro.extra } else { 0 };
    let b_len = kc * nc.max(nr);
    // The loads that gather each column block from the image (implicit GEMM), planned once per block.
    let mut gather = implicit::Gather::default();
    let t_at = (b_len + a_len).next_multiple_of(16);
    let t_len = twin.map_or(0, |t| t.len(nc.max(nr)));
    with_panel(t_at + t_len, |panel| {
        let (panel, tp) = panel.split_at_mut(t_at);
        let (bp, ap) = panel.split_at_mut(b_len);
        for j0 in (0..g.n).step_by(nc) {
            let nb = nc.min(g.n - j0);
            if let Some(img) = &g.image {
                gather.plan(img, img.first_col + j0, nb, nb.div_ceil(nr) * nr / 16);
            }
            for k0 in (0..g.k).step_by(kc) {
                let kb = kc.min(g.k - k0);
                let b = g.b.wrapping_add(k0 * g.ldb + j0);
                // Depth steps of a strip row: pairs for the bf16 kernel.
                let steps = match (dot, &g.image) {
                    #[cfg(target_arch = "x86_64")]
                    (Some(_), image) => {
                        let lanes = std::slice::from_raw_parts_mut(bp.as_mut_ptr().cast::<u32>(), bp.len());
                        match image {
                            Some(img) => implicit::pairs(img, &gather, (k0, kb), nb, nr, kb.div_ceil(2), lanes),
                            None => avx512_bf16::strips(b, g.ldb, kb, nb, nr, kb.div_ceil(2), lanes),
                        }
                        kb.div_ceil(2)
                    }
                    (None, Some(img)) => {
                        image_strips(img, &gather, (k0, kb), nb, nr, bp);
                        if let Some(t) = &twin {
                            t.take((k0, kb), (nb.div_ceil(nr), nr), bp.as_ptr(), tp.as_mut_ptr());
                        }
                        kb
                    }
                    _ => {
                        strips(b, g.ldb, kb, nb, nr, bp);
                        kb
                    }
                };
                match g.a {
                    Lhs::Rows { a, lda } => pack::panels(a.add(k0), lda, g.m, kb, mr, ap),
                    Lhs::Bf16 { a, .. } if widen => reduced::widen_bf16(a, g.k, mr, panels, (k0, kb), ap),
                    Lhs::F16 { a, .. } => {
                        for p in 0..panels {
                            let src = std::slice::from_raw_parts(a.add(p * g.k * mr + k0 * mr), kb * mr);
                            reduced::widen_f16(src, &mut ap[p * kb * mr..(p + 1) * kb * mr]);
                        }
                    }
                    Lhs::Bf16Rows { .. } => unreachable!("AMX weights go to the AMX kernel"),
                    #[cfg(target_arch = "x86_64")]
                    Lhs::Int8Rows { .. } => unreachable!("int8 weights go to the AMX kernel"),
                    _ => {}
                }
                let last = k0 + kb == g.k;
                // Panel `p`'s A for depth block `k0` (wrapping: also names the tile after the last).
                let panel_a = |p: usize, k0: usize| -> *const f32 {
                    match g.a {
                        Lhs::Panels { a, .. } => a.wrapping_add(p * g.k * mr + k0 * mr),
                        Lhs::Bf16 { a, .. } if !widen => a.wrapping_add(p * g.k.div_ceil(2) * mr + k0 / 2 * mr).cast(),
                        _ => ap.as_ptr().wrapping_add(p * kb * mr),
                    }
                };
                // The last strip's few columns on the tiles of the full strips, where the kernel takes them.
                let fused = Fused::of(nb, nr, extra);
                let strips = fused.map_or(nb.div_ceil(nr), |f| f.full);
                // The input the next block packs, fetched a share per tile while this block is multiplied: rows
                // outer, the next column block of B; packed from an image, the next depth block's channels or
                // else the next column block's, as the image rows they read (see `Implicit::span`).
                let next = j0 + nc;
                let ahead = match &g.image {
                    None if rows_outer && next < g.n => {
                        Some(Region::rows(g.b.wrapping_add(next), g.ldb, g.k, nc.min(g.n - next)))
                    }
                    None => None,
                    Some(img) if img.bytes() < AHEAD_IMAGE => None,
                    Some(img) if k0 + kb < g.k => img.span((k0 + kb, kc.min(g.k - k0 - kb)), j0, nb),
                    Some(img) if next < g.n => img.span((0, kc.min(g.k)), next, nc.min(g.n - next)),
                    Some(_) => None,
                };
                let mut ahead = ahead.map_or(Ahead::NONE, |r| Ahead::of(&r, 0, usize::MAX));
                let fetch = match ahead.count {
                    0 => Fetch::NONE,
                    lines => Fetch {
                        ahead: &mut ahead,
                        lines: lines.div_ceil(strips * panels),
                    },
                };
                // The tiles in `tile_at`'s order, stepped without its divisions (a tile of a 64-deep product is
                // ~800 cycles; four divisions per tile were a visible share of them).
                let tiles = strips * panels;
                let (mut s, mut p) = (0, 0);
                for t in 0..tiles {
                    debug_assert_eq!((s, p), tile_at(rows_outer, t, strips, panels));
                    let next = match rows_outer {
                        true if s + 1 < strips => (s + 1, p),
                        true => (0, p + 1),
                        false if p + 1 < panels => (s, p + 1),
                        false => (s + 1, 0),
                    };
                    let (j, i0) = (s * nr, p * mr);
                    let strip = bp.as_ptr().add(s * steps * nr);
                    let cols = nr.min(nb - j);
                    let epilogue = last.then(|| Epilogue {
                        bias: g.epilogue.bias.add(i0),
                        residual: g.epilogue.residual.map(|(r, ld)| (r.add(i0 * ld + j0 + j), ld)),
                        relu: g.epilogue.relu,
                    });
                    let next_a = match t + 1 < tiles {
                        true => panel_a(next.1, k0),
                        false => panel_a(0, k0 + kb),
                    };
                    let t = MicroTile {
                        a: panel_a(p, k0),
                        rows: mr.min(g.m - i0),
                        b: strip,
                        cols,
                        k: steps,
                        next_a,
                        c: g.c.add(i0 * g.ldc + j0 + j),
                        ldc: g.ldc,
                        first: k0 == 0,
                        epilogue,
                        fetch,
                        extra: fused.map_or(Extra::NONE, |f| {
                            let at = j0 + f.full * nr;
                            let r = g
                                .epilogue
                                .residual
                                .map_or(std::ptr::null(), |(r, ld)| r.add(i0 * ld + at));
                            f.extra(s, bp.as_ptr().add(f.full * steps * nr), g.c.add(i0 * g.ldc + at), r)
                        }),
                    };
                    match dot {
                        Some(f) => f(&t),
                        None => kernel(&t),
                    }
                    (s, p) = next;
                }
                if let (Some(t), true) = (&twin, last) {
                    t.multiply(tp.as_ptr(), (j0, nb), MicroKernel { extra, ..micro });
                }
            }
        }
    })
}

/// A micro-kernel: computes one [`MicroTile`].
pub(crate) type TileKernel = unsafe fn(&MicroTile);

/// A micro-kernel as its callers drive it.
#[derive(Clone, Copy)]
pub(crate) struct MicroKernel {
    /// Computes one tile.
    pub tile: TileKernel,
    /// Rows of a weight panel (output channels per tile).
    pub mr: usize,
    /// Columns of a packed strip.
    pub nr: usize,
    /// The most columns a tile of a full strip takes from the next strip ([`Extra`]; 0: none).
    pub extra: usize,
}

/// Packs `k` rows x `n` columns of a row-major B (pointer, row stride) into strips `nr` wide ([`pack::strips`]).
type StripPacker = unsafe fn(*const f32, usize, usize, usize, usize, &mut [f32]);
/// Packs depth rows `(k0, kb)` of B, `n` columns, straight from the image ([`implicit`]).
type ImagePacker = unsafe fn(&implicit::Implicit<f32>, &implicit::Gather, (usize, usize), usize, usize, &mut [f32]);

/// 64 bytes, so a `Vec` of them is a 64-byte aligned run of floats.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// The packed panel, kept per thread so steady-state inference does not allocate it.
    static PANEL: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's 64-byte aligned panel of at least `len` floats (taken out of the
/// thread-local while `f` runs, as the im2col buffer is).
fn with_panel<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = PANEL.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let lines = len.div_ceil(16);
    if buf.len() < lines {
        buf.resize(lines, Line([0.0; 16]));
    }
    // SAFETY: `Line` is 16 plain f32s with no padding (64 bytes, 64-byte aligned).
    let floats = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<f32>(), lines * 16) };
    let result = f(floats);
    PANEL.with(|p| {
        let mut kept = p.borrow_mut();
        if kept.len() < buf.len() {
            *kept = buf;
        }
    });
    result
}

#[cfg(test)]
mod tests;
