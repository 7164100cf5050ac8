//! The one error type of the eval crate: what stops a whole run. Whatever goes wrong inside
//! one episode is data in its [`crate::EpisodeRecord`].

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Agent(#[from] agent::Error),
    #[error(transparent)]
    Records(#[from] ::trajectory::Error),
    #[error(transparent)]
    Rollout(#[from] rollout::Error),
    #[error(transparent)]
    Tasks(#[from] tasks::Error),
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error(transparent)]
    Corpus(#[from] corpus::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no task instances in {0}")]
    NoInstances(PathBuf),
    #[error(
        "{path} was written by a different run ({what}); use another --out or the same options"
    )]
    RunMismatch { path: PathBuf, what: String },
    #[error("report: {0}")]
    Report(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
