//! Per-op times of a CLIP model's two towers (what `zoo bench --layers` reports), on zero weights.
//!
//! ```sh
//! cargo run --release -p clip --example profile -- [resnet50_clip] [PROMPTS]
//! ```

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clip::{Clip, ClipConfig, ClipTokenizer};
use resnet::profile::{OpRecord, Timing};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "resnet50_clip".to_string());
    let prompts: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let device = Device::Cpu;
    let config = ClipConfig::by_name(&name)?;
    let model = Clip::new(&config, VarBuilder::zeros(DType::F32, &device))?;
    let timing = Timing {
        repeats: 5,
        sync: &|| Ok(()),
    };

    let size = config.image_size();
    let image = Tensor::zeros((1, 3, size, size), DType::F32, &device)?;
    let ops = resnet::profile::profile(&model.visual, &image, &timing)?;
    println!("{name} image tower, 1 image of {size}x{size}: {:.1} ms", total_ms(&ops));
    print(
        ops.iter()
            .filter(|o| !o.name.contains('.') || o.name.ends_with("attnpool")),
    );

    let tokenizer = ClipTokenizer::openai()?;
    let texts: Vec<String> = (0..prompts)
        .map(|i| format!("a photo of a thing number {i}."))
        .collect();
    let tokens = tokenizer.tokenize(&texts, &device)?;
    let ops = clip::profile::profile_text(&model.text, &tokens, &timing)?;
    println!("\n{name} text tower, {prompts} prompts: {:.1} ms", total_ms(&ops));
    print(
        ops.iter()
            .filter(|o| !o.name.contains("resblocks.") || o.name.contains("resblocks.0.")),
    );
    Ok(())
}

fn total_ms(ops: &[OpRecord]) -> f64 {
    ops.iter().map(|o| o.median.as_secs_f64() * 1e3).sum()
}

fn print<'a>(ops: impl Iterator<Item = &'a OpRecord>) {
    println!(
        "{:<34} {:>18} {:>10} {:>9} {:>9}",
        "op", "output", "params", "MFLOP", "ms"
    );
    for o in ops {
        let shape = format!("{:?}", o.shape);
        let mflop = 2.0 * o.macs as f64 / 1e6;
        println!(
            "{:<34} {shape:>18} {:>10} {mflop:>9.1} {:>9.3}",
            o.name,
            o.params,
            o.median.as_secs_f64() * 1e3
        );
    }
}
