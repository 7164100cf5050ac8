//! The one error type of the agent crate.
//!
//! `Err` means the system broke: a prompt template does not render, a trajectory file cannot be
//! written or read. What happens to an episode (a step limit, a timeout, a dead policy server,
//! a failed sandbox) is never an error: it is an [`crate::Outcome`] in the trajectory.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("prompt `{name}`: {message}")]
    Prompt { name: String, message: String },

    #[error("invalid agent configuration: {message}")]
    Config { message: String },

    #[error("sandbox failure: {0}")]
    Sandbox(#[from] sandbox::Error),

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error(transparent)]
    Records(#[from] trajectory::Error),
}
