//! One module per subcommand: its clap `Args` and its `run`.

pub mod bench;
pub mod convert;
pub mod download;
pub mod embed;
pub mod eval;
pub mod finetune;
pub mod gradflow;
pub mod info;
pub mod list;
pub mod preprocess;
pub mod quantize;
pub mod run;
pub mod serve;
