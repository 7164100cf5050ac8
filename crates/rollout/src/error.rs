//! The one error type of the rollout crate: what stops a caller from running episodes at all.
//! Whatever goes wrong inside one episode is data in its [`crate::EpisodeRecord`].

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Agent(#[from] agent::Error),
    #[error(transparent)]
    Tasks(#[from] tasks::Error),
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error(transparent)]
    Corpus(#[from] corpus::Error),
    #[error("no prepared project `{name}-{version}` in the corpus cache {cache}; run `atomskill corpus fetch` (or `synth`) for it first")]
    MissingProject {
        name: String,
        version: String,
        cache: PathBuf,
    },
    #[error("project `{name}-{version}` changed since the tasks were made: its tree is snapshot {found}, the tasks name {expected}")]
    SnapshotChanged {
        name: String,
        version: String,
        expected: String,
        found: String,
    },
}
