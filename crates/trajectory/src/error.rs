//! The one error type of the trajectory crate: records that cannot be written or read.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid writer configuration: {message}")]
    Config { message: String },

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("{}:{line}: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{}:{line}: schema version {found} is not readable by this build (it reads {supported})", path.display())]
    SchemaVersion {
        path: PathBuf,
        line: usize,
        found: u64,
        supported: u32,
    },

    #[error("cannot serialize a record: {0}")]
    Serialize(serde_json::Error),

    #[error("the record writer has stopped: {message}")]
    WriterClosed { message: String },
}
