//! Reading untrusted image files: only regular files are opened (a FIFO cannot block), the size and the
//! decoded pixel count are checked before anything large is read or allocated, for every format.
//! Fixtures: `tests/fixtures/preprocess/` (scripts/gen_preprocess_fixtures.py).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use resnet::data::{self, DataError, ImageLimits};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/preprocess")
        .join(name)
}

/// Runs `f` on a thread; no answer within 30 s is a hang.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("loading the input hung")
}

#[test]
fn every_format_checks_the_pixel_count_before_decoding() {
    let small = ImageLimits {
        max_pixels: 10,
        ..ImageLimits::default()
    };
    for name in [
        "ycc420.jpg",
        "progressive.jpg",
        "cmyk.jpg",
        "rgb16.png",
        "palette.png",
        "palette.gif",
        "rgb.bmp",
        "rgb.tiff",
        "lossy.webp",
        "lossless.webp",
    ] {
        let path = fixture(name);
        let img = data::load_image(&path).unwrap_or_else(|e| panic!("{e}"));
        let err = data::load_image_with(&path, &small).unwrap_err();
        match &err {
            DataError::TooManyPixels {
                width,
                height,
                limit: 10,
                ..
            } => {
                assert_eq!((*width, *height), (img.width() as u64, img.height() as u64), "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            err.to_string().contains(name) && err.to_string().contains("over the limit of 10 pixels"),
            "{err}"
        );
    }
}

#[test]
fn a_jpeg_header_announcing_billions_of_pixels_is_refused_from_the_header() {
    let mut bytes = std::fs::read(fixture("ycc420.jpg")).unwrap();
    // SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    let err = data::decode_image(&bytes, Path::new("bomb.jpg")).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooManyPixels {
                width: 65500,
                height: 65500,
                ..
            }
        ),
        "{err:?}"
    );
    // A GIF whose screen is 65535 x 65535, and a BMP of 2^31 - 1 rows.
    let mut gif = std::fs::read(fixture("palette.gif")).unwrap();
    gif[6..10].copy_from_slice(&[0xFF; 4]);
    let err = data::decode_image(&gif, Path::new("bomb.gif")).unwrap_err();
    assert!(
        matches!(err, DataError::TooManyPixels { .. } | DataError::Corrupt { .. }),
        "{err:?}"
    );
    let mut bmp = std::fs::read(fixture("rgb.bmp")).unwrap();
    bmp[22..26].copy_from_slice(&i32::MAX.to_le_bytes());
    let err = data::decode_image(&bmp, Path::new("bomb.bmp")).unwrap_err();
    assert!(
        matches!(err, DataError::TooManyPixels { .. } | DataError::Corrupt { .. }),
        "{err:?}"
    );
}

#[test]
fn files_over_the_size_limit_are_not_read() {
    let limits = ImageLimits {
        max_file_bytes: 100,
        ..ImageLimits::default()
    };
    let path = fixture("ycc420.jpg");
    let size = std::fs::metadata(&path).unwrap().len();
    let err = data::load_image_with(&path, &limits).unwrap_err();
    assert!(
        matches!(err, DataError::TooLarge { limit: 100, size: s, .. } if s == size),
        "{err:?}"
    );
    assert!(err.to_string().contains("over the limit of 100 bytes"), "{err}");
    assert_eq!(ImageLimits::default().max_file_bytes, 256 << 20);
}

#[test]
fn text_is_refused_from_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jpg");
    // Larger than the size limit: refused for its size first, whatever it holds.
    std::fs::write(&path, vec![b'a'; 4096]).unwrap();
    let err = data::load_image_with(
        &path,
        &ImageLimits {
            max_file_bytes: 1024,
            ..ImageLimits::default()
        },
    );
    assert!(matches!(err, Err(DataError::TooLarge { .. })), "{err:?}");
    let err = data::load_image(&path).unwrap_err();
    assert!(matches!(err, DataError::NotAnImage { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn fifos_devices_and_directories_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let f = fifo.clone();
    // Nobody ever writes to the FIFO: opening it for a blocking read would hang.
    let err = bounded(move || data::load_image(&f).unwrap_err());
    assert!(
        matches!(&err, DataError::NotAFile { what, .. } if what.contains("FIFO")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("pipe.jpg") && err.to_string().contains("not a regular file"),
        "{err}"
    );
    let err = bounded(|| data::load_image(Path::new("/dev/zero")).unwrap_err());
    assert!(
        matches!(&err, DataError::NotAFile { what, .. } if what.contains("character device")),
        "{err:?}"
    );
    let d = dir.path().to_path_buf();
    let err = bounded(move || data::load_image(&d).unwrap_err());
    assert!(
        matches!(&err, DataError::NotAFile { what, .. } if what.contains("directory")),
        "{err:?}"
    );
}
