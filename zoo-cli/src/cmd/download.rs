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
        let fetched = weights::hub::Hub::from_env()
            .map_err(resnet::Error::from)
            .and_then(|hub| resnet::pretrained::fetch(&hub, &resnet::pretrained::target(m)?));
        match fetched {
            Ok(f) => crate::outln!("{m}: {}", f.weights.display())?,
            Err(e) => {
                eprintln!("error: {m}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
