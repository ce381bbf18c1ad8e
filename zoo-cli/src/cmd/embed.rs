//! `zoo embed`: one embedding per image (a ResNet's pooled features, a CLIP model's image embedding) and, for
//! CLIP models, per text, written as they are computed (memory flat in the number of inputs): JSON lines, or
//! with `--out F.npy` an (N, D) array and the list of what each row is. `--index F.npy` searches such an array
//! by cosine similarity.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clip::PretrainedClip;
use resnet::Pretrained;
use serde::Serialize;
use serde_json::json;

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
    /// Write the embeddings to F.npy, an (N, D) float32 array, and name its rows in F.inputs.jsonl (instead of
    /// JSON lines on standard output).
    #[arg(long, visible_alias = "output", value_name = "F.npy", conflicts_with = "index")]
    out: Option<PathBuf>,
    /// Search: for each input (and --text), the --top most similar rows of an index written by --out, by
    /// cosine similarity.
    #[arg(long, value_name = "F.npy")]
    index: Option<PathBuf>,
    /// With --index: a query image (repeatable; the INPUTS are queries too).
    #[arg(long, requires = "index")]
    query: Vec<PathBuf>,
    /// ResNets: pool the output of stage N (1 to the number of stages) instead of the last one.
    #[arg(long, value_parser = |s: &str| crate::args::in_range(s, 1, 64))]
    stage: Option<usize>,
    /// With --index: how many matches per query.
    #[arg(long, default_value = "5", value_parser = |s: &str| crate::args::in_range(s, 1, 1 << 20))]
    top: usize,
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
    /// Embeddings of a batch; `stage` (ResNets) pools that stage's output (1-based) instead of the last.
    fn images(&self, x: &Tensor, stage: Option<usize>) -> Result<Tensor> {
        let e = match self {
            Self::ResNet(p) => {
                let x = x.to_device(p.device())?.to_dtype(p.model.compute_dtype())?;
                let features = match stage {
                    None => p.model.forward_features(&x)?,
                    Some(s) => p
                        .model
                        .forward_intermediates(&x, &[s])?
                        .pop()
                        .ok_or_else(|| anyhow::anyhow!("stage {s} gave no output"))?,
                };
                resnet::layers::pool::global_avg_pool(&features)?
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
    let mut args = args;
    args.inputs.extend(std::mem::take(&mut args.query));
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
    if let Some(s) = args.stage {
        match &model {
            Embedder::ResNet(p) if s <= p.model.stages().len() => {}
            Embedder::ResNet(p) => bail!("--stage {s}: the model has {} stages", p.model.stages().len()),
            Embedder::Clip(_) => bail!("--stage is for ResNets; a CLIP model's embedding is its attention pool's"),
        }
    }
    if let Some(index) = &args.index {
        return query(&model, &args, &texts, index);
    }
    let failed = match &args.out {
        None => embed_all(&model, &args, &texts, &mut |what, row| {
            let line = match what {
                What::Image { input, index } => serde_json::to_string(&ImageLine {
                    input: input.display().to_string(),
                    index,
                    embedding: row,
                })?,
                What::Text(text) => serde_json::to_string(&TextLine { text, embedding: row })?,
            };
            outln!("{line}")
        })?,
        Some(out) => write_npy(&model, &args, &texts, out)?,
    };
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What an embedding is of.
enum What<'a> {
    /// An image, or item `index` of a .npy batch.
    Image { input: &'a Path, index: usize },
    /// A text.
    Text(&'a str),
}

impl What<'_> {
    /// Its line in the inputs list of `--out`.
    fn json(&self) -> serde_json::Value {
        match self {
            What::Image { input, index } => json!({"input": input.display().to_string(), "index": index}),
            What::Text(t) => json!({"text": t}),
        }
    }
}

/// Embeds the images (streamed, in batches) then the texts, handing each row to `emit` in order. Returns
/// whether an input could not be read (reported on stderr and skipped).
fn embed_all(
    model: &Embedder,
    args: &Args,
    texts: &[String],
    emit: &mut dyn FnMut(What, &[f32]) -> Result<()>,
) -> Result<bool> {
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
                        .images(x, args.stage)
                        .with_context(|| format!("embedding {}", describe(batch)))?;
                    for (item, row) in batch.iter().zip(rows(&e, args.normalize, || describe(batch))?) {
                        emit(
                            What::Image {
                                input: &item.input,
                                index: item.index,
                            },
                            &row,
                        )?;
                    }
                    Ok(())
                })
            },
        )?;
    }
    if let Embedder::Clip(c) = model {
        for chunk in texts.chunks(clip::model::TEXT_BATCH) {
            let e = c.model.encode_texts(&c.tokenizer, chunk)?;
            for (text, row) in chunk
                .iter()
                .zip(rows(&e, args.normalize, || format!("{:?}", chunk[0]))?)
            {
                emit(What::Text(text), &row)?;
            }
        }
    }
    Ok(failed)
}

/// `--out F.npy`: the embeddings as an (N, D) float32 array, streamed row by row (the header is written
/// last, in the room reserved for it), and `F.inputs.jsonl` naming each row. Both files appear whole or not
/// at all.
fn write_npy(model: &Embedder, args: &Args, texts: &[String], out: &Path) -> Result<bool> {
    if out.extension().is_none_or(|e| e != "npy") {
        bail!("--out {}: embeddings are written as .npy", out.display());
    }
    let list = inputs_list_path(out);
    let mut failed = false;
    let mut shape = (0usize, 0usize);
    weights::fsutil::write_atomic(&list, |names| -> Result<()> {
        weights::fsutil::write_atomic(out, |w| -> Result<()> {
            w.write_all(&weights::npy::header_f32(&[0, 0], NPY_HEADER))?;
            failed = embed_all(model, args, texts, &mut |what, row| {
                if shape.0 > 0 && row.len() != shape.1 {
                    bail!(
                        "embeddings of {} and {} values cannot share one array",
                        shape.1,
                        row.len()
                    );
                }
                shape = (shape.0 + 1, row.len());
                for v in row {
                    w.write_all(&v.to_le_bytes())?;
                }
                writeln!(names, "{}", what.json())?;
                Ok(())
            })?;
            if shape.0 == 0 {
                bail!("nothing was embedded: no --out written");
            }
            w.seek(SeekFrom::Start(0))?;
            w.write_all(&weights::npy::header_f32(&[shape.0, shape.1], NPY_HEADER))?;
            Ok(())
        })
    })?;
    crate::note!(
        "wrote {} ({} x {} float32) and {}",
        out.display(),
        shape.0,
        shape.1,
        list.display()
    );
    Ok(failed)
}

/// Bytes reserved for a streamed .npy header: room for any shape of two dimensions.
const NPY_HEADER: usize = 128;

/// `embeddings.npy` -> `embeddings.inputs.jsonl`.
fn inputs_list_path(npy: &Path) -> PathBuf {
    npy.with_extension("inputs.jsonl")
}

/// `--index F.npy`: for each query (images, then texts), the `--top` rows of F most similar by cosine, as a
/// JSON line `{"query": ..., "matches": [{"row", "input" | "text", "score"}]}`.
fn query(model: &Embedder, args: &Args, texts: &[String], index: &Path) -> Result<ExitCode> {
    let table = weights::npy::read_npy(index, &Device::Cpu)
        .with_context(|| format!("--index {}", index.display()))?
        .to_dtype(DType::F32)?;
    if table.rank() != 2 || table.dim(0)? == 0 {
        bail!(
            "--index {}: expected an (N, D) array of embeddings, got {:?}",
            index.display(),
            table.dims()
        );
    }
    let list = inputs_list_path(index);
    let names: Vec<serde_json::Value> = std::fs::read_to_string(&list)
        .with_context(|| format!("--index: the inputs list {}", list.display()))?
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--index: {} is not a list of inputs", list.display()))?;
    if names.len() != table.dim(0)? {
        bail!(
            "--index: {} names {} inputs but {} holds {} rows",
            list.display(),
            names.len(),
            index.display(),
            table.dim(0)?
        );
    }
    let table = clip::model::normalize(&table)?;
    let top = args.top.min(names.len());
    let failed = embed_all(model, args, texts, &mut |what, row| {
        if row.len() != table.dim(1)? {
            bail!(
                "the query's embedding has {} values, the index's {}",
                row.len(),
                table.dim(1)?
            );
        }
        let q = clip::model::normalize(&Tensor::new(row, &Device::Cpu)?.unsqueeze(0)?)?;
        let scores = table.matmul(&q.t()?)?.squeeze(1)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let matches: Vec<_> = order[..top]
            .iter()
            .map(|&i| {
                let mut m = names[i].clone();
                m["row"] = json!(i);
                m["score"] = json!(scores[i]);
                m
            })
            .collect();
        outln!("{}", json!({"query": what.json(), "matches": matches}))
    })?;
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
