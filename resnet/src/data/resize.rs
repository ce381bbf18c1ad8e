//! Resizing 8-bit RGB images exactly as PIL's `Image.resize` does (the resampling torchvision's `Resize` uses on
//! PIL images), written from the math rather than ported.
//!
//! Bilinear and bicubic are separable convolutions. For each output coordinate `o` along an axis of `n_in` input
//! and `n_out` output pixels:
//! - `scale = n_in / n_out`, and the filter is stretched by `max(scale, 1)` when downscaling (that is PIL's
//!   antialiasing: every input pixel under the output pixel contributes);
//! - the window is centred at `(o + 0.5) * scale` and spans `support * max(scale, 1)` either side;
//! - the taps are normalized to sum to 1, then turned into fixed point with [`PRECISION_BITS`] fractional bits,
//!   rounded half away from zero.
//!
//! The horizontal pass runs first; its output is rounded (adding half before the shift) and clipped to 0..=255,
//! then the vertical pass runs on that 8-bit intermediate. The rounding and clipping between the passes (which
//! bicubic's negative lobes make visible) is what a float implementation misses.
//!
//! Nearest is not a convolution in PIL but an affine scaling that samples `floor(a * (o + 0.5))`, with the source
//! coordinate accumulated step by step in double precision.

use image::RgbImage;
use weights::Interpolation;

/// Fractional bits of PIL's fixed-point taps: 32 - 8 (pixel) - 2 (headroom for lobes over 1).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resizes `img` to `width` x `height` with PIL's resampling for the given filter.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Interpolation) -> RgbImage {
    let (w, h) = img.dimensions();
    if (w, h) == (width, height) {
        return img.clone(); // PIL copies in this case too
    }
    let kernel = match filter {
        Interpolation::Nearest => return resize_nearest(img, width, height),
        Interpolation::Bilinear => Kernel::BILINEAR,
        Interpolation::Bicubic => Kernel::BICUBIC,
    };
    let mut pixels = Plane {
        data: img.as_raw().clone(),
        width: w as usize,
        height: h as usize,
    };
    if width != w {
        pixels = pixels.horizontal(&Taps::new(kernel, w as usize, width as usize));
    }
    if height != h {
        pixels = pixels.vertical(&Taps::new(kernel, h as usize, height as usize));
    }
    RgbImage::from_raw(width, height, pixels.data).expect("resampled plane has width*height*3 bytes")
}

/// A continuous filter and the radius outside which it is zero.
#[derive(Clone, Copy)]
struct Kernel {
    support: f64,
    eval: fn(f64) -> f64,
}

impl Kernel {
    const BILINEAR: Kernel = Kernel {
        support: 1.0,
        eval: triangle,
    };
    const BICUBIC: Kernel = Kernel {
        support: 2.0,
        eval: keys_cubic,
    };
}

fn triangle(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

/// Keys' cubic convolution with `a = -0.5` (PIL's choice; OpenCV and PyTorch's tensor path use -0.75).
fn keys_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point taps of one axis: output `o` reads `len[o]` inputs from `start[o]` with weights
/// `weights[o * stride ..]`.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    stride: usize,
    weights: Vec<i32>,
}

impl Taps {
    fn new(kernel: Kernel, n_in: usize, n_out: usize) -> Self {
        let scale = n_in as f64 / n_out as f64;
        let stretch = scale.max(1.0); // downscaling widens the filter: antialiasing
        let support = kernel.support * stretch;
        let stride = support.ceil() as usize * 2 + 1;
        let mut taps = Taps {
            start: vec![0; n_out],
            len: vec![0; n_out],
            stride,
            weights: vec![0; n_out * stride],
        };
        for o in 0..n_out {
            let center = (o as f64 + 0.5) * scale;
            // Truncation (not floor) mirrors a C int cast; negative values are clamped to 0 right after anyway.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).clamp(0, n_in as i64) as usize;
            let row = &mut taps.weights[o * stride..(o + 1) * stride];
            let len = taps_for(
                kernel,
                center,
                stretch,
                first,
                end.saturating_sub(first).min(stride),
                row,
            );
            (taps.start[o], taps.len[o]) = (first, len);
        }
        taps
    }
}

/// Fills `row` with the normalized fixed-point weights of inputs `first..first + len`; returns `len`.
fn taps_for(kernel: Kernel, center: f64, stretch: f64, first: usize, len: usize, row: &mut [i32]) -> usize {
    let inv = 1.0 / stretch;
    let real: Vec<f64> = (0..len)
        .map(|i| (kernel.eval)(((first + i) as f64 - center + 0.5) * inv))
        .collect();
    let total: f64 = real.iter().sum();
    for (w, r) in row.iter_mut().zip(&real) {
        let r = if total != 0.0 { r / total } else { *r };
        *w = to_fixed(r);
    }
    len
}

/// Rounds half away from zero to PRECISION_BITS fractional bits.
fn to_fixed(w: f64) -> i32 {
    let scaled = w * (1u32 << PRECISION_BITS) as f64;
    (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
}

/// Rounds a fixed-point accumulator (already holding the +0.5) back to a clipped 8-bit value.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Interleaved RGB bytes, row-major.
struct Plane {
    data: Vec<u8>,
    width: usize,
    height: usize,
}

impl Plane {
    /// Convolves along rows: `width` becomes `taps.start.len()`.
    fn horizontal(&self, taps: &Taps) -> Plane {
        let out_w = taps.start.len();
        let mut out = vec![0u8; out_w * self.height * 3];
        for (src, dst) in self
            .data
            .chunks_exact(self.width * 3)
            .zip(out.chunks_exact_mut(out_w * 3))
        {
            for (o, px) in dst.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&convolve(taps, o, |i, c| src[i * 3 + c]));
            }
        }
        Plane {
            data: out,
            width: out_w,
            height: self.height,
        }
    }

    /// Convolves along columns: `height` becomes `taps.start.len()`.
    fn vertical(&self, taps: &Taps) -> Plane {
        let out_h = taps.start.len();
        let row = self.width * 3;
        let mut out = vec![0u8; row * out_h];
        for (o, dst) in out.chunks_exact_mut(row).enumerate() {
            for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&convolve(taps, o, |i, c| self.data[i * row + x * 3 + c]));
            }
        }
        Plane {
            data: out,
            width: self.width,
            height: out_h,
        }
    }
}

/// One output pixel: `sample(i, c)` is channel `c` of input `i` along the axis.
fn convolve(taps: &Taps, o: usize, sample: impl Fn(usize, usize) -> u8) -> [u8; 3] {
    let weights = &taps.weights[o * taps.stride..][..taps.len[o]];
    let mut acc = [1i64 << (PRECISION_BITS - 1); 3]; // the +0.5 that makes the final shift round
    for (k, &w) in weights.iter().enumerate() {
        for (c, a) in acc.iter_mut().enumerate() {
            *a += sample(taps.start[o] + k, c) as i64 * w as i64;
        }
    }
    acc.map(clip8)
}

/// PIL's NEAREST resize: source index `floor(scale * (o + 0.5))`, accumulated in f64 as PIL does.
fn resize_nearest(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let xs = nearest_indices(w, width);
    let ys = nearest_indices(h, height);
    RgbImage::from_fn(width, height, |x, y| *img.get_pixel(xs[x as usize], ys[y as usize]))
}

fn nearest_indices(n_in: u32, n_out: u32) -> Vec<u32> {
    let step = n_in as f64 / n_out as f64;
    let mut pos = step * 0.5;
    (0..n_out)
        .map(|_| {
            let i = (pos as u32).min(n_in - 1); // pos >= 0; the min only guards rounding at the far edge
            pos += step;
            i
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for (n_in, n_out) in [(640, 182), (40, 128), (7, 3), (3, 7), (300, 299)] {
            for kernel in [Kernel::BILINEAR, Kernel::BICUBIC] {
                let taps = Taps::new(kernel, n_in, n_out);
                for o in 0..n_out {
                    let sum: i64 = taps.weights[o * taps.stride..][..taps.len[o]]
                        .iter()
                        .map(|&w| w as i64)
                        .sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= taps.len[o] as i64,
                        "{n_in}->{n_out} @{o}: {sum}"
                    );
                    assert!(taps.start[o] + taps.len[o] <= n_in);
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(13, 9, image::Rgb([200, 3, 77]));
        for filter in [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic] {
            for (w, h) in [(5, 4), (31, 20), (13, 3)] {
                let out = resize(&img, w, h, filter);
                assert!(out.pixels().all(|p| p.0 == [200, 3, 77]), "{filter:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn bicubic_overshoot_is_clipped() {
        // A hard edge: the cubic's negative lobes would ring below 0 and above 255.
        let img = RgbImage::from_fn(8, 1, |x, _| image::Rgb([if x < 4 { 0 } else { 255 }; 3]));
        let out = resize(&img, 20, 1, Interpolation::Bicubic);
        assert!(out.pixels().any(|p| p[0] == 0) && out.pixels().any(|p| p[0] == 255));
    }
}
