//! The portable engine: the `gemm` crate writes the tile, then one pass adds the bias (and residual) and
//! applies the ReLU. Correct on every CPU; the reference the micro-kernels are tested against.

use gemm::Parallelism;

use super::Gemm;

/// Computes one tile (see [`Gemm`]) whose weights are the OIHW rows at `a`, `lda` apart.
///
/// # Safety
/// As [`super::Engine::gemm`].
pub(crate) unsafe fn gemm(g: &Gemm, a: *const f32, lda: usize) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 {
        return epilogue(g);
    }
    gemm::gemm(
        g.m,
        g.n,
        g.k,
        g.c,
        1,
        g.ldc as isize,
        false,
        a,
        1,
        lda as isize,
        g.b,
        1,
        g.ldb as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
    add_bias_residual_relu(g);
}

/// The tile of a depth-0 product: zero, then the epilogue.
///
/// # Safety
/// As [`super::Engine::gemm`].
pub(crate) unsafe fn epilogue(g: &Gemm) {
    for o in 0..g.m {
        std::slice::from_raw_parts_mut(g.c.add(o * g.ldc), g.n).fill(0.0);
    }
    add_bias_residual_relu(g);
}

/// Bias, residual and ReLU over a tile C already holds.
unsafe fn add_bias_residual_relu(g: &Gemm) {
    let e = g.epilogue;
    for o in 0..g.m {
        let row = std::slice::from_raw_parts_mut(g.c.add(o * g.ldc), g.n);
        let b = *e.bias.add(o);
        match (e.residual, e.relu) {
            (Some((r, ld)), relu) => {
                let r = std::slice::from_raw_parts(r.add(o * ld), g.n);
                row.iter_mut().zip(r).for_each(|(d, r)| {
                    let v = *d + b + r;
                    *d = if relu { v.max(0.0) } else { v };
                })
            }
            (None, true) => row.iter_mut().for_each(|d| *d = (*d + b).max(0.0)),
            (None, false) => row.iter_mut().for_each(|d| *d += b),
        }
    }
}
