//! The one error type of the sandbox crate.
//!
//! `Err` means the sandbox itself could not do its job (a mount failed, a path was refused). What
//! happens to a command (a non-zero exit, a timeout, an OOM kill) is never an error: it is an
//! [`crate::ExecResult`].

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sandbox configuration: {message}")]
    InvalidConfig { message: String },

    #[error("isolation `{requested}` is not available here: {reason}. Run as root for full isolation, or pass `--isolation none` to run without any (unsafe for untrusted commands)")]
    IsolationUnavailable { requested: String, reason: String },

    #[error("path `{path}` is refused: {reason}")]
    PathRefused { path: String, reason: String },

    #[error("file `{path}` in the workspace: {reason}")]
    WorkspaceFile { path: String, reason: String },

    #[error("snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },

    #[error("system call failed while {context}: {source}")]
    Os {
        context: String,
        source: std::io::Error,
    },

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("sandbox setup failed at {step}: {source}")]
    Setup {
        step: String,
        source: std::io::Error,
    },

    #[error("the episode was already destroyed")]
    Destroyed,
}

impl Error {
    pub(crate) fn os(context: impl Into<String>, errno: i32) -> Error {
        Error::Os {
            context: context.into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
