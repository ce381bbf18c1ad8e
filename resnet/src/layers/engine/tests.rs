//! Every engine this CPU runs against a naive convolution (f64 sums, straight from the definition), over
//! random shapes: channels, sizes, kernels, strides, padding, groups, batch, with and without the fused
//! residual and ReLU.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use proptest::prelude::*;

use super::{Bf16Kernel, Engine, Lowering};
use crate::layers::conv::ConvSpec;
use crate::layers::cpu_conv::PackedConv;

/// `relu?(conv(x) + bias + residual?)` by the definition, NCHW / OIHW, in f64.
#[allow(clippy::too_many_arguments)]
pub(super) fn naive(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    s: &ConvSpec,
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (oh, ow) = (s.output_size(h), s.output_size(w));
    let (o, g, k) = (s.out_channels, s.groups, s.kernel);
    let (cg, og) = (c / g, o / g);
    let mut out = vec![0f32; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let gi = oc / og;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = f64::from(bias[oc]);
                    for ci in 0..cg {
                        for i in 0..k {
                            for j in 0..k {
                                let iy = (y * s.stride + i * s.dilation) as isize - s.padding as isize;
                                let ix = (xx * s.stride + j * s.dilation) as isize - s.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * c + gi * cg + ci) * h + iy as usize) * w + ix as usize];
                                let wv = weight[((oc * cg + ci) * k + i) * k + j];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    let at = ((b * o + oc) * oh + y) * ow + xx;
                    if let Some(r) = residual {
                        acc += f64::from(r[at]);
                    }
                    out[at] = if relu { acc.max(0.0) as f32 } else { acc as f32 };
                }
            }
        }
    }
    out
}

/// Uniform values in [-1, 1) from a seed (a 64-bit LCG): the same case for the same seed.
pub(super) fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut rng = seed;
    move || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((rng >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The largest absolute difference of two equally long slices.
pub(super) fn max_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
}

/// Runs one case on every engine this CPU supports; the error is the largest difference to the naive
/// result relative to the size of the terms summed.
#[allow(clippy::too_many_arguments)]
fn check(
    n: usize,
    c: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    (h, w): (usize, usize),
    residual: bool,
    relu: bool,
    seed: u64,
) -> Result<()> {
    let dev = Device::Cpu;
    let mut spec = ConvSpec::new(c, o, k, stride).with_groups(groups);
    spec.padding = padding;
    let mut next = uniform(seed);
    let (oh, ow) = (spec.output_size(h), spec.output_size(w));
    let x: Vec<f32> = (0..n * c * h * w).map(|_| next()).collect();
    let weight: Vec<f32> = (0..o * c / groups * k * k).map(|_| next()).collect();
    let bias: Vec<f32> = (0..o).map(|_| next()).collect();
    let res: Vec<f32> = (0..n * o * oh * ow).map(|_| next()).collect();
    let want = naive(
        &x,
        (n, c, h, w),
        &weight,
        &bias,
        &spec,
        residual.then_some(&res[..]),
        relu,
    );
    let xt = Tensor::from_vec(x, (n, c, h, w), &dev)?;
    let wt = Tensor::from_vec(weight, spec.weight_shape(), &dev)?;
    let bias32 = bias.clone();
    let bt = Tensor::from_vec(bias, o, &dev)?;
    let rt = Tensor::from_vec(res, (n, o, oh, ow), &dev)?;
    // Each output sums c / groups * k * k products of values in [-1, 1].
    let tol = 1e-5 * (c / groups * k * k) as f32 + 1e-5;
    let forward = |packed: &Arc<PackedConv>| -> Result<Vec<f32>> {
        packed
            .forward(&xt, residual.then_some(&rt), relu)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    for engine in Engine::ALL.into_iter().filter(|e| e.is_supported()) {
        let whole_panels = engine.panel_rows().is_some_and(|r| (o / groups).is_multiple_of(r));
        for lowering in Lowering::ALL {
            let w32 = wt.flatten_all()?.to_vec1::<f32>()?;
            let packed = Arc::new(PackedConv::from_vec_lowered(
                w32.clone(),
                Some(&bt),
                spec,
                engine,
                lowering,
            )?);
            // Winograd or the direct conv where the policy allows it and it applies on a micro-kernel engine
            // (the direct conv on AVX-512); never on the portable one.
            let lowered = match whole_panels {
                true => lowering.choose(&spec, engine),
                false => Lowering::Gemm,
            };
            assert_eq!(packed.lowering(), lowered, "{engine:?} {lowering:?}");
            let direct = engine == Engine::Avx512 && Lowering::Direct.applies(&spec);
            assert_eq!(lowered == Lowering::Direct, direct && lowering != Lowering::Gemm);
            // The packed weights unpack to the very OIHW values they were built from.
            let back = packed.weight()?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(back, w32, "{engine:?} {lowering:?}: unpacked weights differ");
            let err = max_err(&forward(&packed)?, &want);
            assert!(
                err <= tol,
                "{engine:?} {lowering:?}: n{n} c{c} o{o} k{k} s{stride} p{padding} g{groups} {h}x{w} residual {residual} relu {relu}: {err} > {tol}"
            );
        }
        // Weights held in bf16 / f16: the definition on the rounded weights (and, where the engine multiplies
        // with bf16 dot products, the rounded inputs), summed exactly; the kernel sums in f32 as above.
        let reduced = [
            (DType::F16, Bf16Kernel::Widen),
            (DType::BF16, Bf16Kernel::Widen),
            (DType::BF16, Bf16Kernel::Dot),
            (DType::BF16, Bf16Kernel::Amx),
        ];
        for (dtype, kernel) in reduced.into_iter().filter(|(_, k)| k.is_supported()) {
            let w32 = wt.flatten_all()?.to_vec1::<f32>()?;
            let packed = Arc::new(PackedConv::from_vec_with(
                w32.clone(),
                Some(&bt),
                spec,
                engine,
                dtype,
                kernel,
            )?);
            let held = packed.dtype();
            if kernel == Bf16Kernel::Amx && engine == Engine::Avx512 && (o / groups).is_multiple_of(16) {
                assert_eq!(packed.bf16_kernel(), Some(Bf16Kernel::Amx), "AMX not used");
            }
            let round = |v: f32| match held {
                DType::BF16 => half::bf16::from_f32(v).to_f32(),
                DType::F16 => half::f16::from_f32(v).to_f32(),
                _ => v,
            };
            let whole_panels = engine.panel_rows().is_some_and(|r| (o / groups).is_multiple_of(r));
            assert_eq!(held == dtype, whole_panels, "{engine:?} holds {held:?}");
            let wr: Vec<f32> = w32.iter().map(|&v| round(v)).collect();
            let back = packed.weight()?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(back, wr, "{engine:?} {dtype:?}: unpacked weights differ");
            let x32 = xt.flatten_all()?.to_vec1::<f32>()?;
            let xr: Vec<f32> = match packed.bf16_kernel().is_some_and(Bf16Kernel::rounds_inputs) {
                true => x32.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
                false => x32,
            };
            let res = rt.flatten_all()?.to_vec1::<f32>()?;
            let want = naive(
                &xr,
                (n, c, h, w),
                &wr,
                &bias32,
                &spec,
                residual.then_some(&res[..]),
                relu,
            );
            let err = max_err(&forward(&packed)?, &want);
            assert!(
                err <= tol,
                "{engine:?} {dtype:?} (held {held:?}, {:?}): n{n} c{c} o{o} k{k} s{stride} p{padding} g{groups} {h}x{w} residual {residual} relu {relu}: {err} > {tol}",
                packed.bf16_kernel()
            );
        }
    }
    Ok(())
}

/// Shapes that cross every blocking boundary of the micro-kernel engines: depth over several `KC`
/// blocks, columns over several `NC` blocks and partial strips, output channels not a multiple of
/// either kernel's rows, the 7x7 stem, ResNet's late 7x7 maps, batch 1 (threads split one image) and
/// batch 3 (threads take images).
#[test]
fn blocking_boundaries_match_the_definition() -> Result<()> {
    let cases = [
        // (n, c, o, k, stride, padding, groups, (h, w))
        (1, 64, 64, 3, 1, 1, 1, (21, 23)),
        (1, 300, 20, 1, 1, 0, 1, (17, 25)),
        (2, 3, 64, 7, 2, 3, 1, (45, 37)),
        (1, 96, 13, 3, 2, 1, 1, (30, 30)),
        (3, 128, 40, 3, 1, 1, 1, (7, 7)),
        (1, 16, 72, 1, 2, 0, 1, (33, 33)),
        (2, 32, 32, 3, 1, 1, 8, (12, 9)),
        // Winograd: 49 tiles (one chunk and a tile, output channels split over threads), odd sizes with
        // chunks spanning images and tile rows, depth over two `KC` blocks, a 1x1 map.
        (1, 96, 48, 3, 1, 1, 1, (14, 14)),
        (3, 24, 24, 3, 1, 1, 1, (13, 31)),
        (2, 136, 16, 3, 1, 1, 1, (9, 10)),
        (2, 8, 24, 3, 1, 1, 1, (1, 1)),
        // Winograd on a 28x28 map at batch 1: four chunks, transformed weights shared, each chunk's output
        // channels split over the threads too.
        (1, 40, 48, 3, 1, 1, 1, (28, 28)),
        // 1x1 convs over 512 columns or more, rows outer: depth over one `KC` block in one, partial panels
        // and strips; one image split over threads; the deepest such product over three column blocks;
        // whole 16-row blocks for the AMX kernels.
        (2, 200, 36, 1, 1, 0, 1, (24, 25)),
        (1, 64, 40, 1, 1, 0, 1, (40, 41)),
        (2, 512, 32, 1, 1, 0, 1, (20, 30)),
        (2, 96, 64, 1, 1, 0, 1, (24, 25)),
        // Thin strided stems, direct on AVX-512: ResNet's at full size at batch 1 (threads split the map's
        // 16-pixel vectors, register tiles spanning rows), the deep stem's first 3x3 at an odd size, an
        // even kernel without padding over a 4-channel image.
        (1, 3, 64, 7, 2, 3, 1, (224, 224)),
        (3, 3, 32, 3, 2, 1, 1, (33, 20)),
        (2, 4, 16, 4, 2, 0, 1, (19, 70)),
    ];
    for (i, (n, c, o, k, s, p, g, hw)) in cases.into_iter().enumerate() {
        for (residual, relu) in [(false, false), (true, true), (false, true)] {
            check(n, c, o, k, s, p, g, hw, residual, relu, i as u64)?;
        }
    }
    Ok(())
}

/// The lines a block's tiles fetch ahead (`Ahead::of`, a quota each, as `blocked` hands them out) are every line
/// holding a float of the region, plus at most one past each run's last (runs that start inside a line), each
/// once unless two runs share it, and nothing once the quotas pass the region's end: matrix rows (a plane per
/// row) and image planes of several runs (a strided 1x1's rows).
#[test]
fn tiles_fetch_every_line_of_the_next_block() {
    use std::collections::BTreeSet;
    let buf = vec![0f32; 64 * 1024];
    // (skew, planes, plane_ld, runs, run_ld, cols, tiles)
    for (skew, planes, plane_ld, runs, run_ld, cols, tiles) in [
        (0, 64, 3136, 1, 0, 1008, 168),
        (0, 512, 784, 1, 0, 96, 64),
        (3, 7, 50, 1, 0, 45, 4),
        (5, 9, 37, 1, 0, 20, 50),
        (7, 5, 96, 1, 0, 96, 3),
        (0, 6, 3136, 4, 112, 56, 7),
        (2, 3, 900, 5, 60, 30, 2),
        (9, 4, 400, 3, 100, 100, 5),
    ] {
        // 64-byte aligned, then `skew` floats in.
        let base = buf.as_ptr().wrapping_add(buf.as_ptr().align_offset(64) + skew);
        let r = super::Region {
            at: base,
            planes,
            plane_ld,
            runs,
            run_ld,
            cols,
        };
        let line = |p: *const u8| (p as usize - base as usize + 4 * skew) / 64;
        let want: BTreeSet<usize> = (0..planes)
            .flat_map(|p| (0..runs).flat_map(move |u| (0..cols).map(move |j| p * plane_ld + u * run_ld + j)))
            .map(|at| line(base.wrapping_add(at).cast()))
            .collect();
        let quota = r.total_lines().div_ceil(tiles);
        let mut got = Vec::new();
        for t in 0..tiles + 2 {
            let mut ahead = super::Ahead::of(&r, t * quota, quota);
            assert!(ahead.count <= quota);
            while let Some(p) = ahead.next() {
                got.push(line(p));
            }
        }
        let what = format!("skew {skew} planes {planes}x{plane_ld} runs {runs}x{run_ld} cols {cols}");
        // The tiles of a block share one run (`Fetch`), each going on where the last stopped: the same lines in
        // the same order as the quotas taken one by one.
        let mut shared = super::Ahead::of(&r, 0, usize::MAX);
        let fetch = super::Fetch {
            ahead: &mut shared,
            lines: quota,
        };
        let mut chained = Vec::new();
        for _ in 0..tiles + 2 {
            // SAFETY: `shared` lives through the loop and only this thread uses it.
            let mut mine = unsafe { fetch.start() };
            assert!(mine.count <= quota);
            while let Some(p) = mine.next() {
                chained.push(line(p));
            }
            unsafe { fetch.finish(&mine) };
        }
        assert_eq!(
            chained, got,
            "{what}: tiles sharing one run fetch other lines than quotas one by one"
        );
        let unique: BTreeSet<usize> = got.iter().copied().collect();
        // Runs far enough apart that no line fetched for one (its extra line included) holds floats of the next.
        let gap = if runs > 1 { run_ld } else { plane_ld };
        if gap >= cols.div_ceil(16) * 16 + 16 {
            assert_eq!(unique.len(), got.len(), "{what}: a line fetched twice");
        }
        assert!(unique.is_superset(&want), "{what}: lines missed");
        assert!(
            unique.len() <= want.len() + planes * runs,
            "{what}: {} lines for {}",
            unique.len(),
            want.len()
        );
        for extra in unique.difference(&want) {
            assert!(
                want.contains(&(extra - 1)),
                "{what}: line {extra} is not just past a run"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random shapes: every engine equals the definition.
    #[test]
    fn random_shapes_match_the_definition(
        n in 1usize..4,
        cg in 1usize..24,
        og in 1usize..30,
        groups in prop::sample::select(vec![1usize, 1, 1, 2, 3]),
        k in prop::sample::select(vec![1usize, 1, 3, 3, 5, 7]),
        stride in 1usize..4,
        h in 1usize..26,
        w in 1usize..26,
        pad_frac in 0usize..3,
        residual: bool,
        relu: bool,
        seed: u64,
    ) {
        let padding = (k / 2) * pad_frac / 2;
        prop_assume!(h + 2 * padding >= k && w + 2 * padding >= k);
        check(n, cg * groups, og * groups, k, stride, padding, groups, (h, w), residual, relu, seed).unwrap();
    }

    /// Random shapes whose output channels fill whole weight panels (multiples of 6 or 8), where convs
    /// hold bf16 / f16 weights: every engine and dtype equals the definition.
    #[test]
    fn random_shapes_with_whole_panels_match_the_definition(
        n in 1usize..3,
        c in 1usize..40,
        o in prop::sample::select(vec![6usize, 8, 12, 16, 24, 32, 48, 80]),
        k in prop::sample::select(vec![1usize, 3, 3, 7]),
        stride in 1usize..3,
        h in 1usize..20,
        w in 1usize..60,
        residual: bool,
        relu: bool,
        seed: u64,
    ) {
        let padding = k / 2;
        check(n, c, o, k, stride, padding, 1, (h, w), residual, relu, seed).unwrap();
    }

    /// Random thin strided convs, the direct lowering's (on AVX-512; a GEMM elsewhere): images of 1-4
    /// channels, any kernel and padding, widths around the 16-pixel vectors.
    #[test]
    fn random_thin_strided_convs_match_the_definition(
        n in 1usize..3,
        c in 1usize..5,
        o in prop::sample::select(vec![8usize, 16, 24, 64]),
        k in 2usize..8,
        pad in 0usize..4,
        h in 1usize..40,
        w in 1usize..70,
        residual: bool,
        relu: bool,
        seed: u64,
    ) {
        let padding = pad.min(k / 2);
        prop_assume!(h + 2 * padding >= k && w + 2 * padding >= k);
        check(n, c, o, k, 2, padding, 1, (h, w), residual, relu, seed).unwrap();
    }
}

/// Int8 convs against the definition on quantized values: `s_x * s_w[o] * sum_k q_w q_x` with the zero
/// point removed, plus bias, residual and ReLU, in f64; on every int8 kernel this CPU runs, and where a conv
/// falls back (the f32 kernel, or output channels not a multiple of 16) against the f32 definition on the
/// dequantized weights.
#[allow(clippy::too_many_arguments)]
fn check_int8(
    n: usize,
    c: usize,
    o: usize,
    k: usize,
    stride: usize,
    (h, w): (usize, usize),
    signed: bool,
    residual: bool,
    seed: u64,
) -> Result<()> {
    use crate::layers::quant::ActQuant;
    use crate::layers::Int8Kernel;
    let spec = ConvSpec::new(c, o, k, stride);
    let mut next = uniform(seed);
    let (oh, ow) = (spec.output_size(h), spec.output_size(w));
    // Post-ReLU-like inputs (>= 0) or signed ones; a few beyond the calibrated range, to clip.
    let x: Vec<f32> = (0..n * c * h * w)
        .map(|_| if signed { next() * 1.2 } else { next().abs() * 1.2 })
        .collect();
    let weight: Vec<f32> = (0..o * spec.depth()).map(|_| next() * 0.3).collect();
    let bias: Vec<f32> = (0..o).map(|_| next()).collect();
    let res: Vec<f32> = (0..n * o * oh * ow).map(|_| next()).collect();
    let act = ActQuant::from_threshold(1.0, !signed);
    let bt = Tensor::from_vec(bias.clone(), o, &Device::Cpu)?;
    let kk = spec.depth();
    let (q, scales, _) = super::reduced::quantize_int8(&weight, kk, kk);
    let deq: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| f32::from(v) * scales[i / kk])
        .collect();
    // q_x back to the values it stands for: (q - z) * s_x, exact in f64.
    let xq: Vec<f32> = x
        .iter()
        .map(|&v| {
            let q = ((v / act.scale).round_ties_even() + f32::from(act.zero)).clamp(0.0, 255.0);
            (q - f32::from(act.zero)) * act.scale
        })
        .collect();
    let rs = residual.then_some(&res[..]);
    let on_ints = naive(&xq, (n, c, h, w), &deq, &bias, &spec, rs, true);
    let on_floats = naive(&x, (n, c, h, w), &deq, &bias, &spec, rs, true);
    let xt = Tensor::from_vec(x, (n, c, h, w), &Device::Cpu)?;
    let rt = Tensor::from_vec(res, (n, o, oh, ow), &Device::Cpu)?;
    let tol = 1e-5 * (kk as f32) + 1e-4;
    for kernel in Int8Kernel::ALL.into_iter().filter(|k| k.is_supported()) {
        let packed = Arc::new(PackedConv::from_vec_int8_with(
            weight.clone(),
            Some(&bt),
            spec,
            act,
            kernel,
        )?);
        let used = packed.int8_kernel().expect("an int8 conv");
        let whole = o.is_multiple_of(16) && super::Engine::current() == super::Engine::Avx512;
        assert_eq!(
            used,
            if whole { kernel } else { Int8Kernel::Dequantized },
            "o{o}: asked for {kernel:?}"
        );
        assert_eq!(packed.is_int8(), used.is_integer());
        let want = if used.is_integer() { &on_ints } else { &on_floats };
        let got = packed
            .forward(&xt, residual.then_some(&rt), true)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let err = max_err(&got, want);
        assert!(
            err <= tol,
            "int8 on {used:?}: n{n} c{c} o{o} k{k} s{stride} {h}x{w} signed {signed} residual {residual}: {err} > {tol}"
        );
    }
    Ok(())
}

/// Int8 1x1 convs over 512 columns or more, whose products go rows outer: batch 2 (threads take images) and
/// batch 1 (threads split the columns).
#[test]
fn int8_wide_1x1_convs_match_the_definition() -> Result<()> {
    check_int8(2, 96, 64, 1, 1, (24, 25), false, true, 7)?;
    check_int8(1, 200, 64, 1, 1, (40, 41), true, false, 8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Random shapes: every int8 kernel (and the fallback) equals the definition on quantized values.
    #[test]
    fn int8_random_shapes_match_the_definition(
        n in 1usize..3,
        c in 1usize..70,
        o in prop::sample::select(vec![8usize, 16, 32, 48, 80]),
        k in prop::sample::select(vec![1usize, 3, 7]),
        stride in 1usize..3,
        h in 1usize..16,
        w in 1usize..50,
        signed: bool,
        residual: bool,
        seed: u64,
    ) {
        check_int8(n, c, o, k, stride, (h, w), signed, residual, seed).unwrap();
    }
}
