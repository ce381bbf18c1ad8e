//! The AMX-BF16 kernel: Intel's tile unit (Sapphire Rapids and later) multiplies 16 x 32 bf16 by 32 x 16
//! bf16 into 16 x 16 f32 per instruction (`tdpbf16ps`), several times the multiply-adds per cycle of
//! AVX-512 FMAs (~500 GFLOP/s on one core of the development machine, against ~130 for f32 FMAs).
//!
//! Layouts: the weights are OIHW rows in bf16, each row's depth padded with zeros to a multiple of 32
//! ([`super::reduced::bf16_rows`]), so a 16-channel x 32-step A tile is one strided load. B is packed per
//! block of columns into bf16 pair strips 32 columns wide over the whole (padded) depth, from the unfolded
//! B ([`super::avx512_bf16::strips`]) or straight from the image ([`implicit::pairs`]), two 16 x 16 pair
//! tiles side by side. A register tile of C is 32
//! output channels x 32 pixels (four accumulator tiles: `tmm0-3`; A in `tmm4-5`, B in `tmm6-7`), summed
//! over the whole depth, then stored once to a scratch block from which AVX-512 adds the bias and
//! residual, applies the ReLU and writes the output. Sums are f32; operands are rounded to bf16.
//!
//! Linux gives a process the tile state only when it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! [`is_supported`] does once; elsewhere, or when refused, AMX is reported unsupported.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::implicit::{self, Gather};
use super::{Epilogue, Gemm};

/// Output channels per A tile: convs whose groups have a multiple of this many channels can use AMX.
pub(crate) const ROWS: usize = 16;
/// Depth steps per tile (32 bf16 = 64 bytes, a tile row); weight rows are padded to a multiple of it.
pub(crate) const DEPTH: usize = 32;
/// Columns of a packed B strip: two 16-column tiles.
const NR: usize = 32;
/// Target size of one column block's packed strips (stays in L2 while every channel block reads it).
const BLOCK_BYTES: usize = 256 * 1024;

/// True when the CPU has AMX-BF16 (with AVX512-BF16 for packing) and the OS lets this process use tiles.
pub(crate) fn is_supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let max_leaf = __cpuid(0).eax;
        if max_leaf < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        let (tile, bf16) = (edx & (1 << 24) != 0, edx & (1 << 22) != 0);
        tile && bf16 && super::avx512_bf16::is_supported() && request_tile_data()
    })
}

/// Asks Linux for the AMX tile data state (XTILEDATA); true when granted.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl with these arguments only changes the process's permission to use tile state.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The tile configuration: palette 1, all eight tiles 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// Computes one tile of C whose weights are the padded bf16 rows at `a` (`kpad` per row, the tile's first
/// row first; `g.m` a multiple of [`ROWS`]); B is the unfolded `g.b` or, where `g.image` is set, packed
/// straight from the image (implicit GEMM).
///
/// # Safety
/// [`is_supported`]; the pointers cover what `g` describes; no other thread writes this tile.
pub(crate) unsafe fn gemm(g: &Gemm, a: *const u16, kpad: usize) {
    debug_assert!(kpad.is_multiple_of(DEPTH) && kpad >= g.k);
    let pack = |j0: usize, n: usize, rows: usize, out: &mut [u32]| match &g.image {
        // Implicit GEMM: the pair strips straight from the f32 image, rounded to bf16 on the way.
        Some(img) => {
            let gather = Gather::new(img, img.first_col + j0, n, n.div_ceil(NR) * NR / 16);
            implicit::pairs(img, &gather, (0, g.k), n, NR, rows, out)
        }
        None => super::avx512_bf16::strips(g.b.add(j0), g.ldb, g.k, n, NR, rows, out),
    };
    let store = |i0: usize, j: usize, rows: usize, cols: usize, scratch: &[f32]| store(g, i0, j, rows, cols, scratch);
    drive(g, a.cast(), 2 * kpad, Dot::Bf16, g.image.is_none(), &pack, &store)
}

/// Computes one tile of C whose weights are int8 rows at `a` (`kpad` bytes per row, a multiple of 64) and
/// whose activations are quantized as `q` says while B is packed; the epilogue dequantizes.
///
/// # Safety
/// [`is_int8_supported`]; the pointers cover what `g` describes; `q`'s per-row slices cover the tile's rows
/// (row 0 of the tile first); no other thread writes this tile.
pub(crate) unsafe fn gemm_int8(g: &Gemm, a: *const i8, kpad: usize, q: &super::int8::Requant) {
    debug_assert!(kpad.is_multiple_of(64) && kpad >= g.k);
    let pack = |j0: usize, n: usize, rows: usize, out: &mut [u32]| super::int8::pack(g, q, j0, n, NR, rows, out);
    let store = |i0: usize, j: usize, rows: usize, cols: usize, scratch: &[f32]| {
        let tiles = scratch.as_ptr().cast::<i32>();
        super::int8::store(g, q, i0, j, rows, cols, |r, v| {
            tiles.add(((r / ROWS) * 2 + v) * 256 + (r % ROWS) * 16)
        })
    };
    drive(g, a.cast(), kpad, Dot::Int8, q.image.is_none(), &pack, &store)
}

/// True when the CPU has AMX-INT8 (and what the bf16 kernel needs) and the OS lets this process use tiles.
pub(crate) fn is_int8_supported() -> bool {
    // CPUID.(7, 0):EDX bit 25.
    use std::arch::is_x86_feature_detected as has;
    is_supported() && __cpuid_count(7, 0).edx & (1 << 25) != 0 && has!("avx512bw") && has!("avx512vl")
}

/// Packs the whole depth of B for the column block starting at column `j0`: `(j0, n, lane_rows, out)`, see
/// [`super::avx512_bf16::strips`].
type Pack<'a> = &'a dyn Fn(usize, usize, usize, &mut [u32]);
/// Stores a finished block of tiles: `(first row, first column, rows, columns, scratch)`.
type Store<'a> = &'a dyn Fn(usize, usize, usize, usize, &[f32]);

/// Which tile product: bf16 pairs into f32, or signed int8 weights by unsigned int8 activations into i32.
#[derive(Clone, Copy, PartialEq)]
enum Dot {
    Bf16,
    Int8,
}

/// The blocking both products share: per block of columns, B packed by `pack` into strips of `NR` columns
/// whose rows are 4-byte lanes (bf16 pairs or int8 quads) over the padded depth; per strip and pair of
/// 16-row blocks of A (or rows outer, see [`super::tile_at`]), the tiles summed over the whole depth, stored to
/// scratch and handed to `store`.
unsafe fn drive(g: &Gemm, a: *const u8, row_bytes: usize, dot: Dot, from_matrix: bool, pack: Pack, store: Store) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    debug_assert!(g.m.is_multiple_of(ROWS) && row_bytes.is_multiple_of(64));
    // Lane rows of a strip (16 per tile step) and its size in lanes.
    let lane_rows = row_bytes / 4;
    let strip = lane_rows * NR;
    // Rows outer for a wide 1x1 conv's product, as the f32 kernels do (see `blocked`): each pair of row blocks
    // sweeps a wider column block, so that its stores continue its rows' runs.
    let rows_outer = super::rows_outer(from_matrix, g, 4 * ROWS);
    let per_block = match rows_outer {
        true => (super::ROWS_OUTER_B / strip).clamp(1, 64),
        false => (BLOCK_BYTES / (4 * strip)).clamp(1, 8),
    };
    let nc = per_block * NR;
    // The strips, then a 4-tile scratch block (4 x 256 values).
    super::with_panel(per_block * strip + 4 * 256, |panel| {
        let (bp, scratch) = panel.split_at_mut(per_block * strip);
        let lanes = std::slice::from_raw_parts_mut(bp.as_mut_ptr().cast::<u32>(), bp.len());
        let cfg = TileConfig::new();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
        for j0 in (0..g.n).step_by(nc) {
            let nb = nc.min(g.n - j0);
            pack(j0, nb, lane_rows, lanes);
            let (strips, row_blocks) = (nb.div_ceil(NR), g.m.div_ceil(2 * ROWS));
            for t in 0..strips * row_blocks {
                let (s, r) = super::tile_at(rows_outer, t, strips, row_blocks);
                let (j, i0) = (s * NR, r * 2 * ROWS);
                let b = lanes.as_ptr().add(s * strip);
                let cols = NR.min(nb - j);
                let two = g.m - i0 >= 2 * ROWS;
                tiles(
                    a.add(i0 * row_bytes),
                    row_bytes,
                    b,
                    lane_rows / 16,
                    two,
                    dot,
                    scratch.as_mut_ptr(),
                );
                let rows = if two { 2 * ROWS } else { ROWS };
                store(i0, j0 + j, rows, cols, scratch);
            }
        }
        asm!("tilerelease", options(nostack));
    })
}

/// One tile step's loads and products: A rows `a0` (and `a1`), B tiles `b0`, `b1`, with `$op` the
/// product instruction.
macro_rules! step {
    ($op:literal, two, $a0:expr, $a1:expr, $b0:expr, $lda:expr, $ldb:expr) => {
        asm!(
            "tileloadd tmm6, [{b0} + {ldb} * 1]",
            "tileloadd tmm7, [{b1} + {ldb} * 1]",
            "tileloadd tmm4, [{a0} + {lda} * 1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            concat!($op, " tmm1, tmm4, tmm7"),
            "tileloadd tmm5, [{a1} + {lda} * 1]",
            concat!($op, " tmm2, tmm5, tmm6"),
            concat!($op, " tmm3, tmm5, tmm7"),
            a0 = in(reg) $a0,
            a1 = in(reg) $a1,
            b0 = in(reg) $b0,
            b1 = in(reg) $b0.add(16),
            lda = in(reg) $lda,
            ldb = in(reg) $ldb,
            options(nostack),
        )
    };
    ($op:literal, one, $a0:expr, $b0:expr, $lda:expr, $ldb:expr) => {
        asm!(
            "tileloadd tmm6, [{b0} + {ldb} * 1]",
            "tileloadd tmm7, [{b1} + {ldb} * 1]",
            "tileloadd tmm4, [{a0} + {lda} * 1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            concat!($op, " tmm1, tmm4, tmm7"),
            a0 = in(reg) $a0,
            b0 = in(reg) $b0,
            b1 = in(reg) $b0.add(16),
            lda = in(reg) $lda,
            ldb = in(reg) $ldb,
            options(nostack),
        )
    };
}

/// Sums `steps` tile steps of 32 rows of A (`two`) or 16 into `tmm0-3` and stores them to `out`: tile
/// (row block r, column block v) at `out + (2 r + v) * 256`, 16 rows of 16 f32 (bf16) or i32 (int8).
#[allow(clippy::too_many_arguments)]
unsafe fn tiles(a: *const u8, row_bytes: usize, b: *const u32, steps: usize, two: bool, dot: Dot, out: *mut f32) {
    let (lda, ldb) = (row_bytes, 4 * NR);
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack)
    );
    for s in 0..steps {
        let a0 = a.add(s * 64);
        let a1 = a0.add(ROWS * row_bytes);
        let b0 = b.add(s * 16 * NR);
        match (dot, two) {
            (Dot::Bf16, true) => step!("tdpbf16ps", two, a0, a1, b0, lda, ldb),
            (Dot::Bf16, false) => step!("tdpbf16ps", one, a0, b0, lda, ldb),
            (Dot::Int8, true) => step!("tdpbsud", two, a0, a1, b0, lda, ldb),
            (Dot::Int8, false) => step!("tdpbsud", one, a0, b0, lda, ldb),
        }
    }
    asm!(
        "tilestored [{o0} + {ld} * 1], tmm0",
        "tilestored [{o1} + {ld} * 1], tmm1",
        o0 = in(reg) out,
        o1 = in(reg) out.add(256),
        ld = in(reg) 64usize,
        options(nostack),
    );
    if two {
        asm!(
            "tilestored [{o2} + {ld} * 1], tmm2",
            "tilestored [{o3} + {ld} * 1], tmm3",
            o2 = in(reg) out.add(512),
            o3 = in(reg) out.add(768),
            ld = in(reg) 64usize,
            options(nostack),
        );
    }
}

/// Writes `rows` x `cols` of the scratch tiles to C at (row `i0`, column `j`), through the epilogue.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store(g: &Gemm, i0: usize, j: usize, rows: usize, cols: usize, scratch: &[f32]) {
    let Epilogue { bias, residual, relu } = g.epilogue;
    for r in 0..rows {
        let o = i0 + r;
        let c = g.c.add(o * g.ldc + j);
        let b = _mm512_set1_ps(*bias.add(o));
        for v in 0..2 {
            let n = cols.saturating_sub(16 * v).min(16);
            if n == 0 {
                break;
            }
            let m: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            let tile = (r / ROWS) * 2 + v;
            let mut x = _mm512_add_ps(_mm512_loadu_ps(scratch.as_ptr().add(tile * 256 + (r % ROWS) * 16)), b);
            if let Some((res, ld)) = residual {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, res.add(o * ld + j + 16 * v)));
            }
            if relu {
                x = _mm512_max_ps(x, _mm512_setzero_ps());
            }
            _mm512_mask_storeu_ps(c.add(16 * v), m, x);
        }
    }
}
