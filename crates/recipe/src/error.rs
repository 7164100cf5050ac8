//! The one error type of the recipe crate: what stops a stage. It names the stage's cause as
//! the crate below reported it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error(transparent)]
    Corpus(#[from] corpus::Error),
    #[error(transparent)]
    Synth(#[from] synth::Error),
    #[error(transparent)]
    Tasks(#[from] tasks::Error),
    #[error(transparent)]
    Rollout(#[from] rollout::Error),
    #[error(transparent)]
    Eval(#[from] eval::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error(transparent)]
    Train(#[from] train::Error),
    #[error("GRPO: {0}")]
    Rl(#[from] rl::Error),
    #[error("a worker task failed: {0}")]
    Join(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
