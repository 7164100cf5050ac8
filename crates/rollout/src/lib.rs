//! One episode of one task instance, end to end, as both evaluation and training run it: a
//! fresh sandbox episode made from the instance's starting state, the task's prompt and
//! `submit` tool, the agent loop, the answer captured from the workspace and the `submit` call,
//! and the verdict of the instance's verifier in episodes of its own ([`Rollout`]).
//!
//! Also here: the scripted policies that play instances from their gold answer ([`oracle`]),
//! how an instance becomes an agent task ([`task`]), and the resolution of an instance's
//! project to its snapshot and test runner in the corpus cache ([`Projects`]).
//!
//! This crate computes no metric and writes no file: what to do with an [`EpisodeRecord`] is
//! the caller's (`eval` stores and summarises them, `rl` trains on them).

pub mod config;
pub mod error;
pub mod oracle;
pub mod projects;
mod rollout;
pub mod task;

pub use crate::config::{AgentConfig, DEFAULT_TEST_TIMEOUT_SECONDS};
pub use crate::error::{Error, Result};
pub use crate::projects::Projects;
pub use crate::rollout::{EpisodeRecord, Rollout};
