//! Conversion of decoded pixels to 8-bit RGB with PIL's `Image.convert("RGB")` rules.
//!
//! PIL never composites alpha onto a background and never rescales 16-bit data; it does:
//! - L / LA / P / RGBA: replicate the gray level or look up the palette, drop alpha;
//! - 16-bit gray PNG/TIFF (mode `I;16`): `I;16 -> L` clips at 255 (`min(v, 255)`), so ordinary 16-bit photos
//!   come out mostly white; that is what a PIL-based pipeline feeds the model, so we do the same;
//! - 16-bit RGB, RGBA and gray+alpha PNGs are unpacked by keeping the high byte (`v >> 8`, no rounding);
//! - CMYK: `R = (255 - C) * (255 - K) / 255` rounded, likewise G with M and B with Y.

use image::{DynamicImage, ImageBuffer, Pixel, Rgb, RgbImage};

/// Why a decoded image has no RGB equivalent here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unconvertible(pub String);

/// Converts whatever the `image` crate decoded to 8-bit RGB as PIL's `convert("RGB")` would.
pub(crate) fn to_rgb(img: DynamicImage) -> Result<RgbImage, Unconvertible> {
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(l) => map(&l, |p| gray(p[0])),
        DynamicImage::ImageLumaA8(la) => map(&la, |p| gray(p[0])),
        DynamicImage::ImageRgba8(rgba) => map(&rgba, |p| Rgb([p[0], p[1], p[2]])),
        DynamicImage::ImageLuma16(l) => map(&l, |p| gray(clip_i16(p[0]))),
        DynamicImage::ImageLumaA16(la) => map(&la, |p| gray(high_byte(p[0]))),
        DynamicImage::ImageRgb16(rgb) => map(&rgb, |p| Rgb(p.0.map(high_byte))),
        DynamicImage::ImageRgba16(rgba) => map(&rgba, |p| Rgb([p[0], p[1], p[2]].map(high_byte))),
        other => {
            return Err(Unconvertible(format!(
                "{:?} pixels have no PIL RGB conversion",
                other.color()
            )))
        }
    })
}

/// Plain (non-inverted) CMYK bytes, 4 per pixel, to RGB bytes, 3 per pixel.
pub(crate) fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - p[3];
            [
                mul_div_255(255 - p[0], k),
                mul_div_255(255 - p[1], k),
                mul_div_255(255 - p[2], k),
            ]
        })
        .collect()
}

/// `round(a * b / 255)` in integers (the exact rounded quotient, as PIL's MULDIV255 computes it).
fn mul_div_255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    ((t + (t >> 8)) >> 8) as u8
}

fn gray(v: u8) -> Rgb<u8> {
    Rgb([v, v, v])
}

/// PIL's `I;16 -> L`: values above 255 saturate instead of being scaled down.
fn clip_i16(v: u16) -> u8 {
    v.min(255) as u8
}

/// PIL's `;16B` unpackers keep the most significant byte.
fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

fn map<P: Pixel>(img: &ImageBuffer<P, Vec<P::Subpixel>>, f: impl Fn(&P) -> Rgb<u8>) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| f(img.get_pixel(x, y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div_255_is_rounded_division() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let exact = (a as f64 * b as f64 / 255.0).round() as u8;
                assert_eq!(mul_div_255(a, b), exact, "{a} * {b} / 255");
            }
        }
    }

    #[test]
    fn cmyk_matches_pil_samples() {
        // Values printed by PIL 13: Image.frombytes("CMYK", ...).convert("RGB").
        let cmyk = [0, 0, 0, 0, 255, 0, 0, 0, 100, 50, 20, 128, 10, 20, 30, 255];
        assert_eq!(
            cmyk_to_rgb(&cmyk),
            vec![255, 255, 255, 0, 255, 255, 77, 102, 117, 0, 0, 0]
        );
    }

    #[test]
    fn sixteen_bit_gray_saturates() {
        let l = ImageBuffer::<image::Luma<u16>, _>::from_raw(4, 1, vec![0, 100, 256, 65535]).unwrap();
        let rgb = to_rgb(DynamicImage::ImageLuma16(l)).unwrap();
        assert_eq!(rgb.as_raw(), &[0, 0, 0, 100, 100, 100, 255, 255, 255, 255, 255, 255]);
    }
}
