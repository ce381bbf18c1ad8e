//! Errors of the `clip` crate.

use std::path::PathBuf;

/// Why a CLIP model, tokenizer or classifier could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `tokenizers` crate refused a tokenizer file or a text.
    #[error("tokenizer: {source}")]
    Tokenizer {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An argument or a config contradicts itself or the model (a template without `{}`, no labels, token ids
    /// past the vocabulary, a ViT config where a ResNet one is needed, ...).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON config could not be parsed.
    #[error("parsing {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] weights::checkpoint::CheckpointError),
    /// A checkpoint's tensors do not fit the model: every difference is listed.
    #[error("{} does not fit the CLIP model ({} problem(s)):\n  {}", path.display(), problems.len(), problems.join("\n  "))]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Each missing, misshapen or unused tensor.
        problems: Vec<String>,
    },
    /// A download from the Hugging Face Hub failed.
    #[cfg(feature = "hub")]
    #[error(transparent)]
    Hub(Box<weights::hub::HubError>),
    /// The image tower could not be built.
    #[error(transparent)]
    ResNet(#[from] resnet::Error),
    /// A tensor was missing or had the wrong shape, or an op failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}
