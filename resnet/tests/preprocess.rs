//! `resnet::data` against PIL + timm/torchvision: decoding, conversion to RGB, resize + crop, normalization,
//! and errors on bad files. Fixtures: `tests/fixtures/preprocess/`, made by `scripts/gen_preprocess_fixtures.py`.
//!
//! Cases built on the real photos in `.data/` (fetched by `scripts/fetch_test_data.sh`, never committed) are
//! skipped with a loud message when that folder is missing, except under CI (env `CI` set), where they fail.
//! Each test prints its measured differences (`cargo test --test preprocess -- --nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use image::RgbImage;
use resnet::data::{self, DataError};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use sha2::{Digest, Sha256};
use weights::PreprocessConfig;

const PHOTOS: [&str; 3] = ["china.jpg", "flower.jpg", "chelsea.png"];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data")
}

/// Whether the photos are there; missing photos fail under CI and only warn (loudly) elsewhere.
fn photos_available() -> bool {
    let missing: Vec<_> = PHOTOS.iter().filter(|p| !data_dir().join(p).is_file()).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "photos {missing:?} missing from {}: run `bash scripts/fetch_test_data.sh`",
        data_dir().display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is an error)");
    }
    eprintln!("\n!!!!!!!!!! SKIPPING the photo cases: {msg} !!!!!!!!!!\n");
    false
}

/// The generator's output: uint8/f32 arrays by name, and the metadata.
struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    fn load() -> Self {
        let path = fixture_dir().join("expected.safetensors");
        Self {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("expected.safetensors")
    }

    fn meta(&self) -> HashMap<String, String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).expect("header");
        meta.metadata().clone().unwrap_or_default()
    }

    /// A uint8 array and its shape.
    fn u8(&self, name: &str) -> (Vec<u8>, Vec<usize>) {
        let t = self.tensors();
        let view = t.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(view.dtype(), Dtype::U8, "{name}");
        (view.data().to_vec(), view.shape().to_vec())
    }

    fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let t = self.tensors();
        let view = t.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values, view.shape().to_vec())
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    fn cases(&self) -> Vec<Value> {
        serde_json::from_str(&self.meta()["cases"]).expect("cases JSON")
    }
}

/// Largest absolute difference and how many values differ at all.
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold((0, 0), |(max, n), (x, y)| {
        (max.max(x.abs_diff(*y)), n + (x != y) as usize)
    })
}

/// HWC bytes to CHW, the layout the generator stores transform outputs in.
fn chw(img: &RgbImage) -> Vec<u8> {
    (0..3).flat_map(|c| img.pixels().map(move |p| p[c])).collect()
}

fn load(path: &Path) -> RgbImage {
    data::load_image(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn small_images_decode_exactly_like_pil() {
    let expected = Expected::load();
    let mut report = Vec::new();
    for key in expected.names("decode.") {
        let file = key.trim_start_matches("decode.");
        if PHOTOS.contains(&file) {
            continue;
        }
        let img = load(&fixture_dir().join(file));
        let (want, shape) = expected.u8(&key);
        assert_eq!(shape, [img.height() as usize, img.width() as usize, 3], "{file}");
        let (max, n) = diff(img.as_raw(), &want);
        report.push(format!("{file}: max diff {max} ({n} values differ)"));
        assert_eq!(
            max, 0,
            "{file} decodes differently from PIL: max diff {max}, {n} values"
        );
    }
    println!("decode vs PIL:\n  {}", report.join("\n  "));
    assert!(report.len() >= 14, "fixture images missing: {report:?}");
}

#[test]
fn photos_decode_exactly_like_pil() {
    if !photos_available() {
        return;
    }
    let expected = Expected::load();
    let meta = expected.meta();
    for photo in PHOTOS {
        let img = load(&data_dir().join(photo));
        let sha = format!("{:x}", Sha256::digest(img.as_raw()));
        let key = format!("decode.{photo}");
        let sub = if expected.names(&key).is_empty() {
            String::new()
        } else {
            // Every 8th row and column was stored: compare those values for a size of the difference.
            let (want, shape) = expected.u8(&key);
            let got: Vec<u8> = (0..shape[0])
                .flat_map(|y| (0..shape[1]).flat_map(move |x| (0..3).map(move |c| (y, x, c))))
                .map(|(y, x, c)| img.get_pixel(8 * x as u32, 8 * y as u32)[c])
                .collect();
            let (max, n) = diff(&got, &want);
            format!(", subsample max diff {max} ({n} values differ)")
        };
        println!(
            "{photo} {}x{}: sha256 {}{sub}",
            img.width(),
            img.height(),
            if sha == meta[&format!("sha256.{photo}")] {
                "identical to PIL"
            } else {
                "DIFFERS from PIL"
            }
        );
        assert_eq!(
            sha,
            meta[&format!("sha256.{photo}")],
            "{photo}: decoded pixels differ from PIL's{sub}"
        );
    }
}

#[test]
fn eval_transform_cases_match_pil_within_one_level() {
    let expected = Expected::load();
    let photos = photos_available();
    let mut report = Vec::new();
    let mut worst = 0;
    for case in expected.cases() {
        let name = case["name"].as_str().unwrap();
        let source = case["source"].as_str().unwrap();
        let path = match source.split_once('/').unwrap() {
            ("data", file) if photos => data_dir().join(file),
            ("data", _) => continue,
            (_, file) => fixture_dir().join(file),
        };
        // The case JSON carries the PreprocessConfig fields under their own names (extra keys are ignored).
        let cfg: PreprocessConfig = serde_json::from_value(case.clone()).expect("case config");
        let out = data::resize_and_crop(&load(&path), &cfg);
        let (want, shape) = expected.u8(&format!("case.{name}"));
        assert_eq!(shape, [3, out.height() as usize, out.width() as usize], "{name}");
        let (max, n) = diff(&chw(&out), &want);
        worst = worst.max(max);
        report.push(format!("{name}: max diff {max} ({n} of {} values differ)", want.len()));
    }
    println!("resize + crop vs PIL/timm:\n  {}", report.join("\n  "));
    assert!(
        worst <= 1,
        "a case is more than one level away from PIL:\n  {}",
        report.join("\n  ")
    );
    assert!(report.len() >= 10, "too few cases ran: {report:?}");
}

#[test]
fn normalized_tensor_matches_timm() {
    if !photos_available() {
        return;
    }
    let expected = Expected::load();
    for name in expected.names("normalized.") {
        let case_name = name.trim_start_matches("normalized.");
        let case = expected
            .cases()
            .into_iter()
            .find(|c| c["name"] == case_name)
            .expect("case for normalized");
        let cfg: PreprocessConfig = serde_json::from_value(case.clone()).unwrap();
        let file = case["source"].as_str().unwrap().trim_start_matches("data/");
        let img = load(&data_dir().join(file));
        let got = data::eval_transform(&img, &cfg, &Device::Cpu).unwrap();
        let (want, shape) = expected.f32(&name);
        assert_eq!(got.dims(), shape.as_slice());
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plane = want.len() / 3;
        let mut max = 0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = i / plane;
            let tol = 1e-6 + 1.0 / 255.0 / cfg.std[c];
            assert!((g - w).abs() <= tol, "{case_name}[{i}]: {g} vs {w}");
            max = max.max((g - w).abs());
        }
        println!("{case_name}: normalized max abs diff {max:e}");
    }
}

#[test]
fn preprocess_file_and_batch_shapes() {
    let cfg = PreprocessConfig {
        input_size: [3, 48, 40],
        ..PreprocessConfig::imagenet()
    };
    let dev = Device::Cpu;
    let a = data::preprocess_file(&fixture_dir().join("ycc420.jpg"), &cfg, &dev).unwrap();
    let b = data::preprocess_file(&fixture_dir().join("palette.png"), &cfg, &dev).unwrap();
    assert_eq!(a.dims(), [3, 48, 40]);
    let batch = data::batch(&[a.clone(), b]).unwrap();
    assert_eq!(batch.dims(), [2, 3, 48, 40]);
    // The batch holds the inputs unchanged.
    let first = batch.get(0).unwrap();
    assert_eq!(
        (first - &a)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    assert!(data::batch(&[]).is_err());
    let other = data::preprocess_file(&fixture_dir().join("gray.png"), &PreprocessConfig::imagenet(), &dev).unwrap();
    assert!(
        data::batch(&[a, other]).is_err(),
        "inputs of different sizes cannot be batched"
    );
}

/// Writes `bytes` to `name` in a fresh folder and loads it.
fn load_bytes(name: &str, bytes: &[u8]) -> (DataError, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = data::load_image(&path).expect_err(name);
    let msg = err.to_string();
    println!("{name}: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "the error must name the file: {msg}"
    );
    (err, path)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap()
}

#[test]
fn missing_file_is_a_clear_error() {
    let path = fixture_dir().join("no-such-image.jpg");
    let err = data::load_image(&path).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-image.jpg"), "{err}");
    let err = data::preprocess_file(&path, &PreprocessConfig::imagenet(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
}

#[test]
fn text_named_png_is_not_an_image() {
    let (err, _) = load_bytes("notes.png", b"just some text, not pixels\n");
    assert!(matches!(err, DataError::NotAnImage { .. }), "{err:?}");
    let (err, _) = load_bytes("empty.jpg", b"");
    assert!(matches!(err, DataError::NotAnImage { .. }), "{err:?}");
}

#[test]
fn truncated_jpeg_is_reported_as_truncated() {
    for source in ["ycc420.jpg", "progressive.jpg", "cmyk.jpg"] {
        let bytes = fixture_bytes(source);
        let (err, _) = load_bytes(&format!("cut-{source}"), &bytes[..bytes.len() / 2]);
        assert!(matches!(err, DataError::Truncated { .. }), "{source}: {err:?}");
    }
    // Cut inside the headers: libjpeg runs out of data before the first scan.
    let (err, _) = load_bytes("header-only.jpg", &fixture_bytes("ycc420.jpg")[..40]);
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
}

#[test]
fn truncated_png_is_reported_as_truncated() {
    for source in ["rgba.png", "gray16.png"] {
        let bytes = fixture_bytes(source);
        let (err, _) = load_bytes(&format!("cut-{source}"), &bytes[..bytes.len() / 2]);
        assert!(matches!(err, DataError::Truncated { .. }), "{source}: {err:?}");
    }
}

#[test]
fn corrupt_jpeg_is_an_error_not_a_panic() {
    let mut bytes = vec![0xFF, 0xD8, 0xFF];
    bytes.extend(std::iter::repeat_n(0x5A, 200));
    let (err, _) = load_bytes("garbage.jpg", &bytes);
    assert!(
        matches!(err, DataError::Corrupt { .. } | DataError::Truncated { .. }),
        "{err:?}"
    );
}
