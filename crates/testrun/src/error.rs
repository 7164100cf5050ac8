//! The one error type of the testrun crate: the sandbox could not run the tests at all. Tests
//! that fail, hang or crash are a [`crate::TestRun`], not an error.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox: {0}")]
    Sandbox(#[from] sandbox::Error),

    #[error("{0}")]
    Baseline(String),
}
