//! Errors of the `resnet` crate.
//!
//! A few categories, each keeping its cause (`std::error::Error::source`): what the caller asked for is
//! unknown or contradictory ([`Error::UnknownModel`], [`Error::InvalidConfig`]); a file could not be read
//! ([`Error::Checkpoint`], [`Error::Pth`], [`Error::Tfjs`]); a file was read but does not fit the network
//! ([`Error::Mismatch`], [`Error::ArchitectureConflict`], [`Error::NoArchitecture`], [`Error::BadMetadata`]);
//! values are not usable numbers ([`Error::NonFinite`]); a download failed ([`Error::Hub`]); an image could not
//! be read ([`Error::Image`]); a tensor operation failed ([`Error::Candle`]).
//!
//! Messages say what is wrong and name the file or tensor; they do not name command-line flags (the `zoo`
//! command adds that advice itself).

use std::fmt;
use std::path::PathBuf;

use candle_core::DType;

/// Why a model could not be built, loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name is neither one of [`crate::variants::NAMES`] nor (with the `hub` feature) a pretrained name.
    #[error("unknown model `{name}`{}", suggestion(suggestions))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Known names close to it (may be empty).
        suggestions: Vec<String>,
    },
    /// The config's knobs contradict each other or exceed the supported limits.
    #[error("invalid ResNet config: {0}")]
    InvalidConfig(String),
    /// A safetensors checkpoint could not be read (I/O, corrupt header, unreadable tensor).
    #[error(transparent)]
    Checkpoint(#[from] weights::checkpoint::CheckpointError),
    /// A PyTorch file could not be read.
    #[error(transparent)]
    Pth(#[from] weights::pth::PthError),
    /// A TF.js (Keras) model could not be read.
    #[error(transparent)]
    Tfjs(#[from] weights::tfjs::TfjsError),
    /// A metadata entry of a checkpoint (or a repo's config file) is malformed or out of range.
    #[error("{path}: {key} is not valid: {reason}")]
    BadMetadata {
        /// The file (or repo) it came from.
        path: PathBuf,
        /// The metadata key or config field.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An importer met something it does not know how to translate.
    #[error("cannot import {}: {reason}", path.display())]
    Import {
        /// The file.
        path: std::path::PathBuf,
        /// What it could not translate.
        reason: String,
    },
    /// The tensors of a file do not fit the architecture; every problem is listed.
    #[error("{} does not fit the architecture {arch} ({} problem(s)):\n{}", path.display(), problems.len(), list(problems))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The architecture it was checked against.
        arch: String,
        /// What differs.
        problems: Vec<TensorProblem>,
    },
    /// The caller asked for one architecture and the file records another.
    #[error("{} holds a {stored} network (its own metadata says so), but {asked} was asked for", path.display())]
    ArchitectureConflict {
        /// The file.
        path: PathBuf,
        /// What the caller named.
        asked: String,
        /// What the file's metadata names.
        stored: String,
    },
    /// Nothing says which architecture a file holds.
    #[error("{} does not say which architecture it holds (no `zoo.config` or `zoo.arch` metadata){}", path.display(), guess(candidates))]
    NoArchitecture {
        /// The file.
        path: PathBuf,
        /// Named variants whose tensors the file fits exactly.
        candidates: Vec<String>,
    },
    /// A weight, an input or an output holds NaN or infinity.
    #[error("{what} holds {count} non-finite value(s) (NaN or infinity)")]
    NonFinite {
        /// Which tensor, of which file or input.
        what: String,
        /// How many values are not finite.
        count: usize,
    },
    /// A download from the Hugging Face Hub failed. (Boxed: the hub's errors carry the endpoint, repository,
    /// file and what happened, and would otherwise make every `Result` of this crate that large.)
    #[cfg(feature = "hub")]
    #[error(transparent)]
    Hub(#[from] Box<weights::hub::HubError>),
    /// An image could not be read or prepared.
    #[cfg(feature = "image")]
    #[error(transparent)]
    Image(#[from] crate::data::DataError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

#[cfg(feature = "hub")]
impl From<weights::hub::HubError> for Error {
    fn from(e: weights::hub::HubError) -> Self {
        Self::Hub(Box::new(e))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn suggestion(s: &[String]) -> String {
    match s.len() {
        0 => String::new(),
        _ => format!(
            "; did you mean {}?",
            s.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn guess(candidates: &[String]) -> String {
    match candidates.len() {
        0 => "; its tensors fit none of the named variants".to_string(),
        1 => format!("; its tensors fit `{}`", candidates[0]),
        _ => format!("; its tensors fit each of {}", candidates.join(", ")),
    }
}

/// One way a stored tensor disagrees with the architecture (canonical names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    /// The architecture needs a tensor the file lacks.
    Missing {
        /// Canonical name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// The file has a tensor the architecture does not use.
    Unexpected {
        /// Canonical name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
    },
    /// Both have it, in different shapes.
    Shape {
        /// Canonical name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Weights must be floating point; an integer tensor means the wrong entry was mapped here.
    DType {
        /// Canonical name.
        name: String,
        /// Its dtype in the file.
        found: DType,
    },
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Missing { name, expected } => {
                write!(f, "missing tensor `{name}` (expected shape {expected:?})")
            }
            TensorProblem::Unexpected { name, found } => write!(f, "unexpected tensor `{name}` of shape {found:?}"),
            TensorProblem::Shape { name, expected, found } => {
                write!(f, "tensor `{name}` has shape {found:?}, expected {expected:?}")
            }
            TensorProblem::DType { name, found } => {
                write!(f, "tensor `{name}` has dtype {found:?}, expected a float type")
            }
        }
    }
}

/// At most 20 problems, one a line: a checkpoint of the wrong family would otherwise list hundreds.
fn list(problems: &[TensorProblem]) -> String {
    let mut lines: Vec<String> = problems.iter().take(20).map(|p| format!("  {p}")).collect();
    if problems.len() > 20 {
        lines.push(format!("  ... and {} more", problems.len() - 20));
    }
    lines.join("\n")
}
