//! The records every layer of atomskill shares, at the bottom of the crate graph: the chat
//! vocabulary (messages, roles, tool calls, usage, token traces), what an episode leaves behind
//! (trajectories, steps, token segments with their loss mask, typed outcomes), the one strict
//! JSON-lines reader and writer, the one atomic file write, and the one seed derivation.
//!
//! This crate depends on no other atomskill crate, runs no model and no command, and reads no
//! environment variable.

mod error;
pub mod fs;
pub mod jsonl;
mod message;
mod outcome;
pub mod seed;
mod trajectory;

pub use crate::error::{Error, Result};
pub use crate::fs::write_atomic;
pub use crate::jsonl::{
    read_jsonl, read_lines, read_lines_checked, read_lines_if_exists, JsonlWriter, ReadReport,
    RecordSink, TruncatedTail, WriterConfig, SCHEMA_VERSION,
};
pub use crate::message::{
    estimate_message_tokens, estimate_tokens, FinishReason, FunctionCall, Message, Role,
    TokenTrace, ToolCall, ToolSpec, Usage,
};
pub use crate::outcome::{Outcome, OutcomeKind};
pub use crate::seed::{derive_seed, derive_seed_from_bytes, SplitMix64};
pub use crate::trajectory::{
    CallRecord, ExecSummary, Repair, SegmentBuilder, Step, StepTokens, TokenSegment, Trajectory,
};

/// Serde of a `Duration` as (fractional) seconds, for settings files.
pub mod serde_seconds {
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
