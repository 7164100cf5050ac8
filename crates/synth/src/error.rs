//! The one error type of the synth crate. A mutant that does not validate, or an instance whose
//! gold answer fails, is a counted outcome, not an error.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Corpus(#[from] corpus::Error),
    #[error("sandbox: {0}")]
    Sandbox(#[from] sandbox::Error),
    #[error("{0}")]
    Tests(#[from] testrun::Error),
    #[error("{0}")]
    Tasks(#[from] tasks::Error),
    #[error("mutation: {0}")]
    Mutate(#[from] mutate::Error),
    #[error("{0}")]
    Records(#[from] trajectory::Error),
    #[error("call coverage: {0}")]
    Coverage(String),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
