//! Task instances of the five atomic skills and the composite tasks, their storage, and the
//! verifiers that turn an agent's answer into a reward.
//!
//! The verifiers never trust the agent's workspace: they grade data captured from it in fresh
//! episodes of the pristine snapshot.

pub mod canary;
pub mod decontam;
pub mod error;
pub mod gold;
pub mod hacks;
pub mod instance;
pub mod mutants;
pub mod patch;
pub mod sentinel;
pub mod shadow;
pub mod store;
pub mod swebench;
pub mod verify;

pub use crate::canary::{TamperKind, Tampering};
pub use crate::error::{Error, Result};
pub use crate::gold::{gold_answer, reproduction_path};
pub use crate::instance::{
    BugRef, CandidateKind, Harness, Instance, Mutant, ProjectRef, Skill, TargetFunction, Task,
    Validation, SCHEMA_VERSION,
};
pub use crate::patch::FileEdits;
pub use crate::verify::{Answer, Details, GradedProject, Grader, Verdict};
