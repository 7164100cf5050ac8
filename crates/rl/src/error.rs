//! The one error type of the rl crate: what stops a training run. A failed episode is data.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Train(#[from] train::Error),
    #[error(transparent)]
    Eval(#[from] eval::Error),
    #[error(transparent)]
    Episodes(#[from] rollout::Error),
    #[error(transparent)]
    Agent(#[from] agent::Error),
    #[error(transparent)]
    Records(#[from] ::trajectory::Error),
    #[error(transparent)]
    Serve(#[from] engine::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The configured device cannot be opened (its message names the device).
    #[error(transparent)]
    Device(model::Error),
    #[error("weight sync: {0}")]
    Sync(String),
    #[error("the rollout workers stopped: {0}")]
    Rollout(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
