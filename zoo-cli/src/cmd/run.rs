//! `zoo run`: classify images or preprocessed tensors, streaming: inputs are found, decoded (in parallel,
//! a bounded number ahead of the model), classified and written batch by batch, in input order, so memory
//! stays flat in the number of inputs. `--output F --resume` continues an interrupted run; `--shard K/N`
//! takes a deterministic share of the inputs, so N processes split a job without talking to each other.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::DType;

use crate::batches::{describe, for_each_stack, Item};
use crate::classifier::{Classifier, ZeroShotArgs};
use crate::device::{parse_device, parse_dtype};
use crate::inputs::{Inputs, ListFile};
use crate::results::{Format, Row, Selection, Shard, Sink};

#[derive(clap::Args)]
pub struct Args {
    /// A pretrained name (`resnet50`, `resnet50.tv2_in1k`, `resnet50_clip`), a Hub repo
    /// (`timm/resnet50.a1_in1k`), a self-describing .safetensors file (or an OpenCLIP one with its
    /// open_clip_config.json beside it), or an architecture name used with --weights.
    model: String,
    /// Image files (JPEG, PNG, WebP, BMP, GIF, TIFF), directories (searched recursively), glob patterns
    /// ('photos/*.jpg'), or .npy float32 tensors of shape (C,H,W) or (N,C,H,W) that are already preprocessed.
    #[arg(required_unless_present = "files_from")]
    inputs: Vec<PathBuf>,
    /// Read more inputs from FILE, one per line (`-` for standard input), after the ones given as arguments.
    #[arg(long, value_name = "FILE")]
    files_from: Option<PathBuf>,
    /// Weights: a .safetensors/.pth file or a Hub repo id.
    #[arg(long)]
    weights: Option<String>,
    /// How many classes to show per input (at most the model's number of classes).
    #[arg(long, default_value = "5", value_parser = |s: &str| crate::args::in_range(s, 1, 1 << 20))]
    top: usize,
    /// Images per forward pass.
    #[arg(long, default_value = "8", value_parser = crate::args::batch_size)]
    batch_size: usize,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// One JSON object per line and per input: input, index (in a .npy batch) and top classes.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// With --json: every raw logit too (1000 numbers per ImageNet input).
    #[arg(long, requires = "json")]
    logits: bool,
    /// One CSV row per input: input, index, then class, label and probability for each rank.
    #[arg(long)]
    csv: bool,
    /// Write the results to FILE (as they come, flushed after each batch) instead of standard output. An
    /// existing FILE is never overwritten: see --resume.
    #[arg(long, visible_alias = "out", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Continue the results in --output FILE: inputs already there are skipped, an unfinished last line (a
    /// killed run) is cut off, new results are appended. Needs --json or --csv.
    #[arg(long, requires = "output")]
    resume: bool,
    /// Take only shard K of N (K from 0): a deterministic share of the inputs by their path, whatever order
    /// they are listed in. `auto` reads a Kubernetes Indexed Job's or a Slurm job array's index (see
    /// examples/sharding/).
    #[arg(long, value_name = "K/N|auto")]
    shard: Option<String>,
    #[command(flatten)]
    zero_shot: ZeroShotArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json { logits: args.logits },
        (_, true) => Format::Csv,
        _ => Format::Table,
    };
    let mut sink = match &args.output {
        Some(path) => Sink::file(path, format, args.resume)?,
        None => Sink::stdout(format),
    };
    let selection = Selection {
        shard: args.shard.as_deref().map(Shard::parse).transpose()?,
        done: sink.take_done(),
    };
    if selection.resumed() > 0 {
        crate::note!("resuming: {} inputs already done", selection.resumed());
    }
    let list = args.files_from.as_deref().map(ListFile::open).transpose()?;
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = crate::classifier::load(&args.model, args.weights.as_deref(), &args.zero_shot, &device, dtype)?;
    let progress = crate::progress::spinner("classifying");
    let inputs = Inputs::new(&args.inputs, list);
    let failed = crate::batches::stream(inputs, &selection, model.preprocess(), args.batch_size, |batch| {
        classify(&model, batch, args.top, &mut sink)?;
        sink.flush()?;
        progress.inc(batch.len() as u64);
        Ok(())
    })?;
    sink.flush()?;
    progress.finish_and_clear();
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Classifies a run of items, in batches of equal shape, and writes each result.
fn classify(model: &Classifier, items: &[Item], top: usize, sink: &mut Sink) -> Result<()> {
    for_each_stack(items, |batch, x| {
        let logits = model
            .logits(x)
            .with_context(|| format!("classifying {}", describe(batch)))?;
        let probs = candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?.to_vec2::<f32>()?;
        let logits = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for ((item, p), l) in batch.iter().zip(&probs).zip(&logits) {
            let ranked = model.top_k(p, top);
            let row = Row {
                input: &item.input,
                index: item.index,
                npy: item.npy,
                top: &ranked,
                logits: l,
            };
            sink.write(&row, top.min(p.len()))?;
        }
        Ok(())
    })
}
