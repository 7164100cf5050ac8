//! The one error type of the tasks crate. A wrong answer is a verdict, not an error: `Err`
//! means the grader itself could not run (the sandbox failed, an instance file is malformed).

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox: {0}")]
    Sandbox(#[from] sandbox::Error),
    #[error("running tests: {0}")]
    Tests(#[from] testrun::Error),
    #[error("patch: {0}")]
    Patch(String),
    #[error("setting up the workspace: {0}")]
    Setup(String),
    #[error("SWE-bench export: {0}")]
    Export(String),
    #[error("{path}:{line}: {message}")]
    Format {
        path: String,
        line: usize,
        message: String,
    },
    #[error("no project `{0}` is loaded for grading; fetch it with `atomskill corpus fetch`")]
    UnknownProject(String),
    #[error("a test run was tampered with: {0}")]
    Tampered(String),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
