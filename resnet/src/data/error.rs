//! What can go wrong between an image file and a tensor.

use std::path::PathBuf;

/// Why an image could not be loaded or prepared. Every file-related variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The path does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, an I/O failure).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a socket, a directory): `what` says which. It was
    /// not read.
    #[error("{}: not a regular file ({what})", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// The file is larger than the limit ([`super::decode::ImageLimits::max_file_bytes`]); it was not read.
    #[error("{}: the file is {size} bytes, over the limit of {limit} bytes for an image", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The image's header announces more pixels than the limit ([`super::decode::ImageLimits::max_pixels`]):
    /// a decompression bomb, or simply too big. Nothing was decoded.
    #[error(
        "{}: {width}x{height} pixels is over the limit of {limit} pixels (a decompression bomb, or an image \
         far larger than a model needs)", path.display()
    )]
    TooManyPixels {
        /// The file.
        path: PathBuf,
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not start like any image format we decode (PIL would say "cannot identify image file").
    #[error("{}: not an image (unrecognised file format)", path.display())]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before the image data does (PIL: "image file is truncated").
    #[error("{}: truncated image file", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// The image data is malformed; `reason` is the decoder's message.
    #[error("{}: corrupt image: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What went wrong, in the decoder's words.
        reason: String,
    },
    /// A valid image of a kind we do not convert to RGB (e.g. floating-point pixels).
    #[error("{}: unsupported image: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What went wrong, in the decoder's words.
        reason: String,
    },
    /// Building the tensor failed (device allocation, for instance).
    #[error("building the input tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}
