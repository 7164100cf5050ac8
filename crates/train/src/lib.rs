//! The training core: group-relative advantages, the clipped policy-gradient losses of the GRPO
//! family (GRPO, Dr. GRPO, DAPO) with KL and truncated importance sampling, masked SFT,
//! micro-batching under a token budget, AdamW with warm-up and clipping, optional LoRA (frozen
//! base, trained low-rank adapters), atomic checkpoints, and SFT data from trajectory files.
//!
//! Invariant: every loss is normalised by the trained-token count of the WHOLE batch, passed
//! down to each micro-batch, so the summed gradient does not depend on how the batch is split.
//! This crate never samples rollouts, never reads environment variables and keeps no global
//! state; device, config and seeds are passed in.

pub mod advantage;
pub mod batch;
pub mod checkpoint;
pub mod config;
mod error;
pub mod loss;
pub mod optim;
pub mod samples;
pub mod sft;
pub mod trainer;

pub use batch::Sequence;
pub use config::{
    AdamWConfig, Algorithm, Decay, LoraConfig, LossConfig, Precision, Schedule, TrainConfig,
    ZeroVariance,
};
pub use error::{Error, Result};
pub use samples::{Sample, SkillMetrics, StepMetrics};
pub use trainer::{Gradients, Objective, Trainer, WeightSnapshot};
