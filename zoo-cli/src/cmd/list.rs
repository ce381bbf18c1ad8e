//! `zoo list`: architectures, pretrained checkpoints, and which are cached.

use std::process::ExitCode;

use anyhow::Result;
use weights::hub::HubOptions;

#[derive(clap::Args)]
pub struct Args {
    /// Only show pretrained checkpoints already in the local cache.
    #[arg(long)]
    cached: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if !args.cached {
        crate::outln!("Architectures (build with random weights, or load with --weights):")?;
        for chunk in resnet::variants::NAMES.chunks(6) {
            crate::outln!("  {}", chunk.join("  "))?;
        }
        crate::outln!("")?;
    }
    let hub = HubOptions::from_env();
    crate::outln!("Pretrained checkpoints (cache: {}):", hub.cache_dir.display())?;
    for e in weights::registry::entries() {
        let cached = crate::resolve::is_cached(&hub, &e.hf_hub_id);
        if args.cached && !cached {
            continue;
        }
        let mark = if cached { "cached" } else { "" };
        let default = if e.default {
            format!("(= {})", e.arch)
        } else {
            String::new()
        };
        crate::outln!(
            "  {:<36} {:<14} {:>4}px {:<8} {:<6}",
            e.name,
            default,
            e.input_size[1],
            e.interpolation,
            mark
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
