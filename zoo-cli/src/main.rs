//! `zoo`: classify images with ResNets, inspect models, fetch checkpoints, time every layer.

mod args;
mod batches;
mod classifier;
mod cmd;
mod device;
mod files;
mod inputs;
mod memory;
mod npy;
mod output;
mod plot;
mod progress;
mod resolve;
mod results;

use clap::{Parser, Subcommand};

/// Run, inspect, fetch and time ResNet models on Candle.
#[derive(Parser)]
#[command(name = "zoo", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for the model's computation (one pool for the whole process; default: all cores, or
    /// RAYON_NUM_THREADS).
    #[arg(long, global = true, value_parser = |s: &str| crate::args::in_range(s, 1, 4096))]
    threads: Option<usize>,
    /// No progress bars and no notes on stderr (warnings and errors are still printed).
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (or preprocessed .npy tensors) and print the top classes.
    Run(cmd::run::Args),
    /// Accuracy on a labelled set (class directories or a CSV): top-1, top-5, per class, confusion matrix.
    Eval(cmd::eval::Args),
    /// Write one embedding per image (pooled features; CLIP's image embedding) or text (CLIP), as JSON lines.
    Embed(cmd::embed::Args),
    /// Serve models over HTTP (Open Inference Protocol / KServe v2, and an image endpoint), with dynamic
    /// batching.
    Serve(cmd::serve::Args),
    /// Write the exact float32 tensor `run` would feed the model for one image.
    Preprocess(cmd::preprocess::Args),
    /// List architectures and pretrained checkpoints, and which are cached.
    List(cmd::list::Args),
    /// Show a model's parameters, multiply-adds and each stage's output shape.
    Info(cmd::info::Args),
    /// Fetch checkpoints into the Hugging Face cache for offline use.
    Download(cmd::download::Args),
    /// Convert checkpoints from other frameworks to self-describing safetensors.
    Convert(cmd::convert::Args),
    /// Quantize a model to int8 (post-training, calibrated on a folder of images) into a checkpoint.
    Quantize(cmd::quantize::Args),
    /// Time a model end to end, or layer by layer with --layers.
    Bench(cmd::bench::Args),
    /// Replace a pretrained model's classifier and train it on your own images.
    Finetune(cmd::finetune::Args),
    /// Compare gradient flow in a plain network and its residual twin.
    Gradflow(cmd::gradflow::Args),
}

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    memory::keep_freed_memory();
    // Before anything opens a file: a closed descriptor 1 would be reused by the next open.
    if let Err(e) = output::ensure_stdout_open() {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Before any thread pool starts: rayon's global pool and Candle's kernels read it at their start.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    progress::set_quiet(cli.quiet);
    // Interrupted downloads and writes leave nothing behind (SIGINT/SIGTERM; SIGKILL is cleaned next time).
    // `zoo serve` handles SIGTERM itself: it drains requests in flight, and writes no files.
    let serving = matches!(cli.command, Command::Serve(_));
    if let Err(e) = (!serving).then(weights::cleanup::install).transpose() {
        eprintln!("warning: cannot install the signal handlers that clean up interrupted writes: {e}");
    }
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Embed(a) => cmd::embed::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Preprocess(a) => cmd::preprocess::run(a),
        Command::List(a) => cmd::list::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Download(a) => cmd::download::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
        Command::Gradflow(a) => cmd::gradflow::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = advice(&e) {
                eprintln!("hint: {hint}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// What to do next, for errors of the libraries (which name no command-line flags themselves).
fn advice(e: &anyhow::Error) -> Option<String> {
    use resnet::Error;
    let err = e.chain().find_map(|c| c.downcast_ref::<Error>())?;
    Some(match err {
        Error::NoArchitecture { path, candidates } => {
            let arch = candidates.first().map_or("ARCH", String::as_str);
            format!("name the architecture: `zoo run {arch} --weights {}`", path.display())
        }
        Error::ArchitectureConflict { path, stored, .. } => {
            format!(
                "drop the architecture name to use the file's own (`zoo run {} ...`), or name {stored}",
                path.display()
            )
        }
        Error::UnknownModel { .. } => "`zoo list` shows the architectures and pretrained names".to_string(),
        Error::Mismatch { .. } => "the weights belong to another architecture: check the MODEL name".to_string(),
        Error::Hub(e) => match &**e {
            weights::hub::HubError::OfflineNotCached { repo_id, .. } => {
                format!("fetch it while online with `zoo download {repo_id}`, or unset HF_HUB_OFFLINE")
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`zoo list | head -3`) would fail every later
/// `println!` with a panic; like other Unix tools, `zoo` should just stop.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default has no preconditions; done before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
