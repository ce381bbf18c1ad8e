//! Image files to 8-bit RGB, as `PIL.Image.open(path).convert("RGB")` gives them.
//!
//! The format is taken from the file's first bytes, like PIL does, never from its extension. JPEGs go through
//! libjpeg-turbo's decoder (the private `jpeg` module), everything else through the `image` crate, whose PNG, GIF, BMP and
//! TIFF decoders are lossless and so agree with PIL's; the pixel-format rules
//! (private `convert` module) are listed on [`load_image`].
//!
//! Inputs are untrusted, so reading is guarded by [`ImageLimits`]: only regular files are opened (a FIFO
//! cannot block, `/dev/zero` is not read), the format is recognised from the first bytes before the rest
//! is read, the file size is capped ([`ImageLimits::max_file_bytes`], 256 MiB by default) and so is the
//! decoded pixel count of every format, from the header, before any pixel buffer is allocated
//! ([`ImageLimits::max_pixels`], PIL's `MAX_IMAGE_PIXELS` by default).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use weights::fsutil::NotRegularFile;

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
///
/// Reading is guarded by [`ImageLimits::default`]; see [`load_image_with`].
pub fn load_image(path: &Path) -> Result<RgbImage, DataError> {
    load_image_with(path, &ImageLimits::default())
}

/// Limits on what [`load_image_with`] and [`decode_image_with`] accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// The largest file read, in bytes (default [`ImageLimits::DEFAULT_MAX_FILE_BYTES`], 256 MiB).
    pub max_file_bytes: u64,
    /// The most pixels (width x height) decoded (default [`ImageLimits::DEFAULT_MAX_PIXELS`]).
    pub max_pixels: u64,
}

impl ImageLimits {
    /// 256 MiB: far above any photo, far below what would strain memory.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;
    /// PIL's `Image.MAX_IMAGE_PIXELS` (89,478,485, about 0.25 GiB of RGBA), where PIL starts warning of a
    /// decompression bomb.
    pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// [`load_image`] under explicit `limits`.
///
/// In order: the path is opened only if it is a regular file ([`DataError::NotAFile`] for a FIFO,
/// device, socket or directory, checked on the open descriptor, opened non-blocking); its size is
/// checked ([`DataError::TooLarge`]); its first bytes must be an image signature
/// ([`DataError::NotAnImage`], nothing more is read); then it is read and decoded with
/// [`decode_image_with`].
pub fn load_image_with(path: &Path, limits: &ImageLimits) -> Result<RgbImage, DataError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound { path: path.to_owned() },
        std::io::ErrorKind::InvalidInput => match source.get_ref().and_then(|e| e.downcast_ref::<NotRegularFile>()) {
            Some(n) => DataError::NotAFile {
                path: path.to_owned(),
                what: n.kind.to_string(),
            },
            None => DataError::Io {
                path: path.to_owned(),
                source,
            },
        },
        _ => DataError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let (mut file, meta) = weights::fsutil::open_regular(path).map_err(io)?;
    let too_large = |size| DataError::TooLarge {
        path: path.to_owned(),
        size,
        limit: limits.max_file_bytes,
    };
    if meta.len() > limits.max_file_bytes {
        return Err(too_large(meta.len()));
    }
    // Enough for every signature `image::guess_format` and `is_jpeg` look at.
    let mut head = Vec::with_capacity(32);
    (&mut file).take(32).read_to_end(&mut head).map_err(io)?;
    if !is_jpeg(&head) && image::guess_format(&head).is_err() {
        return Err(DataError::NotAnImage { path: path.to_owned() });
    }
    let rest = weights::fsutil::read_capped(
        &mut file,
        meta.len().saturating_sub(head.len() as u64),
        limits.max_file_bytes,
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => too_large(meta.len().max(limits.max_file_bytes.saturating_add(1))),
        _ => io(e),
    })?;
    head.extend_from_slice(&rest);
    if head.len() as u64 > limits.max_file_bytes {
        return Err(too_large(head.len() as u64));
    }
    decode_image_with(&head, path, limits)
}

/// Decodes an image held in memory; `path` is only used in error messages. Guarded by
/// [`ImageLimits::default`]'s pixel limit; see [`decode_image_with`].
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<RgbImage, DataError> {
    decode_image_with(bytes, path, &ImageLimits::default())
}

/// [`decode_image`] under explicit `limits`: the pixel count announced by the header is checked
/// against [`ImageLimits::max_pixels`] before decoding ([`DataError::TooManyPixels`]), for JPEG
/// (libjpeg's header) and for every format of the `image` crate (whose allocations are also capped).
pub fn decode_image_with(bytes: &[u8], path: &Path, limits: &ImageLimits) -> Result<RgbImage, DataError> {
    let too_many = |width: u64, height: u64| DataError::TooManyPixels {
        path: path.to_owned(),
        width,
        height,
        limit: limits.max_pixels,
    };
    if is_jpeg(bytes) {
        return decode_jpeg(bytes, limits.max_pixels).map_err(|failure| match failure {
            JpegFailure::TooManyPixels { width, height } => too_many(width, height),
            f => jpeg_error(f, path),
        });
    }
    let format = image::guess_format(bytes).map_err(|_| DataError::NotAnImage { path: path.to_owned() })?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = image::Limits::default();
    // The largest decoded buffer is 16-bit RGBA, 8 bytes a pixel; decoders' own buffers also count.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(l);
    let decoder = reader.into_decoder().map_err(|e| image_error(e, format, path))?;
    let (width, height) = decoder.dimensions();
    if (width as u64) * (height as u64) > limits.max_pixels {
        return Err(too_many(width as u64, height as u64));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, format, path))?;
    to_rgb(img).map_err(|u| DataError::Unsupported {
        path: path.to_owned(),
        reason: u.0,
    })
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
        JpegFailure::TooManyPixels { width, height } => DataError::Corrupt {
            path,
            reason: format!("{width}x{height} pixels is over the limit"),
        },
    }
}

fn image_error(e: ImageError, format: ImageFormat, path: &Path) -> DataError {
    let path: PathBuf = path.to_owned();
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => DataError::Truncated { path },
        ImageError::Unsupported(u) => DataError::Unsupported {
            path,
            reason: u.to_string(),
        },
        ImageError::Limits(l) => DataError::Corrupt {
            path,
            reason: format!("{format:?}: {l} (decoding it would need too much memory)"),
        },
        // Decoders report running out of data in their own words; the PNG decoder, for one, as a decoding error.
        e if mentions_eof(&e) => DataError::Truncated { path },
        e => DataError::Corrupt {
            path,
            reason: format!("{format:?}: {e}"),
        },
    }
}

fn mentions_eof(e: &ImageError) -> bool {
    let text = e.to_string().to_lowercase();
    [
        "unexpected end",
        "unexpected eof",
        "end of file",
        "truncated",
        "no more data",
    ]
    .iter()
    .any(|m| text.contains(m))
}
