//! Evaluation: k episodes of every instance ([`rollout::Rollout`], the same episodes the trainer
//! runs), their records in append-only JSONL ([`store`]), Avg@k and pass@k per skill
//! ([`metrics`]), a self-contained HTML page ([`report`]), and the reward-hack audit of the
//! graders ([`audit`]).

pub mod audit;
pub mod error;
pub mod metrics;
pub mod report;
pub mod run;
pub mod store;

pub use crate::error::{Error, Result};
pub use crate::metrics::{pass_at_k, Summary};
pub use crate::run::{run_eval, EvalEvent, EvalOptions};
pub use policy::PolicyChoice;
pub use rollout::{EpisodeRecord, Projects, Rollout};
