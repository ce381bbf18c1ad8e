//! JPEG decoding with libjpeg-turbo's decoder, so pixels equal PIL's bit for bit.
//!
//! PIL decodes JPEGs with libjpeg-turbo (islow IDCT, fancy chroma upsampling, its YCbCr->RGB tables). Other
//! decoders (zune-jpeg, jpeg-decoder) round differently and land a few levels away, which a model notices. MozJPEG
//! is a libjpeg-turbo fork that changes only the encoder, and `mozjpeg-sys` builds it from C with `cc`.
//!
//! libjpeg reports fatal errors through `error_exit`, which must not return; `mozjpeg-sys` is built with
//! `-fexceptions` so a Rust unwind can cross the C frames. We unwind with a typed payload and catch it right here,
//! so callers only ever see a `Result`.

use std::mem;
use std::os::raw::c_int;
use std::panic::{self, AssertUnwindSafe};

use image::RgbImage;
use mozjpeg_sys::jpeg_error_mgr as ErrorMgr;
use mozjpeg_sys::{jpeg_common_struct, JWRN_JPEG_EOF, J_COLOR_SPACE};

use super::convert::cmyk_to_rgb;

/// Why libjpeg gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegFailure {
    /// The data ended before the image did ("Premature end of JPEG file").
    Truncated,
    /// Any fatal libjpeg error, with libjpeg's message.
    Corrupt(String),
    /// The header announces more pixels than allowed (nothing was decoded).
    TooManyPixels { width: u64, height: u64 },
}

/// Decodes a JPEG held in memory to RGB, as PIL's `Image.open(..).convert("RGB")` does, if its header
/// announces at most `max_pixels` pixels.
pub(crate) fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, JpegFailure> {
    match panic::catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes, max_pixels))) {
        Ok(result) => result,
        Err(payload) => Err(payload.downcast::<JpegFailure>().map(|f| *f).unwrap_or_else(|p| {
            // Not our unwind (a bug in the wrapper): still an error, not a crash.
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            JpegFailure::Corrupt(msg.unwrap_or_else(|| "JPEG decoder failed".into()))
        })),
    }
}

fn decode_unguarded(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, JpegFailure> {
    let dec = mozjpeg::Decompress::builder()
        .with_err(error_mgr())
        .from_mem(bytes)
        .map_err(io_failure)?;
    let (width, height) = (dec.width() as u32, dec.height() as u32);
    // Before any buffer is sized from the header (libjpeg allows 65500 x 65500).
    if width as u64 * height as u64 > max_pixels {
        return Err(JpegFailure::TooManyPixels {
            width: width as u64,
            height: height as u64,
        });
    }
    match dec.color_space() {
        // libjpeg cannot convert CMYK to RGB; PIL reads it as CMYK and converts itself.
        J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK => {
            let mut started = dec.to_colorspace(J_COLOR_SPACE::JCS_CMYK).map_err(io_failure)?;
            let cmyk: Vec<u8> = started.read_scanlines().map_err(io_failure)?;
            let rgb = cmyk_to_rgb(&adobe_cmyk_to_plain(cmyk));
            RgbImage::from_raw(width, height, rgb).ok_or_else(short_output)
        }
        // Gray and YCbCr: libjpeg's own conversion (gray is replicated, exactly PIL's L -> RGB).
        _ => {
            let mut started = dec.rgb().map_err(io_failure)?;
            let rgb: Vec<u8> = started.read_scanlines().map_err(io_failure)?;
            // jpeg_finish_decompress is deliberately not called: it only reads up to EOI, and a file missing
            // nothing but its EOI marker still has every pixel (PIL accepts it too).
            RgbImage::from_raw(width, height, rgb).ok_or_else(short_output)
        }
    }
}

/// PIL assumes Adobe's inverted CMYK in every CMYK JPEG (rawmode "CMYK;I"), so undo the inversion.
fn adobe_cmyk_to_plain(mut cmyk: Vec<u8>) -> Vec<u8> {
    cmyk.iter_mut().for_each(|v| *v = 255 - *v);
    cmyk
}

fn short_output() -> JpegFailure {
    JpegFailure::Corrupt("decoder returned fewer pixels than the header announced".into())
}

/// The wrapper reports running out of scanlines as `UnexpectedEof`; anything else is a plain failure.
fn io_failure(e: std::io::Error) -> JpegFailure {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => JpegFailure::Truncated,
        _ => JpegFailure::Corrupt(e.to_string()),
    }
}

fn error_mgr() -> ErrorMgr {
    // SAFETY: jpeg_error_mgr is plain C data; jpeg_std_error fills every field before use.
    let mut err: ErrorMgr = unsafe { mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(on_fatal);
    err.emit_message = Some(on_message);
    err
}

unsafe extern "C-unwind" fn on_fatal(cinfo: &mut jpeg_common_struct) {
    panic::resume_unwind(Box::new(JpegFailure::Corrupt(message(cinfo))));
}

/// Warnings (level -1) are ignored as PIL ignores them, except running out of data: PIL refuses truncated files.
unsafe extern "C-unwind" fn on_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: libjpeg calls this with the cinfo whose `err` we installed.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
        // resume_unwind, not panic!: no panic hook, nothing printed.
        panic::resume_unwind(Box::new(JpegFailure::Truncated));
    }
}

/// libjpeg's text for the current message code.
fn message(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: `err` is ours and format_message writes at most JMSG_LENGTH_MAX (80) bytes, NUL-terminated. The
    // binding declares the buffer `&[u8; 80]` although C writes to it, hence the cast to the mutable signature.
    unsafe {
        let code = (*cinfo.err).msg_code;
        let Some(format) = (*cinfo.err).format_message else {
            return format!("libjpeg error {code}");
        };
        type Mutable = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]);
        let format: Mutable = mem::transmute::<_, Mutable>(format);
        let mut buf = [0u8; 80];
        format(cinfo, &mut buf);
        let text = buf.split(|&b| b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(text).into_owned()
    }
}
