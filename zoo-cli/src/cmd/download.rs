//! `zoo download`: fetch checkpoints into the Hugging Face cache for offline use.

use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Pretrained names (`resnet50`, `resnet50.tv2_in1k`) or Hub repos (`owner/name[@revision]`).
    #[arg(required = true)]
    models: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut failed = false;
    for m in &args.models {
        match crate::hub::target(m).and_then(|t| crate::hub::fetch(&t)) {
            Ok((path, _)) => println!("{m}: {}", path.display()),
            Err(e) => {
                eprintln!("error: {m}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
