//! `zoo eval`: accuracy of a model on a labelled set: an ImageFolder directory (one subdirectory per class,
//! named as the model's class or by its index) or a CSV of `path,label`. Top-1 and top-5 as timm's
//! `validate.py` counts them (a prediction is right at k when the true class is among the k largest logits),
//! per-class accuracy, a confusion matrix over the set's classes (and `other` for predictions outside them),
//! throughput. A CLIP model is evaluated zero-shot, its labels being the set's class names.
//!
//! Images are streamed class by class (memory flat in the number of images); a CSV's rows are read first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, D};
use clip::ZeroShotClassifier;
use serde_json::json;

use crate::batches::{for_each_stack, Item};
use crate::classifier::{Classifier, ZeroShotArgs};
use crate::device::{parse_device, parse_dtype};
use crate::inputs::Inputs;
use crate::outln;
use crate::results::Selection;

/// CSV files above this size are refused unread.
const MAX_CSV: u64 = 256 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// What `zoo run` takes: a pretrained name, a Hub repo, a checkpoint, or an architecture with --weights.
    model: String,
    /// The labelled set: a directory with one subdirectory per class (searched recursively), or a CSV file
    /// of `path,label` rows (paths relative to the CSV's directory; a `path,label` header is optional).
    data: PathBuf,
    /// Weights: a .safetensors/.pth file or a Hub repo id.
    #[arg(long)]
    weights: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value = "8", value_parser = crate::args::batch_size)]
    batch_size: usize,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON object (the summary, per-class results and the confusion matrix).
    #[arg(long)]
    json: bool,
    /// Also draw the confusion matrix (rows normalized) as a PNG heat map.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// CLIP models: a prompt template with `{}` for the class name (repeatable).
    #[arg(long, conflicts_with = "templates")]
    template: Vec<String>,
    /// CLIP models: `openai-imagenet` or `simple-imagenet` prompt templates.
    #[arg(long, value_parser = ["openai-imagenet", "simple-imagenet"])]
    templates: Option<String>,
}

/// The labelled set: its class names (in order) and where the images are.
struct Dataset {
    classes: Vec<String>,
    source: Source,
}

enum Source {
    /// One directory per class, walked lazily.
    Folders(Vec<PathBuf>),
    /// `(path, class)` rows of a CSV.
    Rows(Vec<(PathBuf, usize)>),
}

/// Counts gathered while streaming.
struct Tally {
    /// `k` of top-k (5, or the number of classes when fewer).
    k: usize,
    /// Per set class: images, right at top-1, right at top-k.
    per_class: Vec<[usize; 3]>,
    /// `[true][predicted]`, the last column counting predictions outside the set's classes.
    confusion: Vec<Vec<usize>>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let data = read_dataset(&args.data)?;
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let (model, targets) = load(&args, &data.classes, &device, dtype)?;
    let num_outputs = match &model {
        Classifier::Classes(p) => p.model.config().num_classes,
        Classifier::ZeroShot { classifier, .. } => classifier.labels().len(),
    };
    let n = data.classes.len();
    let mut tally = Tally {
        k: num_outputs.min(5),
        per_class: vec![[0; 3]; n],
        confusion: vec![vec![0; n + 1]; n],
    };
    // Model index -> set class, for the confusion matrix.
    let mut column = vec![n; num_outputs];
    for (c, &t) in targets.iter().enumerate() {
        column[t] = c;
    }
    let started = Instant::now();
    let mut failed = false;
    let selection = Selection::default();
    let mut score = |items: &[Item], truth: &dyn Fn(&Item) -> usize| -> Result<()> {
        for_each_stack(items, |batch, x| {
            let logits = model.logits(x)?.to_dtype(DType::F32)?;
            let ranked = logits.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, tally.k)?;
            for (item, top) in batch.iter().zip(ranked.to_vec2::<u32>()?) {
                let c = truth(item);
                let t = targets[c] as u32;
                let counts = &mut tally.per_class[c];
                counts[0] += 1;
                counts[1] += usize::from(top[0] == t);
                counts[2] += usize::from(top.contains(&t));
                tally.confusion[c][column[top[0] as usize]] += 1;
            }
            Ok(())
        })
    };
    match &data.source {
        Source::Folders(dirs) => {
            for (c, dir) in dirs.iter().enumerate() {
                let inputs = Inputs::new(std::slice::from_ref(dir), None);
                failed |= crate::batches::stream(inputs, &selection, model.preprocess(), args.batch_size, |items| {
                    score(items, &|_| c)
                })?;
            }
        }
        Source::Rows(rows) => {
            let paths: Vec<PathBuf> = rows.iter().map(|r| r.0.clone()).collect();
            let class_of: std::collections::HashMap<&Path, usize> =
                rows.iter().map(|(p, c)| (p.as_path(), *c)).collect();
            failed |= crate::batches::stream(
                Inputs::new(&paths, None),
                &selection,
                model.preprocess(),
                args.batch_size,
                |items| score(items, &|i| class_of[i.input.as_path()]),
            )?;
        }
    }
    let elapsed = started.elapsed();
    let images: usize = tally.per_class.iter().map(|c| c[0]).sum();
    if images == 0 {
        bail!("{}: no image could be evaluated", args.data.display());
    }
    let per_s = images as f64 / elapsed.as_secs_f64();
    if args.json {
        outln!("{}", summary_json(&args, &data.classes, &targets, &tally, per_s))?;
    } else {
        print_summary(&args, &data.classes, &tally, per_s)?;
    }
    if let Some(path) = &args.plot {
        plot_confusion(path, &data.classes, &tally)?;
        crate::note!("wrote {}", path.display());
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The model, and for each class of the set the model output it is (for CLIP: the class itself).
fn load(
    args: &Args,
    classes: &[String],
    device: &candle_core::Device,
    dtype: DType,
) -> Result<(Classifier, Vec<usize>)> {
    if crate::classifier::is_clip(&args.model) {
        let zero_shot = ZeroShotArgs {
            template: args.template.clone(),
            templates: args.templates.clone(),
            ..ZeroShotArgs::default()
        };
        let clip = crate::classifier::load_clip(&args.model, args.weights.as_deref(), device, dtype)?;
        let names: Vec<String> = classes.iter().map(|c| c.replace('_', " ")).collect();
        let classifier = ZeroShotClassifier::new(&clip.model, &clip.tokenizer, &names, &zero_shot.templates()?)?;
        let model = Classifier::ZeroShot {
            clip: Box::new(clip),
            classifier,
        };
        return Ok((model, (0..classes.len()).collect()));
    }
    if !args.template.is_empty() || args.templates.is_some() {
        bail!("--template and --templates are for CLIP models");
    }
    let p = crate::resolve::load_model(&args.model, args.weights.as_deref(), device, dtype, false)?;
    let targets = match_classes(classes, p.labels.as_deref(), p.model.config().num_classes)?;
    Ok((Classifier::Classes(Box::new(p)), targets))
}

/// A class name as compared: lower case, `_` as a space, spaces collapsed.
fn normalize(name: &str) -> String {
    name.replace('_', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The model output of each class of the set: its label (compared by [`normalize`]), else one synonym of a
/// label (`tabby` for "tabby, tabby cat") that no other label shares, else its index. Every class must
/// match, and no two the same output.
fn match_classes(classes: &[String], labels: Option<&[String]>, num_classes: usize) -> Result<Vec<usize>> {
    let mut by_name: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut synonyms: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    for (i, l) in labels.unwrap_or(&[]).iter().enumerate() {
        by_name.entry(normalize(l)).or_insert(i);
        // ImageNet's names list synonyms: "tabby, tabby cat".
        for s in l.split(',').map(normalize).filter(|s| !s.is_empty()) {
            synonyms.entry(s).or_default().push(i);
        }
    }
    let synonym = |c: &str| match synonyms.get(&normalize(c)).map(Vec::as_slice) {
        Some([one]) => Some(*one),
        _ => None,
    };
    let mut targets = Vec::with_capacity(classes.len());
    let mut unmatched = Vec::new();
    for c in classes {
        let found = by_name
            .get(&normalize(c))
            .copied()
            .or_else(|| synonym(c))
            .or_else(|| c.trim().parse::<usize>().ok().filter(|&i| i < num_classes));
        match found {
            Some(i) => targets.push(i),
            None => unmatched.push(c.clone()),
        }
    }
    if !unmatched.is_empty() {
        let hints: Vec<String> = unmatched
            .iter()
            .take(10)
            .map(|c| {
                let close = resnet::variants::suggest(
                    &normalize(c),
                    labels.unwrap_or(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
                );
                match close.first() {
                    Some(s) => format!("`{c}` (did you mean `{s}`?)"),
                    None => format!("`{c}`"),
                }
            })
            .collect();
        bail!(
            "{} of the set's classes match none of the model's {num_classes} classes{}: {}. Name each class \
             directory (or CSV label) as the model's class or by its index 0..{}",
            unmatched.len(),
            if labels.is_none() {
                " (the model has no class names)"
            } else {
                ""
            },
            hints.join(", "),
            num_classes.saturating_sub(1)
        );
    }
    let mut seen = std::collections::HashMap::new();
    for (c, &t) in classes.iter().zip(&targets) {
        if let Some(other) = seen.insert(t, c) {
            bail!("the set's classes `{other}` and `{c}` are both the model's class {t}");
        }
    }
    Ok(targets)
}

/// Reads the class directories of an ImageFolder, or the rows of a CSV.
fn read_dataset(path: &Path) -> Result<Dataset> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.is_dir() {
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("{}", path.display()))? {
            let entry = entry.with_context(|| format!("{}", path.display()))?;
            if entry.file_type()?.is_dir() || std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                dirs.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
            }
        }
        if dirs.is_empty() {
            bail!(
                "{}: no class directories (the layout is DIR/<class>/<image>, or give a CSV of path,label)",
                path.display()
            );
        }
        dirs.sort();
        let (classes, dirs) = dirs.into_iter().unzip();
        return Ok(Dataset {
            classes,
            source: Source::Folders(dirs),
        });
    }
    if meta.len() > MAX_CSV {
        bail!(
            "{}: {} bytes is too large for a CSV of labels",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut classes: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (i == 0 && line.trim() == "path,label") {
            continue;
        }
        let (p, label) = line
            .rsplit_once(',')
            .with_context(|| format!("{} line {}: expected `path,label`", path.display(), i + 1))?;
        let label = label.trim().to_string();
        let c = match classes.iter().position(|c| *c == label) {
            Some(c) => c,
            None => {
                classes.push(label);
                classes.len() - 1
            }
        };
        rows.push((base.join(p.trim()), c));
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(Dataset {
        classes,
        source: Source::Rows(rows),
    })
}

fn pct(right: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * right as f64 / total as f64
    }
}

fn totals(t: &Tally) -> (usize, usize, usize) {
    t.per_class
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c[0], a.1 + c[1], a.2 + c[2]))
}

fn summary_json(args: &Args, classes: &[String], targets: &[usize], t: &Tally, per_s: f64) -> serde_json::Value {
    let (n, top1, topk) = totals(t);
    let per_class: Vec<_> = classes
        .iter()
        .zip(targets)
        .zip(&t.per_class)
        .map(|((name, target), c)| {
            json!({"class": name, "model_class": target, "images": c[0], "top1": pct(c[1], c[0]),
                   "top5": pct(c[2], c[0])})
        })
        .collect();
    let mut columns: Vec<String> = classes.to_vec();
    columns.push("other".into());
    json!({"model": args.model, "data": args.data.display().to_string(), "images": n, "k": t.k,
           "top1": pct(top1, n), "top5": pct(topk, n), "correct1": top1, "correct5": topk,
           "images_per_s": per_s, "classes": per_class, "confusion": {"columns": columns, "rows": t.confusion}})
}

fn print_summary(args: &Args, classes: &[String], t: &Tally, per_s: f64) -> Result<()> {
    let (n, top1, topk) = totals(t);
    outln!(
        "{} on {}: {n} images, {} classes, {per_s:.1} images/s",
        args.model,
        args.data.display(),
        classes.len()
    )?;
    outln!(
        "top-1 {:.2}% ({top1}/{n})   top-{} {:.2}% ({topk}/{n})",
        pct(top1, n),
        t.k,
        pct(topk, n)
    )?;
    let width = classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 28);
    outln!(
        "\n{:<width$}  {:>6}  {:>7}  {:>7}",
        "class",
        "images",
        "top-1",
        format!("top-{}", t.k)
    )?;
    for (name, c) in classes.iter().zip(&t.per_class) {
        outln!(
            "{:<width$}  {:>6}  {:>6.1}%  {:>6.1}%",
            clip_name(name, width),
            c[0],
            pct(c[1], c[0]),
            pct(c[2], c[0])
        )?;
    }
    outln!("\nconfusion (rows: true class; columns: top-1 prediction, `other` outside the set's classes)")?;
    let cols: Vec<String> = (0..classes.len())
        .map(|i| format!("{i}"))
        .chain(["other".to_string()])
        .collect();
    let width = width + 1 + classes.len().to_string().len();
    outln!(
        "{:<width$}  {}",
        "",
        cols.iter().map(|c| format!("{c:>5}")).collect::<Vec<_>>().join(" ")
    )?;
    for (i, (name, row)) in classes.iter().zip(&t.confusion).enumerate() {
        outln!(
            "{:<width$}  {}",
            clip_name(&format!("{i} {name}"), width),
            row.iter().map(|v| format!("{v:>5}")).collect::<Vec<_>>().join(" ")
        )?;
    }
    Ok(())
}

/// `name` cut to `width` characters.
fn clip_name(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_string()
    } else {
        name.chars().take(width - 1).chain(['…']).collect()
    }
}

/// The confusion matrix as a heat map: each row normalized, white (0) to dark blue (1).
fn plot_confusion(path: &Path, classes: &[String], t: &Tally) -> Result<()> {
    use plotters::prelude::*;
    let font = crate::plot::load_font();
    let (rows, cols) = (classes.len(), classes.len() + 1);
    let cell = (600 / cols.max(rows)).clamp(8, 60) as i32;
    let margin = if font { 180 } else { 10 };
    let (w, h) = (
        (margin + cell * cols as i32 + 10) as u32,
        (margin.min(60) + cell * rows as i32 + 10) as u32,
    );
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let top = margin.min(60);
        for (r, row) in t.confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (c, &v) in row.iter().enumerate() {
                let f = if total == 0 { 0.0 } else { v as f64 / total as f64 };
                let shade = |full: f64| (255.0 - f * (255.0 - full)) as u8;
                let color = RGBColor(shade(20.0), shade(50.0), shade(140.0));
                let (x, y) = (margin + c as i32 * cell, top + r as i32 * cell);
                root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], color.filled()))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            if font {
                let label = clip_name(&classes[r], 22);
                root.draw(&Text::new(
                    label,
                    (5, top + r as i32 * cell + cell / 3),
                    ("sans-serif", 14),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        if font {
            root.draw(&Text::new(
                "true class (rows) vs top-1 prediction (columns; last: other)",
                (5, 10),
                ("sans-serif", 15),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    crate::plot::save_png(path, w, h, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_by_name_or_index() {
        let labels: Vec<String> = [
            "tench",
            "goldfish",
            "great white shark",
            "tabby, tabby cat",
            "cat, tabby",
        ]
        .map(String::from)
        .to_vec();
        let classes: Vec<String> = ["Great_White_Shark", "0", "goldfish", "tabby cat"]
            .map(String::from)
            .to_vec();
        assert_eq!(match_classes(&classes, Some(&labels), 5).unwrap(), [2, 0, 1, 3]);
        // `tabby` is a synonym of two labels: no match.
        assert!(match_classes(&["tabby".to_string()], Some(&labels), 5).is_err());
        let err = match_classes(&["goldfsh".to_string()], Some(&labels), 3).unwrap_err();
        assert!(err.to_string().contains("did you mean `goldfish`"), "{err}");
        let err = match_classes(&["tench".into(), "0".into()], Some(&labels), 3).unwrap_err();
        assert!(err.to_string().contains("both the model's class 0"), "{err}");
        assert!(match_classes(&["7".into()], None, 3).is_err());
    }
}
