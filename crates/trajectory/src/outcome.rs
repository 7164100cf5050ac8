//! How an episode ended: data that reports count and the trainer reads, never an error.
//!
//! Infrastructure failures (the policy server or the sandbox broke) are outcomes of their own so
//! that they are never scored as an answer worth 0: [`Outcome::is_infrastructure_failure`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The model called `submit` with arguments that fit the task's schema.
    Submitted { arguments: Value },
    /// The step budget ran out before a submission.
    StepLimit { steps: u32 },
    /// The conversation outgrew the context budget (or the server said it did).
    ContextOverflow { context_tokens: u64, limit: u64 },
    /// Too many replies in a row without a usable tool call.
    FormatError {
        consecutive: u32,
        last_error: String,
    },
    /// The policy could not answer (server down, HTTP errors, timeouts after retries).
    PolicyError { message: String },
    /// The sandbox itself failed.
    SandboxError { message: String },
    /// The episode's wall-clock budget ran out.
    Timeout {
        elapsed_seconds: f64,
        limit_seconds: f64,
    },
}

/// [`Outcome`] without its data, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Submitted,
    StepLimit,
    ContextOverflow,
    FormatError,
    PolicyError,
    SandboxError,
    Timeout,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Submitted,
        OutcomeKind::StepLimit,
        OutcomeKind::ContextOverflow,
        OutcomeKind::FormatError,
        OutcomeKind::PolicyError,
        OutcomeKind::SandboxError,
        OutcomeKind::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Submitted => "submitted",
            OutcomeKind::StepLimit => "step_limit",
            OutcomeKind::ContextOverflow => "context_overflow",
            OutcomeKind::FormatError => "format_error",
            OutcomeKind::PolicyError => "policy_error",
            OutcomeKind::SandboxError => "sandbox_error",
            OutcomeKind::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Submitted { .. } => OutcomeKind::Submitted,
            Outcome::StepLimit { .. } => OutcomeKind::StepLimit,
            Outcome::ContextOverflow { .. } => OutcomeKind::ContextOverflow,
            Outcome::FormatError { .. } => OutcomeKind::FormatError,
            Outcome::PolicyError { .. } => OutcomeKind::PolicyError,
            Outcome::SandboxError { .. } => OutcomeKind::SandboxError,
            Outcome::Timeout { .. } => OutcomeKind::Timeout,
        }
    }

    /// The policy server or the sandbox failed: the episode says nothing about the model and
    /// must be retried or left out, never scored.
    pub fn is_infrastructure_failure(&self) -> bool {
        matches!(
            self,
            Outcome::PolicyError { .. } | Outcome::SandboxError { .. }
        )
    }

    /// The submitted arguments, if the model submitted.
    pub fn submitted(&self) -> Option<&Value> {
        match self {
            Outcome::Submitted { arguments } => Some(arguments),
            _ => None,
        }
    }
}
