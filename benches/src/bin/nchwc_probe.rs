//! A probe for issue #14's next lever: would the 1x1 convs run faster on a channel-blocked activation layout
//! (NCHW16c: per image, blocks of 16 channels, each a `h * w` run of 64-byte lines, one per pixel), as ONNX
//! Runtime runs them, than as our matrix products on NCHW?
//!
//! The probe is a minimal direct 1x1 kernel on that layout, AVX-512 only: a register tile of 4 blocks of 16 output
//! channels by up to 6 pixels (24 accumulators) summed over the whole depth in registers, per input channel 4
//! weight vectors loaded and one value per pixel broadcast, nothing packed; then bias, residual and ReLU and one
//! store per line. Images go over the threads (batch 1: pixel ranges). It is timed against our conv (`Conv::
//! forward_fused`, the pass's own call, on the NCHW tensor) on ResNet-50's 1x1 shapes (the stride-2 downsamples
//! included), interleaved, outputs compared; the layout conversions are left out of the probe's time (the layout
//! would be kept between convs).
//!
//! `cargo run --release -p zoo-benches --bin nchwc_probe [-- --iters N --batches 1,8]` (threads: rayon's pool,
//! `RAYON_NUM_THREADS`, for both).

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::time::Instant;

use rayon::prelude::*;

use candle_core::{Device, Result, Tensor};
use resnet::layers::{Conv, ConvSpec};
use zoo_benches::{max_abs_diff, median, Args};

/// One pixel's 16 channels of a block (or 16 output channels' weights for one input channel).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Output channel blocks per register tile, and pixels.
const OB: usize = 4;
const PX: usize = 6;

/// NCHW -> NCHW16c (`c` a multiple of 16).
fn to_blocked(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<Line> {
    let mut out = vec![Line([0.0; 16]); n * c / 16 * hw];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * c / 16 + ch / 16) * hw + p].0[ch % 16] = x[(i * c + ch) * hw + p];
            }
        }
    }
    out
}

/// NCHW16c -> NCHW.
fn from_blocked(x: &[Line], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * c * hw];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * c + ch) * hw + p] = x[(i * c / 16 + ch / 16) * hw + p].0[ch % 16];
            }
        }
    }
    out
}

/// OI (1x1) weights -> per block of 16 output channels, per input channel, a line of the 16 outputs' weights.
fn pack_weights(w: &[f32], o: usize, c: usize) -> Vec<Line> {
    let mut out = vec![Line([0.0; 16]); o / 16 * c];
    for oc in 0..o {
        for ic in 0..c {
            out[(oc / 16) * c + ic].0[oc % 16] = w[oc * c + ic];
        }
    }
    out
}

/// The probe's conv: one image's input (`c / 16` blocks of `side_in^2` lines), weights from [`pack_weights`], output
/// and residual in the same layout (`o / 16` blocks of `hw` lines, the output map `side` wide; `side_in = side` at
/// stride 1, `2 side` at stride 2).
#[derive(Clone, Copy)]
struct Probe<'a> {
    w: &'a [Line],
    bias: &'a [f32],
    c: usize,
    o: usize,
    hw: usize,
    side: usize,
    side_in: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Line, Probe, OB, PX};

    /// Output blocks `ob0..ob0 + OB` at pixels `p0..p0 + P` of one image, at stride `S`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const P: usize, const S: usize>(
        pr: &Probe,
        x: *const Line,
        res: Option<*const Line>,
        out: *mut Line,
        (ob0, p0): (usize, usize),
    ) {
        let (c, hw) = (pr.c, pr.hw);
        let mut acc = [[_mm512_setzero_ps(); P]; OB];
        let w = pr.w.as_ptr().add(ob0 * c).cast::<f32>();
        // The input pixel under each output pixel of the tile.
        let src: [usize; P] = std::array::from_fn(|p| match S {
            1 => p0 + p,
            _ => ((p0 + p) / pr.side * S) * pr.side_in + (p0 + p) % pr.side * S,
        });
        for cb in 0..c / 16 {
            let xb = x.add(cb * pr.side_in * pr.side_in).cast::<f32>();
            for i in 0..16 {
                let ci = cb * 16 + i;
                let wv: [__m512; OB] = std::array::from_fn(|b| _mm512_load_ps(w.add((b * c + ci) * 16)));
                for p in 0..P {
                    let xv = _mm512_set1_ps(*xb.add(src[p] * 16 + i));
                    for (row, &w) in acc.iter_mut().zip(&wv) {
                        row[p] = _mm512_fmadd_ps(w, xv, row[p]);
                    }
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (b, row) in acc.iter().enumerate() {
            let bias = _mm512_loadu_ps(pr.bias.as_ptr().add((ob0 + b) * 16));
            for (p, &a) in row.iter().enumerate() {
                let at = (ob0 + b) * hw + p0 + p;
                let mut y = _mm512_add_ps(a, bias);
                if let Some(r) = res {
                    y = _mm512_add_ps(y, _mm512_load_ps(r.add(at).cast()));
                }
                _mm512_store_ps(out.add(at).cast(), _mm512_max_ps(y, zero));
            }
        }
    }

    /// Pixels `from..to` of one image, every output block.
    ///
    /// # Safety
    /// AVX-512F; `x`, `res` and `out` hold one image each in the probe's layout.
    pub(super) unsafe fn run(
        pr: &Probe,
        x: *const Line,
        res: Option<*const Line>,
        out: *mut Line,
        range: (usize, usize),
    ) {
        match pr.side_in / pr.side {
            1 => run_at::<1>(pr, x, res, out, range),
            _ => run_at::<2>(pr, x, res, out, range),
        }
    }

    /// [`run`] at stride `S`.
    #[target_feature(enable = "avx512f")]
    unsafe fn run_at<const S: usize>(
        pr: &Probe,
        x: *const Line,
        res: Option<*const Line>,
        out: *mut Line,
        (from, to): (usize, usize),
    ) {
        for ob0 in (0..pr.o / 16).step_by(OB) {
            let mut p0 = from;
            while p0 + PX <= to {
                tile::<PX, S>(pr, x, res, out, (ob0, p0));
                p0 += PX;
            }
            match to - p0 {
                0 => {}
                1 => tile::<1, S>(pr, x, res, out, (ob0, p0)),
                2 => tile::<2, S>(pr, x, res, out, (ob0, p0)),
                3 => tile::<3, S>(pr, x, res, out, (ob0, p0)),
                4 => tile::<4, S>(pr, x, res, out, (ob0, p0)),
                _ => tile::<5, S>(pr, x, res, out, (ob0, p0)),
            }
        }
    }
}

/// Raw pointers handed to the probe's threads (each writes its own images or pixels).
#[derive(Clone, Copy)]
struct Ptr(*mut Line);
// SAFETY: the threads write disjoint parts of the output.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// The line `offset` lines on (a method, so that closures capture the whole `Ptr`).
    fn at(self, offset: usize) -> *mut Line {
        self.0.wrapping_add(offset)
    }
}

/// The probe over `n` images in `threads` parts: images split between them, or each image's pixels.
#[cfg(target_arch = "x86_64")]
fn run_probe(pr: Probe, x: &[Line], res: Option<&[Line]>, n: usize, threads: usize) -> Vec<Line> {
    let (in_img, out_img) = (pr.c / 16 * pr.side_in * pr.side_in, pr.o / 16 * pr.hw);
    // Allocated per call and left uninitialized, as our conv allocates its output.
    let mut out: Vec<Line> = Vec::with_capacity(n * out_img);
    // SAFETY: every line is written by a tile before it is read (`Line` is plain floats).
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(n * out_img)
    };
    let dst = Ptr(out.as_mut_ptr());
    // (image, pixel range) per thread.
    let parts: Vec<Vec<(usize, (usize, usize))>> = (0..threads)
        .map(|t| match n >= threads {
            true => (0..n)
                .filter(|i| i * threads / n == t)
                .map(|i| (i, (0, pr.hw)))
                .collect(),
            false => (0..n)
                .map(|i| {
                    let cut = |k: usize| (pr.hw * k / threads) / PX * PX;
                    let to = if t + 1 == threads { pr.hw } else { cut(t + 1) };
                    (i, (cut(t), to))
                })
                .collect(),
        })
        .collect();
    // On rayon's pool, as our conv runs (one task per thread's part).
    parts.par_iter().for_each(|part| {
        for &(i, range) in part {
            // SAFETY: the CPU has AVX-512F (checked in `main`); the images and ranges are this part's alone.
            unsafe {
                x86::run(
                    &pr,
                    x.as_ptr().add(i * in_img),
                    res.map(|r| r.as_ptr().add(i * out_img)),
                    dst.at(i * out_img),
                    range,
                )
            }
        }
    });
    out
}

fn main() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("the probe's kernel needs AVX-512F");
            return Ok(());
        }
        let args = Args::from_env();
        let iters = args.number("--iters", 20)?.max(1);
        let threads = rayon::current_num_threads();
        let batches = args.numbers("--batches", &[8, 1])?;
        let peak = resnet::layers::engine::fma_peak(threads, 300).unwrap_or(f64::NAN);
        println!("{threads} threads (rayon's pool), FMA peak {peak:.1} GFLOP/s");
        println!(
            "{:<24} {:>5} {:>9} {:>9} {:>8} {:>8} {:>12} {:>9}",
            "1x1 conv", "batch", "ours ms", "probe ms", "ours %", "probe %", "ours/probe", "max|diff|"
        );
        // ResNet-50's 1x1 shapes: (in, out, output map side, stride, residual); the stride-2 ones are the
        // downsamples of layer2-4 (layer1's, 64 -> 256 at stride 1, is the conv3 shape without the residual).
        let shapes = [
            (256, 64, 56, 1, false),
            (64, 256, 56, 1, true),
            (64, 64, 56, 1, false),
            (512, 128, 28, 1, false),
            (128, 512, 28, 1, true),
            (1024, 256, 14, 1, false),
            (256, 1024, 14, 1, true),
            (2048, 512, 7, 1, false),
            (512, 2048, 7, 1, true),
            (256, 512, 28, 2, false),
            (512, 1024, 14, 2, false),
            (1024, 2048, 7, 2, false),
        ];
        let dev = Device::Cpu;
        for &n in &batches {
            for &(c, o, side, stride, residual) in &shapes {
                let (hw, side_in) = (side * side, side * stride);
                let spec = ConvSpec::new(c, o, 1, stride);
                let x = Tensor::randn(0f32, 1f32, (n, c, side_in, side_in), &dev)?;
                let w = (Tensor::randn(0f32, 1f32, spec.weight_shape(), &dev)? / (c as f64).sqrt())?;
                let bias = Tensor::randn(0f32, 1f32, o, &dev)?;
                let r = Tensor::randn(0f32, 1f32, (n, o, side, side), &dev)?;
                let ours = Conv::new_inference(w.clone(), Some(bias.clone()), spec)?;
                let res = residual.then_some(&r);
                let (xv, wv, bv, rv) = (
                    x.flatten_all()?.to_vec1::<f32>()?,
                    w.flatten_all()?.to_vec1::<f32>()?,
                    bias.to_vec1::<f32>()?,
                    r.flatten_all()?.to_vec1::<f32>()?,
                );
                let (xb, wb, rb) = (
                    to_blocked(&xv, n, c, side_in * side_in),
                    pack_weights(&wv, o, c),
                    to_blocked(&rv, n, o, hw),
                );
                let pr = Probe {
                    w: &wb,
                    bias: &bv,
                    c,
                    o,
                    hw,
                    side,
                    side_in,
                };
                let want = ours.forward_fused(&x, res, true)?;
                let got = from_blocked(&run_probe(pr, &xb, residual.then_some(&rb[..]), n, threads), n, o, hw);
                let diff = max_abs_diff(&want, &Tensor::from_vec(got, (n, o, side, side), &dev)?)?;
                if diff > 1e-3 {
                    candle_core::bail!(
                        "{c} -> {o} at {side}x{side}, batch {n}: the probe and our conv differ by {diff}"
                    );
                }
                let (mut a, mut b) = (vec![], vec![]);
                for _ in 0..iters {
                    let t = Instant::now();
                    std::hint::black_box(ours.forward_fused(&x, res, true)?);
                    a.push(t.elapsed().as_secs_f64() * 1e3);
                    let t = Instant::now();
                    std::hint::black_box(run_probe(pr, &xb, residual.then_some(&rb[..]), n, threads));
                    b.push(t.elapsed().as_secs_f64() * 1e3);
                }
                let (a, b) = (median(&mut a), median(&mut b));
                let flops = 2.0 * (n * c * o * hw) as f64;
                let share = |ms: f64| 100.0 * flops / (ms * 1e-3) / 1e9 / peak;
                println!(
                    "{:<24} {:>5} {:>9.3} {:>9.3} {:>7.1}% {:>7.1}% {:>11.2}x {:>9.1e}",
                    format!(
                        "{c}->{o} {side}x{side}{}",
                        match (stride, residual) {
                            (2, _) => " s2",
                            (_, true) => " +res",
                            _ => "",
                        }
                    ),
                    n,
                    a,
                    b,
                    share(a),
                    share(b),
                    a / b,
                    diff
                );
            }
        }
    }
    Ok(())
}
