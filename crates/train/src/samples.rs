//! Rollouts as the trainer receives them ([`Sample`]), how a batch of them becomes training
//! sequences with group-relative advantages, and what a step reports ([`StepMetrics`], per
//! skill). Pure bookkeeping: no tensor here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trajectory::TokenSegment;

use crate::advantage::{group_advantages, mean_std, GroupAdvantages};
use crate::batch::Sequence;
use crate::config::{TrainConfig, ZeroVariance};
use crate::{Error, Result};

/// One scored rollout: its token segments (with loss mask and rollout log-probs), its reward,
/// the group it is compared within (the task it answered) and its skill (for metrics only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub segments: Vec<TokenSegment>,
    pub reward: f64,
    pub group: String,
    pub skill: String,
}

impl Sample {
    pub fn from_trajectory(
        trajectory: &trajectory::Trajectory,
        reward: f64,
        group: impl Into<String>,
        skill: impl Into<String>,
    ) -> Self {
        Self {
            segments: trajectory.token_segments.clone(),
            reward,
            group: group.into(),
            skill: skill.into(),
        }
    }
}

/// Per-skill statistics of one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkillMetrics {
    pub n_samples: usize,
    pub reward_mean: f64,
    pub reward_std: f64,
    pub advantage_mean: f64,
    pub advantage_std: f64,
    /// Samples in groups whose rewards were all equal.
    pub n_zero_variance_samples: usize,
    pub n_trained_tokens: usize,
}

/// What one step did. Means are over trained tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The optimiser step this was (0-based).
    pub step: u64,
    /// The weight version after the step (incremented by every update).
    pub weight_version: u64,
    /// False when the batch had no trained token (nothing changed).
    pub updated: bool,
    pub lr: f64,
    /// The batch loss (sum of the micro-batch losses, which share the global normaliser).
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub n_samples: usize,
    pub n_sequences: usize,
    pub n_micro_batches: usize,
    pub n_trained_tokens: usize,
    pub n_real_tokens: usize,
    /// Real plus padding tokens run through the model.
    pub n_padded_tokens: usize,
    pub n_truncated_sequences: usize,
    pub n_groups: usize,
    pub n_zero_variance_groups: usize,
    /// Samples left out because their group had zero variance ([`ZeroVariance::Drop`]).
    pub n_dropped_samples: usize,
    pub mean_logprob: f64,
    pub clip_fraction: f64,
    pub kl: f64,
    pub tis_weight_mean: f64,
    pub tis_capped_fraction: f64,
    /// Mean of `logp_trainer − logp_rollout` over trained tokens.
    pub rollout_mismatch: f64,
    pub per_skill: BTreeMap<String, SkillMetrics>,
    pub seconds: f64,
    /// Real tokens per second through forward, backward and the update.
    pub tokens_per_second: f64,
}

/// The sequences of a batch of samples with their group advantages.
pub(crate) struct Prepared {
    pub(crate) sequences: Vec<Sequence>,
    pub(crate) rewards: Vec<f64>,
    pub(crate) advantages: GroupAdvantages,
    pub(crate) n_dropped: usize,
}

pub(crate) fn prepare(samples: &[Sample], config: &TrainConfig) -> Result<Prepared> {
    if samples.is_empty() {
        return Err(Error::Input("a step needs at least one sample".into()));
    }
    let rewards: Vec<f64> = samples.iter().map(|s| s.reward).collect();
    if let Some(bad) = rewards.iter().position(|r| !r.is_finite()) {
        return Err(Error::Input(format!(
            "sample {bad} has a non-finite reward {}",
            rewards[bad]
        )));
    }
    let groups: Vec<&str> = samples.iter().map(|s| s.group.as_str()).collect();
    let loss = &config.loss;
    let advantages = group_advantages(&rewards, &groups, loss.algorithm, loss.advantage_eps);
    let drop = loss.zero_variance == ZeroVariance::Drop;
    let mut sequences = Vec::new();
    let mut n_dropped = 0;
    for (i, sample) in samples.iter().enumerate() {
        if drop && advantages.zero_variance[i] {
            n_dropped += 1;
            continue;
        }
        for segment in &sample.segments {
            sequences.push(Sequence {
                tokens: segment.token_ids.clone(),
                loss_mask: segment.loss_mask.clone(),
                rollout_logprobs: segment.logprobs.clone(),
                old_logprobs: None,
                advantage: advantages.advantages[i],
                sample: i,
            });
        }
    }
    Ok(Prepared {
        sequences,
        rewards,
        advantages,
        n_dropped,
    })
}

/// Fills the sample-level metrics (groups over the whole batch; per-skill statistics over the
/// samples in `range`).
pub(crate) fn sample_metrics(
    m: &mut StepMetrics,
    samples: &[Sample],
    prepared: &Prepared,
    range: std::ops::Range<usize>,
) {
    let adv = &prepared.advantages;
    m.n_samples = range.len();
    m.n_groups = adv.n_groups;
    m.n_zero_variance_groups = adv.n_zero_variance_groups;
    m.n_dropped_samples = prepared.n_dropped;
    let mut trained_per_sample = vec![0usize; samples.len()];
    for s in &prepared.sequences {
        trained_per_sample[s.sample] += s.n_trained();
    }
    let mut by_skill: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for i in range {
        by_skill
            .entry(samples[i].skill.as_str())
            .or_default()
            .push(i);
    }
    for (skill, indices) in by_skill {
        let r: Vec<f64> = indices.iter().map(|&i| prepared.rewards[i]).collect();
        let a: Vec<f64> = indices.iter().map(|&i| adv.advantages[i]).collect();
        let (reward_mean, reward_std) = mean_std(&r);
        let (advantage_mean, advantage_std) = mean_std(&a);
        m.per_skill.insert(
            skill.to_string(),
            SkillMetrics {
                n_samples: indices.len(),
                reward_mean,
                reward_std,
                advantage_mean,
                advantage_std,
                n_zero_variance_samples: indices.iter().filter(|&&i| adv.zero_variance[i]).count(),
                n_trained_tokens: indices.iter().map(|&i| trained_per_sample[i]).sum(),
            },
        );
    }
}
