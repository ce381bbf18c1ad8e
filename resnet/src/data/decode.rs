//! Image files to 8-bit RGB, as `PIL.Image.open(path).convert("RGB")` gives them.
//!
//! The format is taken from the file's first bytes, like PIL does, never from its extension. JPEGs go through
//! libjpeg-turbo's decoder (the private `jpeg` module), everything else through the `image` crate, whose PNG, GIF, BMP and
//! TIFF decoders are lossless and so agree with PIL's; the pixel-format rules
//! (private `convert` module) are listed on [`load_image`].

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageError, ImageFormat, RgbImage};

use super::convert::to_rgb;
use super::error::DataError;
use super::jpeg::{decode_jpeg, JpegFailure};

/// Reads and decodes an image file to 8-bit RGB with PIL's `convert("RGB")` rules:
/// - gray, gray+alpha, palette and RGBA: gray replicated, palette looked up, alpha dropped (never composited);
/// - 16-bit gray (PIL mode `I;16`): clipped at 255, not scaled (PIL's `I;16 -> L`);
/// - 16-bit RGB, RGBA and gray+alpha: the high byte of each value;
/// - CMYK JPEGs (read as Adobe-inverted, like PIL): `R = round((255 - C) * (255 - K) / 255)`, and so on.
///
/// JPEG EXIF orientation is not applied (PIL's `open` does not either).
///
/// Errors name the file: [`DataError::NotFound`], [`DataError::NotAnImage`] (unrecognised bytes),
/// [`DataError::Truncated`], [`DataError::Corrupt`], [`DataError::Unsupported`] or [`DataError::Io`].
pub fn load_image(path: &Path) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound { path: path.to_owned() },
        _ => DataError::Io { path: path.to_owned(), source },
    })?;
    decode_image(&bytes, path)
}

/// Decodes an image held in memory; `path` is only used in error messages.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<RgbImage, DataError> {
    if is_jpeg(bytes) {
        return decode_jpeg(bytes).map_err(|failure| jpeg_error(failure, path));
    }
    let format = image::guess_format(bytes).map_err(|_| DataError::NotAnImage { path: path.to_owned() })?;
    let img = image::load(Cursor::new(bytes), format).map_err(|e| image_error(e, format, path))?;
    to_rgb(img).map_err(|u| DataError::Unsupported { path: path.to_owned(), reason: u.0 })
}

/// JPEG's SOI marker followed by the start of another marker.
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

fn jpeg_error(failure: JpegFailure, path: &Path) -> DataError {
    let path = path.to_owned();
    match failure {
        JpegFailure::Truncated => DataError::Truncated { path },
        JpegFailure::Corrupt(reason) => DataError::Corrupt { path, reason },
    }
}

fn image_error(e: ImageError, format: ImageFormat, path: &Path) -> DataError {
    let path: PathBuf = path.to_owned();
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => DataError::Truncated { path },
        ImageError::Unsupported(u) => DataError::Unsupported { path, reason: u.to_string() },
        // Decoders report running out of data in their own words; the PNG decoder, for one, as a decoding error.
        e if mentions_eof(&e) => DataError::Truncated { path },
        e => DataError::Corrupt { path, reason: format!("{format:?}: {e}") },
    }
}

fn mentions_eof(e: &ImageError) -> bool {
    let text = e.to_string().to_lowercase();
    ["unexpected end", "unexpected eof", "end of file", "truncated", "no more data"].iter().any(|m| text.contains(m))
}
