//! The train crate's one error type. Bad input (an empty batch, a mismatched mask, an unreadable
//! checkpoint, a trajectory file in the wrong shape) is reported here with what and where; nothing
//! in this crate panics on input.

use std::path::PathBuf;

/// Everything that can go wrong while preparing data, stepping the optimiser or checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("invalid training input: {0}")]
    Input(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("model: {0}")]
    Model(#[from] model::Error),
    #[error("trajectories: {0}")]
    Trajectories(#[from] trajectory::Error),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The train crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}
