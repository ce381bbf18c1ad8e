//! The matrix product under every CPU inference convolution, and the micro-kernels that compute it.
//!
//! One call computes a tile of one image's output, `C[o, q] = relu?(sum_k A[o, k] * B[k, q] + bias[o] +
//! R[o, q])`, where A is the folded OIHW weight read in place (row `o` is output channel `o`, its columns
//! `(c, i, j)` the input channel and kernel tap), B is the input itself (a 1x1 stride-1 conv) or its
//! im2col unfolding, and R the residual. How it is computed is an explicit choice, [`Engine`]:
//!
//! - [`Engine::Avx512`] and [`Engine::Avx2Fma`]: our own register-blocked micro-kernels
//!   ([`avx512`], [`avx2`]). B is copied, `KC` rows at a time, into strips `NR` columns wide laid out in
//!   the order the kernel reads them ([`pack`]), small enough for L1, and the same `KC` columns of the
//!   weights into panels of `MR` output channels (interleaved, so a kernel reads them with one pointer);
//!   every strip is multiplied by every panel. The model's weights stay in their one OIHW copy; the
//!   panels are a small per-thread buffer rebuilt per block, ~1/NC of the block's work. Partial sums
//!   stay in registers over a whole `KC` block, and on the last block the bias, the residual add and the
//!   ReLU are applied in registers before the only store of the result.
//! - [`Engine::Portable`]: the `gemm` crate (what Candle itself multiplies with, for every CPU it knows)
//!   followed by one pass over the tile for bias, residual and ReLU. Used on CPUs without AVX2/FMA (ARM
//!   included) and kept as the reference the fast kernels are tested against.
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
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod pack;
mod peak;
pub(crate) mod portable;

pub use peak::fma_peak;

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
            let wanted = std::env::var("ZOO_CONV_ENGINE").ok();
            match wanted.as_deref().map(Engine::from_name) {
                Some(Some(e)) if e.is_supported() => e,
                Some(_) => {
                    eprintln!(
                        "warning: ZOO_CONV_ENGINE={} is not an engine this CPU runs (avx512, avx2, portable); using {}",
                        wanted.unwrap_or_default(),
                        Engine::best().name()
                    );
                    Engine::best()
                }
                None => Engine::best(),
            }
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

/// [`Engine::set_default`]'s choice: 0 for none, else 1 + its index in [`Engine::ALL`].
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// What happens to a finished tile before it is stored: `relu?(acc + bias[o] + residual[o, q]?)`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue {
    /// The bias of the tile's first row; one per row.
    pub bias: *const f32,
    /// The residual at the tile's (first row, first column), and its row stride.
    pub residual: Option<(*const f32, usize)>,
    pub relu: bool,
}

/// One output tile: `m` x `n` of C (row stride `ldc`), the sum over `k` of A (`m` x `k`, row stride
/// `lda`) times B (`k` x `n`, row stride `ldb`), then the epilogue.
#[derive(Clone, Copy)]
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    /// `Some(mr)`: A is already in panels of `mr` rows over the whole depth `k` (`lda == k`; panel `p` at
    /// `a + p * k * mr`, step `kk` of row `i` at `kk * mr + i`), as packed at load.
    pub a_panels: Option<usize>,
    pub b: *const f32,
    pub ldb: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub epilogue: Epilogue,
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
    pub c: *mut f32,
    pub ldc: usize,
    /// Start from zero (the first `KC` block) or add to what C holds.
    pub first: bool,
    /// Applied on the last `KC` block, with `bias`/`residual` already at this tile's corner.
    pub epilogue: Option<Epilogue>,
}

/// Rows of B per packed block: a strip of `KC x NR` floats (48 KiB for AVX-512's 48 columns) stays in L1
/// while every block of `MR` output channels passes over it.
const KC: usize = 128;
/// Columns of C per block: the `KC x NC` packed panel and the `m x NC` output block stay in L2.
const NC: usize = 192;

impl Engine {
    /// Computes one tile (see [`Gemm`]), single-threaded.
    ///
    /// # Safety
    /// The pointers cover the extents `g` describes, C does not overlap A, B or the residual, and no
    /// other thread writes this tile.
    pub(crate) unsafe fn gemm(self, g: &Gemm) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 if self.is_supported() => blocked(g, avx512::MR, avx512::NR, |t| avx512::tile(t)),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2Fma if self.is_supported() => blocked(g, avx2::MR, avx2::NR, |t| avx2::tile(t)),
            _ => {
                debug_assert!(g.a_panels.is_none(), "the portable engine reads OIHW rows");
                portable::gemm(g)
            }
        }
    }
}

/// The blocking around a micro-kernel: columns in blocks of `NC`; depth in blocks of `KC`, for which B is
/// packed into strips of `nr` columns and A into panels of `mr` rows; per strip every panel of rows.
unsafe fn blocked(g: &Gemm, mr: usize, nr: usize, kernel: impl Fn(&MicroTile)) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 {
        // Nothing to multiply: the tile is the epilogue applied to zero.
        return portable::gemm(g);
    }
    let nc = NC / nr * nr;
    let b_len = KC * nc.max(nr);
    // Weights packed at load are always in this engine's panels (`PackedConv` packs with its `MR`).
    debug_assert!(
        g.a_panels.is_none_or(|rows| rows == mr),
        "weights packed for another micro-kernel"
    );
    let packed = g.a_panels.is_some();
    let a_len = if packed { 0 } else { g.m.div_ceil(mr) * mr * KC };
    with_panel(b_len + a_len, |panel| {
        let (bp, ap) = panel.split_at_mut(b_len);
        for j0 in (0..g.n).step_by(nc) {
            let nb = nc.min(g.n - j0);
            for k0 in (0..g.k).step_by(KC) {
                let kb = KC.min(g.k - k0);
                pack::strips(g.b.add(k0 * g.ldb + j0), g.ldb, kb, nb, nr, bp);
                if !packed {
                    pack::panels(g.a.add(k0), g.lda, g.m, kb, mr, ap);
                }
                let last = k0 + kb == g.k;
                for (s, j) in (0..nb).step_by(nr).enumerate() {
                    let strip = bp.as_ptr().add(s * kb * nr);
                    let cols = nr.min(nb - j);
                    for (p, i0) in (0..g.m).step_by(mr).enumerate() {
                        let epilogue = last.then(|| Epilogue {
                            bias: g.epilogue.bias.add(i0),
                            residual: g.epilogue.residual.map(|(r, ld)| (r.add(i0 * ld + j0 + j), ld)),
                            relu: g.epilogue.relu,
                        });
                        kernel(&MicroTile {
                            a: if packed {
                                g.a.add(p * g.k * mr + k0 * mr)
                            } else {
                                ap.as_ptr().add(p * kb * mr)
                            },
                            rows: mr.min(g.m - i0),
                            b: strip,
                            cols,
                            k: kb,
                            c: g.c.add(i0 * g.ldc + j0 + j),
                            ldc: g.ldc,
                            first: k0 == 0,
                            epilogue,
                        });
                    }
                }
            }
        }
    })
}

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
