//! The atomskill agent runtime: the tools (`bash`, `str_replace_editor`, a task-defined
//! `submit`), prompts as template files, the episode loop with its budgets, typed outcomes, and
//! trajectories with their JSON-lines store.
//!
//! The caller builds a [`Prompts`] and [`AgentSettings`] once, an [`AgentTask`] per instance,
//! and calls [`run_episode`] with any [`policy::Policy`] and a [`sandbox::Workspace`] (a sandbox episode, or any other backend); it gets a
//! [`Trajectory`] whose [`Outcome`] says how the episode ended.
//!
//! This crate knows no skill and computes no reward: what `submit` takes is given by the task,
//! and grading happens elsewhere, on the episode the agent leaves behind.

mod error;
pub mod prompts;
mod run;
pub mod tools;

pub use crate::error::{Error, Result};
pub use crate::prompts::Prompts;
pub use crate::run::{run_episode, AgentSettings, AgentTask, Budgets};
pub use crate::tools::{CallResult, EnabledTools, Observation, SubmitSpec, ToolSettings, Toolbox};
pub use trajectory::{
    read_jsonl, CallRecord, ExecSummary, JsonlWriter, Outcome, OutcomeKind, ReadReport, RecordSink,
    SegmentBuilder, Step, StepTokens, TokenSegment, Trajectory, TruncatedTail, WriterConfig,
    SCHEMA_VERSION,
};

use trajectory::serde_seconds;
