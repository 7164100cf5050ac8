//! The task factory: real projects → validated bugs → verified instances of the five atomic
//! skills and of bug fixing.
//!
//! Nothing is written that was not checked: a bug is kept only if tests flip from pass to fail
//! and nothing else changes; an instance only if its gold answer earns the top reward and an
//! empty answer the bottom one.

pub mod bugs;
pub mod error;
pub mod issue;
pub mod pipeline;
pub mod project;
pub mod rust_tests;
pub mod skills;
pub mod validate;

pub use crate::error::{Error, Result};
pub use crate::pipeline::{synth_project, Event, ProjectReport, RunManifest, SynthOptions};
pub use crate::project::{prepare_project, ProjectState};
