//! Fine-tuning for real, offline: the trained CIFAR-10 ResNet-20 (`../shared`) gets a new 3-way head,
//! trained on crops of three scikit-image photos (`.data/`, from `scripts/fetch_test_data.sh`) and scored
//! on crops from parts of the photos it never saw.
//!
//! Without `.data/` (or `../shared`) the tests skip with a loud message, unless `CI` is set: then they fail.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use image::imageops::{self, FilterType};
use rand::{Rng, SeedableRng};
use resnet::train::{self, Augment, Dataset, FinetuneConfig, ImageFolder, OptimizerKind, Scope, TrainableResNet};

const PHOTOS: [(&str, &str); 3] = [
    ("cat", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("astronaut", "astronaut.png"),
];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data")
}

/// The inputs, or `None` after a loud skip message (a panic under CI).
fn inputs() -> Option<(Vec<PathBuf>, PathBuf)> {
    let photos: Vec<PathBuf> = PHOTOS.iter().map(|(_, f)| data_dir().join(f)).collect();
    let model = common::shared("fixtures/cifar10-resnet/resnet20.safetensors");
    let missing: Vec<String> = photos
        .iter()
        .chain([&model])
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((photos, model));
    }
    let msg = format!("missing test inputs {missing:?}: run scripts/fetch_test_data.sh");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!! SKIPPED: {msg} !!!!!\n");
    None
}

/// Writes `root/<class>/<i>.png`: `n` square crops (20-50% of the photo's height, resized to 40x40) whose
/// left edges lie in `[x0, x1)` of the photo's width (as fractions) and which stay inside that band.
fn write_crops(root: &Path, photos: &[PathBuf], band: (f64, f64), n: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for ((class, _), path) in PHOTOS.iter().zip(photos) {
        let img = image::open(path).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        let (bx0, bx1) = ((w as f64 * band.0) as u32, (w as f64 * band.1) as u32);
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let side = ((h as f64 * rng.random_range(0.2..0.5)) as u32).min(bx1 - bx0);
            let x = rng.random_range(bx0..=bx1 - side);
            let y = rng.random_range(0..=h - side);
            let crop = imageops::crop_imm(&img, x, y, side, side).to_image();
            imageops::resize(&crop, 40, 40, FilterType::Triangle)
                .save(dir.join(format!("{i:03}.png")))
                .unwrap();
        }
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    train_dir: PathBuf,
    val_dir: PathBuf,
    model: PathBuf,
}

fn setup() -> Option<Setup> {
    let (photos, model) = inputs()?;
    let tmp = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = (tmp.path().join("train"), tmp.path().join("val"));
    // Training crops from the left 65% of each photo, held-out crops from the right 35%.
    write_crops(&train_dir, &photos, (0.0, 0.65), 24, 1);
    write_crops(&val_dir, &photos, (0.65, 1.0), 12, 2);
    Some(Setup {
        _tmp: tmp,
        train_dir,
        val_dir,
        model,
    })
}

#[test]
fn head_only_finetune_of_cifar_resnet20_on_photo_crops() {
    let Some(s) = setup() else { return };
    let device = Device::Cpu;
    let mut net = TrainableResNet::from_checkpoint(&s.model, Some("resnet20"), &device).unwrap();
    let original = net.tensors();
    let train_folder = ImageFolder::open(&s.train_dir).unwrap();
    let val_folder = ImageFolder::open(&s.val_dir).unwrap();
    assert_eq!(train_folder.classes(), ["astronaut", "cat", "coffee"]);
    net.replace_head(train_folder.classes().to_vec(), 0).unwrap();

    let train_set = Dataset::load(&train_folder, &net.preprocess, true).unwrap();
    let val_set = Dataset::load(&val_folder, &net.preprocess, false).unwrap();
    let (_, acc0) = train::evaluate(&net, &val_set, 64).unwrap();
    // The library's default recipe (AdamW, peak 1e-2, at least 300 steps on a cosine schedule), with
    // crops no smaller than a quarter of the image.
    let cfg = FinetuneConfig {
        scope: Scope::Head,
        augment: Some(Augment {
            scale: (0.25, 1.0),
            ..Augment::default()
        }),
        ..FinetuneConfig::default()
    };
    let history = train::finetune(&net, &train_set, Some(&val_set), &cfg, &mut |_| {}).unwrap();
    for e in &history {
        eprintln!(
            "epoch {}: train loss {:.4} acc {:.3} | held-out loss {:.4} acc {:.3} ({:.1}s)",
            e.epoch,
            e.train_loss,
            e.train_acc,
            e.val_loss.unwrap(),
            e.val_acc.unwrap(),
            e.seconds
        );
    }
    let (first, last) = (&history[0], history.last().unwrap());
    let acc = last.val_acc.unwrap();
    eprintln!("held-out accuracy: {acc0:.3} with the random head -> {acc:.3} after fine-tuning (chance 0.333)");
    assert!(
        last.train_loss < 0.7 * first.train_loss,
        "training loss did not go down: {history:?}"
    );
    assert!(
        last.val_loss.unwrap() < first.val_loss.unwrap(),
        "held-out loss did not go down"
    );
    assert!(
        acc >= 0.8,
        "held-out accuracy {acc} with the default recipe is below 0.8 (chance 1/3)"
    );

    // Head-only: nothing but fc.* moved, BatchNorm statistics included.
    let after = net.tensors();
    for (name, t) in &original {
        if !name.starts_with("fc.") {
            assert_eq!(
                common::max_abs_diff(t, &after[name]),
                0.0,
                "{name} changed in a head-only fine-tune"
            );
        }
    }

    // The saved file is self-describing: it reloads without an architecture name, with the new labels,
    // and the inference (BN-folded) model agrees with the trained one.
    let out = s._tmp.path().join("finetuned.safetensors");
    net.save(&out).unwrap();
    let back = TrainableResNet::from_checkpoint(&out, None, &device).unwrap();
    assert_eq!(back.labels, ["astronaut", "cat", "coffee"]);
    assert_eq!(back.config(), net.config());
    assert_eq!(back.preprocess, net.preprocess);
    let (_, acc_back) = train::evaluate(&back, &val_set, 64).unwrap();
    assert_eq!(acc_back, acc);
    let ck = weights::checkpoint::Checkpoint::open(&out).unwrap();
    let cfg: resnet::ResNetConfig = ck.metadata_json(weights::checkpoint::META_CONFIG).unwrap().unwrap();
    let vb =
        unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[&out], candle_core::DType::F32, &device).unwrap() };
    let folded = resnet::ResNet::new(&cfg, vb).unwrap();
    let (x, _) = val_set
        .batch(&[0, 1, 2], None, &mut rand::rngs::StdRng::seed_from_u64(0), &device)
        .unwrap();
    let err = common::max_abs_diff(&folded.forward(&x).unwrap(), &net.model.forward(&x).unwrap());
    assert!(err < 1e-3, "folded reload disagrees by {err}");
}

#[test]
fn full_finetune_trains_the_backbone_and_batchnorm_statistics() {
    let Some(s) = setup() else { return };
    let device = Device::Cpu;
    let mut net = TrainableResNet::from_checkpoint(&s.model, Some("resnet20"), &device).unwrap();
    let folder = ImageFolder::open(&s.train_dir).unwrap();
    net.replace_head(folder.classes().to_vec(), 0).unwrap();
    let original = net.tensors();
    let data = Dataset::load(&folder, &net.preprocess, true).unwrap();
    let cfg = FinetuneConfig {
        epochs: 1,
        lr: Some(1e-2),
        min_steps: 0,
        batch_size: 24,
        scope: Scope::All,
        optimizer: OptimizerKind::Sgd,
        ..FinetuneConfig::default()
    };
    let history = train::finetune(&net, &data, None, &cfg, &mut |_| {}).unwrap();
    assert!(history[0].train_loss.is_finite());
    let after = net.tensors();
    for name in [
        "conv1.weight",
        "layer3.2.conv2.weight",
        "bn1.running_mean",
        "layer2.0.bn1.running_var",
        "fc.weight",
    ] {
        assert!(
            common::max_abs_diff(&original[name], &after[name]) > 0.0,
            "{name} did not change"
        );
    }
}
