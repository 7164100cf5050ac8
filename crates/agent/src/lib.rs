//! The atomskill agent runtime: the tools (`bash`, `str_replace_editor`, a task-defined
//! `submit`), prompts as template files, the episode loop with its budgets, typed outcomes, and
//! trajectories with their JSON-lines store.
//!
//! The caller builds a [`Prompts`] and [`AgentSettings`] once, an [`AgentTask`] per instance,
//! and calls [`run_episode`] with any [`policy::Policy`] and a [`sandbox::Episode`]; it gets a
//! [`Trajectory`] whose [`Outcome`] says how the episode ended.
//!
//! This crate knows no skill and computes no reward: what `submit` takes is given by the task,
//! and grading happens elsewhere, on the episode the agent leaves behind.

mod error;
pub mod jsonl;
mod outcome;
pub mod prompts;
mod run;
pub mod tools;
mod trajectory;

pub use crate::error::{Error, Result};
pub use crate::jsonl::{
    read_jsonl, JsonlWriter, ReadReport, RecordSink, TruncatedTail, WriterConfig, SCHEMA_VERSION,
};
pub use crate::outcome::{Outcome, OutcomeKind};
pub use crate::prompts::Prompts;
pub use crate::run::{run_episode, AgentSettings, AgentTask, Budgets};
pub use crate::tools::{
    CallResult, EnabledTools, ExecSummary, Observation, SubmitSpec, ToolSettings, Toolbox,
};
pub use crate::trajectory::{
    CallRecord, SegmentBuilder, Step, StepTokens, TokenSegment, Trajectory,
};

/// Serde of a `Duration` as (fractional) seconds, for settings files.
mod serde_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}
