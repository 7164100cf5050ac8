//! The atomskill recipe as a library: a plain config per stage and a function that runs it,
//! for the `atomskill` binary and for anyone driving the recipe from code.
//!
//! - [`workbench`]: the home directory's sandbox, snapshot store and corpus cache; loading
//!   instances; a [`rollout::Rollout`] for them.
//! - [`synth`]: the task factory over a manifest's projects or a repository on disk.
//! - [`sft`]: SFT data preparation (`data.json`) and training.
//! - [`quickstart`]: tasks → SFT → evaluation → joint GRPO → evaluation → report, resumable.
//!
//! Nothing here parses flags, draws progress bars or prints: callers get typed progress
//! events and results.

pub mod error;
pub mod quickstart;
pub mod sft;
pub mod synth;
pub mod workbench;

pub use crate::error::{Error, Result};
pub use crate::quickstart::{QuickstartConfig, TaskSource};
pub use crate::sft::SftConfig;
pub use crate::synth::SynthConfig;
pub use crate::workbench::{load_instances, Sampling, Workbench};
