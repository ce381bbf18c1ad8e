//! `zoo embed`: one embedding per image (a ResNet's pooled features, a CLIP model's image embedding) and, for
//! CLIP models, per text, written as JSON lines as they are computed (memory flat in the number of inputs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clip::PretrainedClip;
use resnet::Pretrained;
use serde::Serialize;

use crate::batches::{describe, for_each_stack};
use crate::device::{parse_device, parse_dtype};
use crate::outln;

/// Texts above this size are refused unread.
const MAX_TEXTS_FILE: u64 = 64 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// What `zoo run` takes: a pretrained name (`resnet50`, `resnet50_clip`), a Hub repo, a checkpoint file,
    /// or an architecture name used with --weights.
    model: String,
    /// Image files, directories (searched recursively), or preprocessed .npy tensors.
    inputs: Vec<PathBuf>,
    /// Weights: a .safetensors/.pth file or a Hub repo id.
    #[arg(long)]
    weights: Option<String>,
    /// A text to embed with a CLIP model's text tower (repeatable).
    #[arg(long)]
    text: Vec<String>,
    /// Texts to embed, one per line (blank lines skipped).
    #[arg(long)]
    texts_file: Option<PathBuf>,
    /// Scale each embedding to unit length (CLIP compares embeddings by cosine).
    #[arg(long)]
    normalize: bool,
    /// Images per forward pass.
    #[arg(long, default_value = "8", value_parser = crate::args::batch_size)]
    batch_size: usize,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16 (ResNets; CLIP models run in f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// One output line for an image (f32 values print in their shortest form).
#[derive(Serialize)]
struct ImageLine<'a> {
    input: String,
    index: usize,
    embedding: &'a [f32],
}

/// One output line for a text.
#[derive(Serialize)]
struct TextLine<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

/// The model whose embeddings are written.
enum Embedder {
    /// Global-average-pooled features of the last stage (what the classifier reads: timm's pre-logits).
    ResNet(Box<Pretrained>),
    /// CLIP's image and text embeddings.
    Clip(Box<PretrainedClip>),
}

impl Embedder {
    fn images(&self, x: &Tensor) -> Result<Tensor> {
        let e = match self {
            Self::ResNet(p) => {
                let x = x.to_device(p.device())?.to_dtype(p.model.dtype())?;
                resnet::layers::pool::global_avg_pool(&p.model.forward_features(&x)?)?
            }
            Self::Clip(c) => c.model.encode_image(&x.to_device(c.model.device())?)?,
        };
        Ok(e.to_dtype(DType::F32)?)
    }

    fn preprocess(&self) -> &weights::PreprocessConfig {
        match self {
            Self::ResNet(p) => &p.preprocess,
            Self::Clip(c) => &c.preprocess,
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let texts = texts(&args)?;
    if args.inputs.is_empty() && texts.is_empty() {
        bail!("nothing to embed: give images (INPUTS), --text or --texts-file");
    }
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = if crate::classifier::is_clip(&args.model) || !texts.is_empty() {
        if !crate::classifier::is_clip(&args.model) && !args.model.contains('/') {
            bail!(
                "--text needs a CLIP model (`resnet50_clip`, ...); {} has no text tower",
                args.model
            );
        }
        Embedder::Clip(Box::new(crate::classifier::load_clip(
            &args.model,
            args.weights.as_deref(),
            &device,
            dtype,
        )?))
    } else {
        Embedder::ResNet(Box::new(crate::resolve::load_model(
            &args.model,
            args.weights.as_deref(),
            &device,
            dtype,
            false,
        )?))
    };
    let mut failed = false;
    if !args.inputs.is_empty() {
        failed = crate::batches::stream(
            crate::inputs::Inputs::new(&args.inputs, None),
            &crate::results::Selection::default(),
            model.preprocess(),
            args.batch_size,
            |items| {
                for_each_stack(items, |batch, x| {
                    let e = model
                        .images(x)
                        .with_context(|| format!("embedding {}", describe(batch)))?;
                    for (item, row) in batch.iter().zip(rows(&e, args.normalize, || describe(batch))?) {
                        let line = ImageLine {
                            input: item.input.display().to_string(),
                            index: item.index,
                            embedding: &row,
                        };
                        outln!("{}", serde_json::to_string(&line)?)?;
                    }
                    Ok(())
                })
            },
        )?;
    }
    if let Embedder::Clip(c) = &model {
        for chunk in texts.chunks(clip::model::TEXT_BATCH) {
            let e = c.model.encode_texts(&c.tokenizer, chunk)?;
            for (text, row) in chunk
                .iter()
                .zip(rows(&e, args.normalize, || format!("{:?}", chunk[0]))?)
            {
                let line = TextLine { text, embedding: &row };
                outln!("{}", serde_json::to_string(&line)?)?;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The rows of `e` (N, D), unit length with `normalize`; non-finite values are an error naming `what`.
fn rows(e: &Tensor, normalize: bool, what: impl Fn() -> String) -> Result<Vec<Vec<f32>>> {
    let e = e.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let e = if normalize { clip::model::normalize(&e)? } else { e };
    resnet::finite::ensure_finite(&e, || format!("the embeddings of {}", what()))?;
    Ok(e.to_vec2::<f32>()?)
}

/// `--text`s, then the lines of `--texts-file`.
fn texts(args: &Args) -> Result<Vec<String>> {
    let mut texts = args.text.clone();
    if let Some(path) = &args.texts_file {
        let len = std::fs::metadata(path)
            .with_context(|| format!("--texts-file {}", path.display()))?
            .len();
        if len > MAX_TEXTS_FILE {
            bail!("--texts-file {}: {len} bytes is too large", path.display());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("--texts-file {}", path.display()))?;
        texts.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    Ok(texts)
}
