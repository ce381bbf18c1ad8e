//! `zoo gradflow`: gradient flow and trainability of a plain network against its residual twin.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Device;
use resnet::gradflow::{self, Curve, GradReport, NetSpec, Task, TrainSpec, Wiring};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Weighted layers of the twin pair: 6n + 2 (8, 14, 20, 26, 32, 44, 56, 110).
    #[arg(long, default_value = "20", value_parser = |s: &str| crate::args::in_range(s, 8, 1202))]
    depth: usize,
    /// Channels of the first stage (the others have 2x and 4x).
    #[arg(long, default_value = "8", value_parser = |s: &str| crate::args::in_range(s, 1, 256))]
    width: usize,
    /// Images in the probe batch (and the training batches).
    #[arg(long, default_value = "32", value_parser = crate::args::batch_size)]
    batch_size: usize,
    /// Input side in pixels.
    #[arg(long, default_value = "16", value_parser = |s: &str| crate::args::in_range(s, 4, 512))]
    size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Turn BatchNorm into the identity (eval mode at its initial statistics): plain He-initialised convolutions.
    #[arg(long)]
    no_batchnorm: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Instead of one probe: train both twins at each of --depths for this many SGD steps and plot the
    /// loss curves.
    #[arg(long, value_name = "STEPS", value_parser = crate::args::count)]
    train: Option<usize>,
    /// Depths compared by --train.
    #[arg(long, value_delimiter = ',', default_value = "8,32", value_parser = |s: &str| crate::args::in_range(s, 8, 1202))]
    depths: Vec<usize>,
    /// PNG written by --train.
    #[arg(long, default_value = "gradflow.png")]
    plot: PathBuf,
    /// Photos for the --train task (crops of each photo are one class): a directory or files. Default:
    /// .data/ when it holds photos; else a synthetic task.
    #[arg(long, num_args = 1..)]
    photos: Vec<PathBuf>,
    /// SGD learning rate for --train (momentum 0.9, weight decay 1e-4).
    #[arg(long, default_value = "0.05", value_parser = crate::args::positive)]
    lr: f64,
}

const NUM_CLASSES: usize = 10;

pub fn run(args: Args) -> Result<ExitCode> {
    let device = Device::Cpu;
    match args.train {
        None => probe(&args, &device),
        Some(steps) => train(&args, steps, &device),
    }
}

fn probe(args: &Args, device: &Device) -> Result<ExitCode> {
    let spec = NetSpec {
        depth: args.depth,
        width: args.width,
        num_classes: NUM_CLASSES,
        batch_norm: !args.no_batchnorm,
        seed: args.seed,
    };
    let (x, y) = gradflow::gaussian_batch(args.batch_size, args.size, NUM_CLASSES, args.seed, device)?;
    let r = gradflow::measure(&spec, &x, &y)?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "gradient norms ||dL/dW|| at initialisation: depth {}, width {}, BatchNorm {}, batch of {} N(0,1) {}x{} inputs, {} classes",
        r.depth,
        r.width,
        if r.batch_norm { "on (train mode)" } else { "off (identity)" },
        args.batch_size,
        args.size,
        args.size,
        NUM_CLASSES
    )?;
    print_table(&r)?;
    crate::outln!("")?;
    print_chart(&r)?;
    crate::outln!("")?;
    let (p, q) = (r.first(Wiring::Plain), r.first(Wiring::Residual));
    crate::outln!(
        "first layer: plain {p:.3e}, residual {q:.3e} (plain/residual = {:.3}); last conv: plain {:.3e}, residual {:.3e}",
        p / q,
        r.last_conv(Wiring::Plain),
        r.last_conv(Wiring::Residual)
    )?;
    crate::outln!(
        "first/last-conv ratio: plain {:.3e}, residual {:.3e}  (< 1: gradients shrink towards the input; > 1: they grow)",
        p / r.last_conv(Wiring::Plain),
        q / r.last_conv(Wiring::Residual)
    )?;
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &GradReport) -> Result<()> {
    crate::outln!(
        "{:<18} {:>11} {:>11} {:>15}",
        "layer",
        "plain",
        "residual",
        "plain/residual"
    )?;
    for (p, q) in r.plain.iter().zip(&r.residual) {
        crate::outln!(
            "{:<18} {:>11.3e} {:>11.3e} {:>15.3}",
            p.layer,
            p.grad_norm,
            q.grad_norm,
            p.grad_norm / q.grad_norm
        )?;
    }
    crate::outln!("{:<18} {:>11.4} {:>11.4}", "loss", r.plain_loss, r.residual_loss)
}

/// One log-scale bar per layer and network: `P` plain, `R` residual.
fn print_chart(r: &GradReport) -> Result<()> {
    const COLS: usize = 48;
    let logs: Vec<f64> = r
        .plain
        .iter()
        .chain(&r.residual)
        .map(|l| (l.grad_norm as f64).max(1e-30).log10())
        .collect();
    let lo = logs.iter().cloned().fold(f64::INFINITY, f64::min).floor();
    let hi = logs
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil()
        .max(lo + 1.0);
    let bar = |v: f32| -> String {
        let n = (((v as f64).max(1e-30).log10() - lo) / (hi - lo) * COLS as f64)
            .round()
            .clamp(1.0, COLS as f64) as usize;
        "█".repeat(n)
    };
    let mut axis = String::new();
    let ticks = (hi - lo) as usize;
    for t in 0..=ticks {
        let col = t * COLS / ticks.max(1);
        while axis.chars().count() < col {
            axis.push(' ');
        }
        axis.push_str(&format!("1e{}", lo as i64 + t as i64));
    }
    crate::outln!("{:<18}   {axis}", "log10 ||dL/dW||")?;
    for (p, q) in r.plain.iter().zip(&r.residual) {
        crate::outln!("{:<18} P {}", p.layer, bar(p.grad_norm))?;
        crate::outln!("{:<18} R {}", "", bar(q.grad_norm))?;
    }
    Ok(())
}

/// The photos of `args.photos` (files, or images in directories), or those in `.data/`.
fn photo_paths(args: &Args) -> Vec<PathBuf> {
    let sources = if args.photos.is_empty() {
        vec![PathBuf::from(".data")]
    } else {
        args.photos.clone()
    };
    let mut out = Vec::new();
    for s in sources {
        if s.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&s)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.retain(|p| is_image(p));
            files.sort();
            out.extend(files);
        } else if s.is_file() {
            out.push(s);
        }
    }
    out
}

fn is_image(p: &Path) -> bool {
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    resnet::train::dataset::IMAGE_EXTENSIONS.contains(&ext.as_str())
}

fn train(args: &Args, steps: usize, device: &Device) -> Result<ExitCode> {
    if args.depths.is_empty() {
        bail!("--depths needs at least one depth");
    }
    let photos = photo_paths(args);
    let task: Task = if photos.len() >= 2 {
        gradflow::photo_task(&photos, args.size, 200, 50, args.seed, device)?
    } else {
        eprintln!("no photos found (run scripts/fetch_test_data.sh or pass --photos): using a synthetic task");
        gradflow::synthetic_task(4, 200, 50, args.size, args.seed, device)?
    };
    let ts = TrainSpec {
        steps,
        batch_size: args.batch_size,
        lr: args.lr,
        ..TrainSpec::default()
    };
    eprintln!("task: {}", task.description);
    let mut curves: Vec<Curve> = Vec::new();
    for &depth in &args.depths {
        let spec = NetSpec {
            depth,
            width: args.width,
            num_classes: task.classes.len(),
            batch_norm: !args.no_batchnorm,
            seed: args.seed,
        };
        spec.blocks_per_stage()?;
        for wiring in [Wiring::Plain, Wiring::Residual] {
            let bar = crate::progress::bar(steps as u64, &format!("{}-{depth}", wiring.name()));
            let start = std::time::Instant::now();
            let c = gradflow::train_one(&spec, wiring, &task, &ts, &mut |_| bar.inc(1))?;
            bar.finish_and_clear();
            eprintln!(
                "{:>8}-{depth:<3} final training loss {:.4} (mean of last 3 points {:.4}), held-out accuracy {:.3}  ({:.1}s)",
                c.wiring,
                c.final_train_loss,
                c.tail_loss(3),
                c.test_acc,
                start.elapsed().as_secs_f32()
            );
            curves.push(c);
        }
    }
    let font = plot(&args.plot, &curves, &task, args)?;
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"task": task.description, "steps": steps, "curves": curves}))?
        )?;
    } else {
        crate::outln!("{:<14} {:>12} {:>10}", "network", "train loss", "held-out")?;
        for c in &curves {
            crate::outln!(
                "{:<14} {:>12.4} {:>10.3}",
                format!("{}-{}", c.wiring, c.depth),
                c.tail_loss(3),
                c.test_acc
            )?;
        }
        if let (Some(&d0), Some(&d1)) = (args.depths.iter().min(), args.depths.iter().max()) {
            let get = |w: &str, d: usize| {
                curves
                    .iter()
                    .find(|c| c.wiring == w && c.depth == d)
                    .map(|c| c.tail_loss(3))
            };
            if let (Some(p0), Some(p1), Some(r1)) = (get("plain", d0), get("plain", d1), get("residual", d1)) {
                let verdict = if p1 > p0 && p1 > r1 {
                    "the degradation problem shows"
                } else {
                    "no degradation at this budget"
                };
                crate::outln!(
                    "deeper plain-{d1} ends at training loss {p1:.4} vs plain-{d0} {p0:.4} and residual-{d1} {r1:.4}: {verdict}"
                )?;
            }
        }
    }
    eprintln!(
        "wrote {}{}",
        args.plot.display(),
        if font {
            ""
        } else {
            " (no system font found: curves without text)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Loss curves to a PNG: plain in reds, residual in blues, deeper networks darker and thicker.
/// Returns whether text could be drawn.
fn plot(path: &Path, curves: &[Curve], task: &Task, args: &Args) -> Result<bool> {
    use plotters::prelude::*;
    let font = crate::plot::load_font();
    let (w, h) = (960u32, 600u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let max_step = curves
            .iter()
            .flat_map(|c| c.points.last().map(|p| p.0))
            .max()
            .unwrap_or(1) as f32;
        let max_loss = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0f32, f32::max)
            .min(2.5 * (task.classes.len() as f32).ln().max(1.0));
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(20)
            .x_label_area_size(if font { 40 } else { 5 })
            .y_label_area_size(if font { 60 } else { 5 });
        if font {
            builder.caption(
                format!(
                    "Training loss: plain vs residual (width {}, BN {}, {} classes)",
                    args.width,
                    if args.no_batchnorm { "off" } else { "on" },
                    task.classes.len()
                ),
                ("sans-serif", 22),
            );
        }
        let mut chart = builder
            .build_cartesian_2d(0f32..max_step, 0f32..max_loss * 1.05)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut mesh = chart.configure_mesh();
        if font {
            mesh.x_desc("SGD step").y_desc("training loss (cross-entropy)");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
        let depths: Vec<usize> = {
            let mut d: Vec<usize> = curves.iter().map(|c| c.depth).collect();
            d.sort();
            d.dedup();
            d
        };
        for c in curves {
            let rank = depths.iter().position(|&d| d == c.depth).unwrap_or(0);
            let deep = rank + 1 == depths.len() && depths.len() > 1;
            let color = match (c.wiring, deep) {
                ("plain", true) => RGBColor(200, 20, 20),
                ("plain", false) => RGBColor(245, 150, 150),
                (_, true) => RGBColor(20, 40, 200),
                (_, false) => RGBColor(140, 170, 245),
            };
            let style = color.stroke_width(if deep { 3 } else { 2 });
            let pts: Vec<(f32, f32)> = c
                .points
                .iter()
                .map(|&(s, l)| {
                    (
                        s as f32,
                        if l.is_finite() {
                            l.min(max_loss * 1.05)
                        } else {
                            max_loss
                        },
                    )
                })
                .collect();
            let series = chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if font {
                series
                    .label(format!("{}-{}", c.wiring, c.depth))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        if font {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    crate::plot::save_png(path, w, h, buf)?;
    Ok(font)
}
