//! The streaming input loop of `zoo run` and `zoo embed`: inputs are found, decoded and preprocessed (in
//! parallel, a bounded number ahead of the model) and handed over batch by batch, so memory stays flat in the
//! number of inputs.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;
use weights::PreprocessConfig;

use crate::inputs::{InputEvent, Inputs};
use crate::results::Selection;

/// One input to the model: an image, or one item of a .npy batch.
pub struct Item {
    /// The file it came from.
    pub input: PathBuf,
    /// Its place in a .npy batch (0 for an image).
    pub index: usize,
    /// Whether it came from a .npy file.
    pub npy: bool,
    /// Preprocessed, (C, H, W).
    pub tensor: Tensor,
}

/// Walks `inputs`, takes those `selection` takes (others are never opened), preprocesses each with
/// `preprocess`, and calls `on_batch` with runs of up to `batch_size` items. Inputs that cannot be read are
/// reported on stderr and skipped; the result says whether any was. An error of `on_batch` ends the walk.
pub fn stream(
    mut inputs: Inputs,
    selection: &Selection,
    preprocess: &PreprocessConfig,
    batch_size: usize,
    mut on_batch: impl FnMut(&[Item]) -> Result<()>,
) -> Result<bool> {
    let mut failed = false;
    let mut pending: Vec<Item> = Vec::new();
    // Decode a few batches ahead, in parallel, and never more: memory is bounded by this window.
    let window = batch_size * 4;
    loop {
        let mut paths = Vec::with_capacity(window);
        while paths.len() < window {
            match inputs.next() {
                Some(InputEvent::File(p)) => {
                    let npy = is_npy(&p);
                    if selection.takes_file(&p) && (npy || selection.takes_item(&p, 0)) {
                        paths.push(p);
                    }
                }
                Some(InputEvent::Problem(msg)) => {
                    eprintln!("error: {msg}");
                    failed = true;
                }
                Some(InputEvent::Note(msg)) => eprintln!("warning: {msg}"),
                None => break,
            }
        }
        if paths.is_empty() {
            break;
        }
        let decoded: Vec<_> = paths.par_iter().map(|p| read_input(p, preprocess)).collect();
        for (path, result) in paths.iter().zip(decoded) {
            match result {
                Ok(items) => {
                    for item in items.into_iter().filter(|i| selection.takes_item(&i.input, i.index)) {
                        pending.push(item);
                        if pending.len() == batch_size {
                            on_batch(&std::mem::take(&mut pending))?;
                        }
                    }
                }
                Err(e) => {
                    report_bad_input(path, &e);
                    failed = true;
                }
            }
        }
    }
    if !pending.is_empty() {
        on_batch(&pending)?;
    }
    Ok(failed)
}

/// Splits `items` into runs of equal shape (a .npy batch may differ from the images) and calls `f` with each
/// run stacked into one (N, C, H, W) batch.
pub fn for_each_stack(items: &[Item], mut f: impl FnMut(&[Item], &Tensor) -> Result<()>) -> Result<()> {
    let mut start = 0;
    while start < items.len() {
        let shape = items[start].tensor.dims();
        let end = start + items[start..].iter().take_while(|i| i.tensor.dims() == shape).count();
        let run = &items[start..end];
        let tensors: Vec<Tensor> = run.iter().map(|i| i.tensor.clone()).collect();
        let x = Tensor::stack(&tensors, 0).map_err(|e| anyhow::anyhow!("stacking a batch: {e}"))?;
        f(run, &x)?;
        start = end;
    }
    Ok(())
}

/// Prints why an input failed, naming it once (decoder errors already carry the path).
fn report_bad_input(path: &Path, e: &anyhow::Error) {
    let msg = format!("{e:#}");
    let shown = path.display().to_string();
    if msg.contains(&shown) {
        eprintln!("error: {msg}");
    } else {
        eprintln!("error: {shown}: {msg}");
    }
}

/// Decodes and preprocesses an image, or reads a .npy tensor as it is (each item checked to be finite).
fn read_input(path: &Path, preprocess: &PreprocessConfig) -> Result<Vec<Item>> {
    if !is_npy(path) {
        let t = resnet::data::preprocess_file(path, preprocess, &candle_core::Device::Cpu)?;
        return Ok(vec![Item {
            input: path.to_path_buf(),
            index: 0,
            npy: false,
            tensor: t,
        }]);
    }
    let t = crate::npy::read_f32(path)?;
    let t = match t.rank() {
        3 => t.unsqueeze(0)?,
        4 => t,
        r => anyhow::bail!("a .npy input must have shape (C,H,W) or (N,C,H,W), this one has {r} dimensions"),
    };
    let expected = preprocess.input_size;
    let n = t.dim(0)?;
    (0..n)
        .map(|i| {
            let tensor = t.get(i)?;
            if tensor.dims()[0] != expected[0] {
                anyhow::bail!(
                    "item {i} has {} channels, the model takes {}",
                    tensor.dims()[0],
                    expected[0]
                );
            }
            resnet::finite::ensure_finite(&tensor, || format!("item {i}"))?;
            Ok(Item {
                input: path.to_path_buf(),
                index: i,
                npy: true,
                tensor,
            })
        })
        .collect()
}

/// Whether `path` names a .npy tensor file (anything else is read as an image).
fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// The inputs of a batch, for an error message.
pub fn describe(batch: &[Item]) -> String {
    let names: Vec<String> = batch.iter().take(3).map(|i| i.input.display().to_string()).collect();
    match batch.len() > 3 {
        true => format!("{} and {} more", names.join(", "), batch.len() - 3),
        false => names.join(", "),
    }
}
