//! The one error type of the corpus crate.
//!
//! `Err` means a project could not be made ready (a malformed manifest, a download that failed
//! or did not match its checksum, an install that failed). A test that fails in a clean run is
//! not an error: it is part of the baseline.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}:{line}: {message}")]
    Manifest {
        path: String,
        line: usize,
        message: String,
    },

    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },

    #[error("{archive}: sha256 is {actual}, the manifest pins {expected}; the file was not used")]
    Checksum {
        archive: String,
        expected: String,
        actual: String,
    },

    #[error("unpacking {archive}: {message}")]
    Unpack { archive: String, message: String },

    #[error("setting up the environment of {project}: {message}")]
    Environment { project: String, message: String },

    #[error("cannot work out {what} for {project}: {message}")]
    Detect {
        project: String,
        what: String,
        message: String,
    },

    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
