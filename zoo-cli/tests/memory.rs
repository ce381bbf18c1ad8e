//! `zoo run --json --output F` streams: its resident memory does not grow with the number of inputs. Alone in its test
//! binary because it reads the peak resident size of this process's children.

mod common;

use std::path::Path;

use common::*;

/// Peak resident memory (bytes) of the largest child waited for so far.
#[cfg(target_os = "linux")]
fn children_peak() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    usage.ru_maxrss as u64 * 1024
}

/// A ResNet-20 whose preprocessing resizes to 128x128: each prepared input is 196 KB, so holding 1000 of
/// them would take ~200 MB.
fn model(dir: &Path) -> std::path::PathBuf {
    let tensors = candle_core::safetensors::load(cifar("resnet20"), &candle_core::Device::Cpu).unwrap();
    let pre = weights::PreprocessConfig {
        input_size: [3, 128, 128],
        crop_pct: 1.0,
        ..weights::PreprocessConfig::imagenet()
    };
    let meta = resnet::load::write_metadata("resnet20", &resnet::variants::resnet20(), &pre, None);
    let path = dir.join("r20-128.safetensors");
    weights::checkpoint::save(&path, &tensors, &meta).unwrap();
    path
}

fn images(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(48, 48, |x, y| {
            image::Rgb([(x * 5 + i as u32) as u8, (y * 5) as u8, (i % 251) as u8])
        });
        img.save(dir.join(format!("{i:05}.png"))).unwrap();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn memory_is_flat_in_the_number_of_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let (few, many) = (tmp.path().join("few"), tmp.path().join("many"));
    images(&few, 10);
    images(&many, 1000);
    let run_on = |dir: &Path| {
        let results = dir.with_extension("jsonl");
        let out = run(zoo()
            .arg("run")
            .arg(&model)
            .arg(dir)
            .args(["--json", "--device", "cpu", "--batch-size", "16", "--output"])
            .arg(&results));
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read_to_string(&results).unwrap().lines().count()
    };
    assert_eq!(run_on(&few), 10);
    let peak_few = children_peak();
    assert_eq!(run_on(&many), 1000);
    let peak_many = children_peak();
    let grew = peak_many.saturating_sub(peak_few) as f64 / 1e6;
    eprintln!(
        "peak resident: 10 images {:.1} MB, 1000 images {:.1} MB (+{grew:.1} MB)",
        peak_few as f64 / 1e6,
        peak_many as f64 / 1e6
    );
    assert!(grew < 50.0, "1000 inputs took {grew:.1} MB more than 10");
}
