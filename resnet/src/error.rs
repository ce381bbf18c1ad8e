//! Errors of the `resnet` crate.

/// Why a model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not one of [`crate::variants::NAMES`].
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },
    /// The config's knobs contradict each other.
    #[error("invalid ResNet config: {0}")]
    InvalidConfig(String),
    /// A tensor was missing or had the wrong shape, or an op failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
