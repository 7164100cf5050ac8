//! Joint GRPO over atomic skills (the mission's training recipe).
//!
//! Rollout workers draw tasks from a weighted mixture of skills, run groups of episodes with the
//! policy at weight version v (agent loop + sandbox + verifier, [`rollout::Rollout`]), and hand
//! scored groups to the optimiser, which steps while the workers keep going. A group whose
//! version is more than `max_staleness` behind the trainer's is dropped (and counted); the
//! workers never run more than `(max_staleness + 1) × groups_per_step` groups ahead. After each
//! step the weights go to the policy: swapped into the in-process engine, or written as a
//! checkpoint that an external server is told to reload.

pub mod config;
pub mod error;
pub mod mixture;
pub mod run;

pub use crate::config::RunConfig;
pub use crate::error::{Error, Result};
pub use crate::mixture::Mixture;
pub use crate::run::{run_training, StepRecord, TrainEvent};
