//! `zoo run --json --output F` streams: its resident memory does not grow with the number of inputs.

mod common;

use std::path::Path;

use common::*;

/// Runs `cmd` (output to files) and returns whether it succeeded and its own peak resident memory (bytes),
/// from `wait4`'s resource usage of that one child.
#[cfg(target_os = "linux")]
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which std does not see"
)]
fn run_measured(cmd: &mut std::process::Command) -> (bool, u64) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: wait4 on our own child, filling the structs it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as u64 * 1024)
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
    let big = model(tmp.path());
    // (model, images, weights): 10,000 small images through the plain 32x32 ResNet-20, and 1,000 through the
    // 128x128 one (each prepared input 196 KB), each against 10 images.
    let cifar = cifar("resnet20");
    let cases: [(&str, Vec<&str>, usize); 2] = [
        ("resnet20", vec!["--weights", cifar.to_str().unwrap()], 10_000),
        (big.to_str().unwrap(), vec![], 1000),
    ];
    for (model, extra, n) in cases {
        let (few, many) = (tmp.path().join(format!("few{n}")), tmp.path().join(format!("many{n}")));
        images(&few, 10);
        images(&many, n);
        let run_on = |dir: &Path| {
            let results = dir.with_extension("jsonl");
            let (ok, peak) = run_measured(
                zoo()
                    .args(["run", model])
                    .args(&extra)
                    .arg(dir)
                    .args(["--json", "--device", "cpu", "--batch-size", "16", "--output"])
                    .arg(&results),
            );
            assert!(ok, "zoo run on {} failed", dir.display());
            (std::fs::read_to_string(&results).unwrap().lines().count(), peak)
        };
        let (count_few, peak_few) = run_on(&few);
        let (count_many, peak_many) = run_on(&many);
        assert_eq!((count_few, count_many), (10, n));
        let grew = peak_many.saturating_sub(peak_few) as f64 / 1e6;
        eprintln!(
            "{model}: peak resident 10 images {:.1} MB, {n} images {:.1} MB (+{grew:.1} MB)",
            peak_few as f64 / 1e6,
            peak_many as f64 / 1e6
        );
        assert!(grew < 50.0, "{n} inputs took {grew:.1} MB more than 10");
    }
}
