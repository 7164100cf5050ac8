//! Runs a project's tests inside the sandbox and returns a per-test status map from a real
//! parser (pytest's JUnit XML, `cargo test` output), cross-checked against the exit code.
//!
//! Never trusts console text for pytest, and never lets an inconsistent run count as passing.

pub mod baseline;
pub mod cargo;
pub mod error;
pub mod junit;
pub mod runner;
pub mod status;

pub use crate::baseline::Baseline;
pub use crate::error::{Error, Result};
pub use crate::runner::{Selection, TestRun, TestRunner};
pub use crate::status::{Parsed, TestStatus};
