//! `zoo info`: parameters, multiply-adds and each stage's output shape.

use std::process::ExitCode;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use resnet::profile::{profile, Timing};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Architecture or pretrained name (`resnet50`, `resnext50_32x4d`, `resnet50.tv_in1k`).
    model: String,
    /// Input height and width in pixels (default: the size the weights were made for, as `zoo list` shows
    /// it; 224 for a bare architecture).
    #[arg(long, value_parser = crate::args::image_side)]
    size: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (cfg, native) = match std::path::Path::new(&args.model).is_file() {
        true => {
            let info = resnet::load::inspect(&args.model, &resnet::load::LoadOptions::default())?;
            let size = info.preprocess_or_default().input_size[1];
            (info.config, size)
        }
        false => match weights::registry::find(&args.model) {
            Some(entry) => (
                resnet::variants::by_name(&entry.arch)?.with_num_classes(entry.num_classes),
                entry.preprocess().input_size[1],
            ),
            None => {
                let cfg = resnet::variants::by_name(&args.model)?;
                let size = cfg.fixed_input_size().unwrap_or(224);
                (cfg, size)
            }
        },
    };
    let size = args.size.unwrap_or(native);
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = resnet::ResNet::new(&cfg, vb)?;
    let x = Tensor::zeros((1, cfg.in_channels, size, size), DType::F32, &Device::Cpu)?;
    let ops = profile(
        &model,
        &x,
        &Timing {
            repeats: 1,
            sync: &|| Ok(()),
        },
    )?;
    let macs: u64 = ops.iter().map(|o| o.macs).sum();
    let stages = model.forward_stages(&x)?;
    let stem_shape = ops
        .iter()
        .take_while(|o| !o.name.starts_with("layer"))
        .last()
        .map(|o| o.shape.clone());
    let mut rows: Vec<(String, Vec<usize>)> = vec![("stem".into(), stem_shape.unwrap_or_default())];
    rows.extend(
        stages
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("layer{}", i + 1), s.dims().to_vec())),
    );
    if args.json {
        let stages: Vec<_> = rows.iter().map(|(n, s)| json!({"name": n, "shape": s})).collect();
        let v = json!({"model": args.model, "params": model.num_params(), "macs": macs,
                       "input": [1, cfg.in_channels, size, size], "stages": stages,
                       "config": cfg});
        crate::outln!("{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{}: {} parameters, {:.2} G multiply-adds at {}x{}",
        args.model,
        group(model.num_params() as u64),
        macs as f64 / 1e9,
        size,
        size
    )?;
    crate::outln!("{:<8} output shape", "stage")?;
    for (name, shape) in rows {
        crate::outln!("{name:<8} {shape:?}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// 25557032 -> "25,557,032".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
