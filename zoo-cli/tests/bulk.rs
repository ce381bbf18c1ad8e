//! Bulk runs: list files and globs, CSV and JSON lines, `--output` with `--resume` after `kill -9`, and
//! `--shard K/N` over concurrent processes, each against a single uninterrupted run of the same inputs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{assert_clean_error, cifar20, run, stderr, stdout, zoo};
use serde_json::Value;

/// `n` small distinct PNGs in `dir` (a gradient whose direction and colours depend on the index), and a list
/// file naming them.
fn images(dir: &Path, n: usize) -> (Vec<PathBuf>, PathBuf) {
    let mut paths = Vec::new();
    for i in 0..n {
        let img = image::RgbImage::from_fn(40, 36, |x, y| {
            let t = (i * 37) as u32;
            image::Rgb([
                ((x * 6 + t) % 256) as u8,
                ((y * 7 + 3 * t) % 256) as u8,
                ((x * y + 5 * t) % 256) as u8,
            ])
        });
        let p = dir.join(format!("img{i:04}.png"));
        img.save(&p).unwrap();
        paths.push(p);
    }
    let list = dir.join("list.txt");
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).unwrap();
    (paths, list)
}

/// Results by input: the top classes and their probabilities.
type Results = BTreeMap<String, Vec<(u64, f64)>>;

/// Parses JSON lines, asserting that no input appears twice.
fn parse(text: &str) -> Results {
    let mut out = Results::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("logits").is_none(), "logits only with --logits");
        let top = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["class"].as_u64().unwrap(), t["prob"].as_f64().unwrap()))
            .collect();
        let input = v["input"].as_str().unwrap().to_string();
        assert!(out.insert(input.clone(), top).is_none(), "{input} twice");
    }
    out
}

/// The same inputs with the same classes, probabilities within 1e-5 (batches may group differently), over the
/// ranks both show.
fn assert_same(a: &Results, b: &Results) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, ta) in a {
        let tb = &b[k];
        // Classes may swap places only in a near-tie; the probabilities by rank must agree.
        for ((_, pa), (_, pb)) in ta.iter().zip(tb) {
            assert!((pa - pb).abs() <= 1e-5, "{k}: {pa} vs {pb}");
        }
        assert_eq!(ta[0].0, tb[0].0, "{k}: top class");
    }
}

fn classify() -> std::process::Command {
    let mut c = zoo();
    c.args([
        "run",
        "resnet20",
        "--weights",
        &cifar20(),
        "--json",
        "--top",
        "3",
        "--device",
        "cpu",
    ]);
    c
}

#[test]
fn shards_and_resumed_runs_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, list) = images(dir.path(), 120);
    let full = dir.path().join("full.jsonl");
    let out = run(classify().arg("--files-from").arg(&list).arg("--output").arg(&full));
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = parse(&std::fs::read_to_string(&full).unwrap());
    assert_eq!(reference.len(), paths.len());
    // Results come in input order.
    let text = std::fs::read_to_string(&full).unwrap();
    let order: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["input"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(order, paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());

    // Four shards at once, the list reversed for two of them: the union is the whole, once.
    let reversed = dir.path().join("reversed.txt");
    let rev: String = paths.iter().rev().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&reversed, rev).unwrap();
    let children: Vec<_> = (0..4)
        .map(|k| {
            let out = dir.path().join(format!("shard{k}.jsonl"));
            let l = if k % 2 == 0 { &list } else { &reversed };
            let child = classify()
                .arg("--files-from")
                .arg(l)
                .args(["--shard", &format!("{k}/4"), "--batch-size", "3"])
                .arg("--output")
                .arg(&out)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let mut union = Results::new();
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success());
        let part = parse(&std::fs::read_to_string(&out).unwrap());
        assert!(
            !part.is_empty() && part.len() < paths.len(),
            "a shard takes a share: {}",
            part.len()
        );
        for (k, v) in part {
            assert!(union.insert(k.clone(), v).is_none(), "{k} in two shards");
        }
    }
    assert_same(&union, &reference);

    // A run killed with SIGKILL part-way (its last line possibly half-written), then resumed.
    let part = dir.path().join("part.jsonl");
    let mut child = classify()
        .arg("--files-from")
        .arg(&list)
        .args(["--batch-size", "2"])
        .arg("--output")
        .arg(&part)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&part).map_or(0, |t| t.lines().count()) < 10 && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "no output within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().unwrap();
    // Keep what a kill in the middle of a write leaves (the same state whether or not the kill came in
    // time): some whole lines, then half a line.
    let text = std::fs::read_to_string(&part).unwrap();
    let done_before = text.lines().count().min(10) - 1;
    let mut cut: String = text.lines().take(done_before).map(|l| format!("{l}\n")).collect();
    cut.push_str("{\"input\": \"half a li");
    std::fs::write(&part, cut).unwrap();
    let out = run(classify()
        .arg("--files-from")
        .arg(&list)
        .arg("--output")
        .arg(&part)
        .arg("--resume"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unfinished last line"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming: {done_before} inputs")),
        "{}",
        stderr(&out)
    );
    assert_same(&parse(&std::fs::read_to_string(&part).unwrap()), &reference);

    // Resuming a finished file adds nothing.
    let before = std::fs::read(&part).unwrap();
    let out = run(classify()
        .arg("--files-from")
        .arg(&list)
        .arg("--output")
        .arg(&part)
        .arg("--resume"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&part).unwrap(), before);
}

#[test]
fn csv_globs_and_list_files() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, list) = images(dir.path(), 6);
    let json = run(classify().arg("--files-from").arg(&list));
    assert!(json.status.success(), "{}", stderr(&json));
    let reference = parse(&stdout(&json));

    // A quoted glob, expanded by zoo, in name order.
    let pattern = dir.path().join("img*.png");
    let csv = run(zoo()
        .args(["run", "resnet20", "--weights", &cifar20(), "--csv", "--top", "3"])
        .arg(pattern.to_str().unwrap()));
    assert!(csv.status.success(), "{}", stderr(&csv));
    let text = stdout(&csv);
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "input,index,class_1,label_1,prob_1,class_2,label_2,prob_2,class_3,label_3,prob_3"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), paths.len());
    for (row, p) in rows.iter().zip(&paths) {
        assert_eq!(row[0], p.display().to_string());
        let want = &reference[row[0]];
        for (r, (class, prob)) in want.iter().enumerate() {
            assert_eq!(row[2 + 3 * r], class.to_string());
            assert!((row[4 + 3 * r].parse::<f64>().unwrap() - prob).abs() <= 1e-6);
        }
    }

    // Standard input as the list; blank lines skipped.
    let mut child = classify()
        .args(["--files-from", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}\n\n{}", paths[0].display(), paths[1].display()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(parse(&String::from_utf8_lossy(&out.stdout)).len(), 2);
}

#[test]
fn bulk_usage_errors_are_clean_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, list) = images(dir.path(), 2);
    let existing = dir.path().join("results.jsonl");
    std::fs::write(&existing, "keep me\n").unwrap();
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (
            vec!["--output".into(), existing.display().to_string()],
            &["exists", "--resume"],
        ),
        (
            vec!["--output".into(), existing.display().to_string(), "--resume".into()],
            &["line 1"],
        ),
        (vec!["--shard".into(), "4/4".into()], &["--shard"]),
        (vec!["--shard".into(), "auto".into()], &["JOB_COMPLETION_INDEX"]),
        (
            vec!["--files-from".into(), dir.path().join("none.txt").display().to_string()],
            &["none.txt"],
        ),
        (
            vec![dir.path().join("nothing*.png").display().to_string()],
            &["no file matches"],
        ),
    ];
    for (extra, mentions) in cases {
        let out = run(classify()
            .arg(&paths[0])
            .args(&extra)
            .env_remove("JOB_COMPLETION_INDEX"));
        assert_clean_error(&out, mentions);
    }
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");
    // --resume reads results back: not with the table.
    let out = run(zoo()
        .args(["run", "resnet20", "--weights", &cifar20(), "--resume", "--output"])
        .arg(dir.path().join("t.txt"))
        .arg("--files-from")
        .arg(&list));
    assert_clean_error(&out, &["--json or --csv"]);
}

/// The Slurm example as a job array would run it (each task's environment set as Slurm sets it), and
/// `--shard auto` under a Kubernetes Indexed Job's environment: the tasks' files together hold every input
/// once.
#[cfg(unix)]
#[test]
fn scheduler_shards_cover_the_inputs_once() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, list) = images(dir.path(), 40);
    // A self-describing ResNet-20, so that the script's `zoo run "$MODEL"` needs no --weights.
    let model = dir.path().join("r20.safetensors");
    let tensors = candle_core::safetensors::load(cifar20(), &candle_core::Device::Cpu).unwrap();
    let cfg = resnet::variants::resnet20();
    let pre = resnet::load::default_preprocess(&cfg);
    let meta = resnet::load::write_metadata("resnet20", &cfg, &pre, None);
    weights::checkpoint::save(&model, &tensors, &meta).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zoo")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = common::root().join("examples/sharding/slurm-array.sh");
    for task in 1..=3 {
        let out = run(std::process::Command::new("bash")
            .arg(&script)
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("ZOO_MODEL", &model)
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_COUNT", "3"));
        assert!(out.status.success(), "task {task}: {}", stderr(&out));
    }
    let mut union = Results::new();
    for task in 1..=3 {
        let text = std::fs::read_to_string(dir.path().join(format!("results/shard-{task}.jsonl"))).unwrap();
        for (k, v) in parse(&text) {
            assert!(union.insert(k.clone(), v).is_none(), "{k} in two tasks");
        }
    }
    assert_eq!(union.len(), paths.len());

    let mut k8s = Results::new();
    for index in 0..2 {
        let out = run(classify()
            .arg("--files-from")
            .arg(&list)
            .args(["--shard", "auto"])
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("ZOO_SHARDS", "2"));
        assert!(out.status.success(), "{}", stderr(&out));
        for (k, v) in parse(&stdout(&out)) {
            assert!(k8s.insert(k.clone(), v).is_none(), "{k} in two pods");
        }
    }
    assert_same(&k8s, &union);
}

/// `zoo embed --out F.npy` writes what the JSON lines hold, and `--index` ranks its rows by cosine as a naive
/// computation over the file does.
#[test]
fn embeddings_to_npy_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = images(dir.path(), 6);
    let embed = || {
        let mut c = zoo();
        c.args(["embed", "resnet20", "--weights", &cifar20(), "--device", "cpu"]);
        c
    };
    let lines = run(embed().args(&paths));
    assert!(lines.status.success(), "{}", stderr(&lines));
    let npy = dir.path().join("emb.npy");
    let out = run(embed().args(&paths).arg("--out").arg(&npy));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = weights::npy::read_npy(&npy, &candle_core::Device::Cpu).unwrap();
    assert_eq!(table.dims(), [6, 64]);
    let table = table.to_vec2::<f32>().unwrap();
    let list = std::fs::read_to_string(dir.path().join("emb.inputs.jsonl")).unwrap();
    for ((line, row), (name, p)) in stdout(&lines).lines().zip(&table).zip(list.lines().zip(&paths)) {
        let v: Value = serde_json::from_str(line).unwrap();
        let want: Vec<f32> = v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(&want, row);
        let name: Value = serde_json::from_str(name).unwrap();
        assert_eq!(name["input"], p.display().to_string());
    }

    let out = run(embed()
        .arg("--query")
        .arg(&paths[2])
        .arg("--index")
        .arg(&npy)
        .args(["--top", "3"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    };
    let mut naive: Vec<(usize, f32)> = (0..6).map(|i| (i, cos(&table[2], &table[i]))).collect();
    naive.sort_by(|a, b| b.1.total_cmp(&a.1));
    let matches = v["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 3);
    assert_eq!(matches[0]["input"], paths[2].display().to_string());
    for (m, (row, score)) in matches.iter().zip(&naive) {
        assert_eq!(m["row"], *row);
        assert!((m["score"].as_f64().unwrap() as f32 - score).abs() < 1e-5);
    }
    assert_clean_error(
        &run(embed().arg(&paths[0]).arg("--out").arg(dir.path().join("e.bin"))),
        &[".npy"],
    );
    assert!(!dir.path().join("e.bin").exists());
}
