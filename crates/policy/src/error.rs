//! The one error type of the policy crate.
//!
//! `Err` means no completion could be had: the server was unreachable, failed, timed out or
//! refused the request. A completion whose tool calls cannot be read is not an error; it is a
//! [`crate::FormatError`] inside the [`crate::Completion`].

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid policy `{spec}`: {reason}. Expected `openai:URL[,URL...]`, `local:DIR`, `null` or `oracle`"
    )]
    InvalidSpec { spec: String, reason: String },

    #[error("invalid policy configuration: {message}")]
    Config { message: String },

    #[error("could not reach {endpoint}: {message}")]
    Transport { endpoint: String, message: String },

    #[error("{endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },

    #[error("{endpoint} answered HTTP {status}: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },

    #[error("the conversation no longer fits the model's context: {message}")]
    ContextLength { message: String },

    #[error("{endpoint} sent something that is not a chat completion: {message}")]
    BadResponse { endpoint: String, message: String },

    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted { attempts: u32, last: Box<Error> },

    #[error("the scripted policy has no turn {turn} (its script has {len})")]
    ScriptExhausted { turn: usize, len: usize },

    #[error("scripted failure: {message}")]
    Scripted { message: String },
}

impl Error {
    /// Whether the request may succeed if sent again: transport failures, HTTP 429 and 5xx.
    /// Timeouts are not retried: a generation that took too long will likely take too long again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether the server refused the request because the prompt (plus `max_tokens`) exceeds
    /// the model's context: an outcome of the episode, not a failure of the infrastructure.
    pub fn is_context_length(&self) -> bool {
        match self {
            Error::ContextLength { .. } => true,
            Error::RetriesExhausted { last, .. } => last.is_context_length(),
            _ => false,
        }
    }
}
