//! Evaluation and rollouts: one episode of a task instance is the agent loop in a fresh
//! sandbox episode made from the instance's starting state, its answer captured from the
//! workspace and the `submit` call, and graded by the instance's verifier in episodes of its own.
//!
//! The same [`Rollout`] serves `atomskill eval` and the trainer. Results go to append-only
//! JSONL ([`store`]); [`metrics`] turns them into Avg@k and pass@k per skill; [`report`] writes
//! a self-contained HTML page.

pub mod audit;
pub mod error;
pub mod metrics;
pub mod oracle;
pub mod projects;
pub mod report;
pub mod rollout;
pub mod run;
pub mod store;
pub mod task;

pub use crate::error::{Error, Result};
pub use crate::metrics::{pass_at_k, Summary};
pub use crate::projects::Projects;
pub use crate::rollout::{EpisodeRecord, Rollout};
pub use crate::run::{run_eval, EvalEvent, EvalOptions, PolicyChoice};
