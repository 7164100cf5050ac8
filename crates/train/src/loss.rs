//! The token-level objectives, on per-token log-probs already computed by the model: the clipped
//! policy-gradient loss of the GRPO family (with optional k3 KL to a reference and truncated
//! importance sampling against the rollout engine) and the masked NLL of SFT.
//!
//! Every loss here is a SUM over the trained tokens of a micro-batch divided by a normaliser the
//! caller passes in: the trained-token count of the whole batch. Summing the gradients of the
//! micro-batches then gives exactly the gradient of the whole batch, however it was split. Never
//! normalise by a micro-batch's own count here.

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::config::LossConfig;
use crate::{Error, Result};

/// The log-ratio is clamped to `±MAX_LOG_RATIO` before `exp`, so a very stale token cannot
/// overflow to infinity (and `inf · 0` to NaN). Beyond this range the token is clipped anyway
/// or its gradient is meaningless.
const MAX_LOG_RATIO: f64 = 20.0;

/// Per-token inputs of the policy loss, each `[rows, positions]` and aligned with the log-probs
/// (position `t` is the prediction of token `t + 1`).
#[derive(Debug, Clone)]
pub struct TokenInputs {
    /// 1 where the token is trained, 0 elsewhere (prompt, observations, padding).
    pub loss_mask: Tensor,
    pub advantages: Tensor,
    /// π_old of the ratio; `None` means the current log-probs, detached (one optimiser update
    /// per batch: the ratio is 1 in value and the gradient is the plain policy gradient).
    pub old_logprobs: Option<Tensor>,
    /// The rollout engine's log-probs, for truncated importance sampling.
    pub rollout_logprobs: Option<Tensor>,
    /// The reference model's log-probs, for the KL term.
    pub ref_logprobs: Option<Tensor>,
}

/// Sums over the trained tokens of a micro-batch (add them up across micro-batches, then divide
/// by `n_tokens` for means).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LossSums {
    pub n_tokens: f64,
    /// Σ log p of the trained tokens (current policy).
    pub logprob: f64,
    /// Tokens whose ratio was clipped (the gradient is zero there).
    pub clipped: f64,
    /// Σ k3 KL to the reference (0 without one).
    pub kl: f64,
    /// Σ importance weight (n_tokens when TIS is off).
    pub tis_weight: f64,
    /// Tokens whose importance weight hit the cap.
    pub tis_capped: f64,
    /// Σ (logp_trainer_old − logp_rollout): the mismatch between trainer and rollout engine.
    pub rollout_mismatch: f64,
}

impl LossSums {
    pub fn add(&mut self, other: &LossSums) {
        self.n_tokens += other.n_tokens;
        self.logprob += other.logprob;
        self.clipped += other.clipped;
        self.kl += other.kl;
        self.tis_weight += other.tis_weight;
        self.tis_capped += other.tis_capped;
        self.rollout_mismatch += other.rollout_mismatch;
    }
}

fn check_shape(name: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        return Err(Error::Input(format!(
            "{name} has shape {:?}, log-probs have {dims:?}",
            t.dims()
        )));
    }
    Ok(())
}

fn masked_sum(values: &Tensor, mask: &Tensor) -> Result<f64> {
    Ok((values * mask)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

/// The clipped policy-gradient loss: per trained token
/// `w · −A · surrogate(r) + β · k3`, summed and divided by `normaliser`, where
/// `r = exp(logp − logp_old)`, `surrogate(r) = min(r·A, clip(r, 1−ε_low, 1+ε_high)·A) / A`,
/// `w = min(exp(logp_old − logp_rollout), cap)` (1 without TIS) and
/// `k3 = exp(ref − logp) − (ref − logp) − 1`.
///
/// A clipped token contributes its (constant) clipped value and no gradient; the min is written
/// with an explicit clip mask so that ties get the unclipped gradient rather than candle's half.
pub fn policy_loss(
    logprobs: &Tensor,
    inputs: &TokenInputs,
    config: &LossConfig,
    normaliser: f64,
) -> Result<(Tensor, LossSums)> {
    if normaliser.is_nan() || normaliser <= 0.0 {
        return Err(Error::Input(format!(
            "the loss normaliser must be positive, got {normaliser}"
        )));
    }
    let dims = logprobs.dims().to_vec();
    let dtype = logprobs.dtype();
    let mask = inputs.loss_mask.to_dtype(dtype)?;
    check_shape("loss_mask", &mask, &dims)?;
    let advantages = inputs.advantages.to_dtype(dtype)?;
    check_shape("advantages", &advantages, &dims)?;
    let old = match &inputs.old_logprobs {
        Some(t) => {
            check_shape("old_logprobs", t, &dims)?;
            t.to_dtype(dtype)?.detach()
        }
        None => logprobs.detach(),
    };
    let log_ratio = ((logprobs - &old)? * &mask)?.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)?;
    let ratio = log_ratio.exp()?;
    let ratio_value = ratio.detach();
    let (low, high) = (1.0 - config.clip_low, 1.0 + config.clip_high);
    let positive = advantages.gt(0.0)?.to_dtype(dtype)?;
    let negative = advantages.lt(0.0)?.to_dtype(dtype)?;
    let clipped = ((positive * ratio_value.gt(high)?.to_dtype(dtype)?)?
        + (negative * ratio_value.lt(low)?.to_dtype(dtype)?)?)?;
    let unclipped = clipped.affine(-1.0, 1.0)?;
    let surrogate = ((ratio * &unclipped)? + (ratio_value.clamp(low, high)? * &clipped)?)?;
    let mut token_loss = (advantages.neg()? * surrogate)?;

    let mut sums = LossSums {
        n_tokens: masked_sum(&mask, &mask)?,
        logprob: masked_sum(&logprobs.detach(), &mask)?,
        clipped: masked_sum(&clipped, &mask)?,
        ..LossSums::default()
    };
    match (config.tis_cap, &inputs.rollout_logprobs) {
        (Some(cap), Some(rollout)) => {
            check_shape("rollout_logprobs", rollout, &dims)?;
            let mismatch = ((&old - rollout.to_dtype(dtype)?)? * &mask)?;
            let raw = mismatch.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)?.exp()?;
            let weight = raw.minimum(cap)?;
            sums.tis_weight = masked_sum(&weight, &mask)?;
            sums.tis_capped = masked_sum(&raw.ge(cap)?.to_dtype(dtype)?, &mask)?;
            sums.rollout_mismatch = masked_sum(&mismatch, &mask)?;
            token_loss = (token_loss * weight)?;
        }
        (_, rollout) => {
            sums.tis_weight = sums.n_tokens;
            if let Some(rollout) = rollout {
                check_shape("rollout_logprobs", rollout, &dims)?;
                let mismatch = ((&old - rollout.to_dtype(dtype)?)? * &mask)?;
                sums.rollout_mismatch = masked_sum(&mismatch, &mask)?;
            }
        }
    }
    if config.kl_beta > 0.0 {
        let reference = inputs.ref_logprobs.as_ref().ok_or_else(|| {
            Error::Input("kl_beta > 0 but no reference log-probs were given".into())
        })?;
        check_shape("ref_logprobs", reference, &dims)?;
        let diff = ((reference.to_dtype(dtype)?.detach() - logprobs)? * &mask)?
            .clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)?;
        let kl = ((diff.exp()? - &diff)? - 1.0)?;
        sums.kl = masked_sum(&kl.detach(), &mask)?;
        token_loss = (token_loss + (kl * config.kl_beta)?)?;
    }
    let loss = ((token_loss * &mask)?.sum_all()? / normaliser)?;
    Ok((loss, sums))
}

/// The SFT loss: `−Σ mask · logp / normaliser`.
pub fn sft_loss(
    logprobs: &Tensor,
    loss_mask: &Tensor,
    normaliser: f64,
) -> Result<(Tensor, LossSums)> {
    if normaliser.is_nan() || normaliser <= 0.0 {
        return Err(Error::Input(format!(
            "the loss normaliser must be positive, got {normaliser}"
        )));
    }
    let mask = loss_mask.to_dtype(logprobs.dtype())?;
    check_shape("loss_mask", &mask, logprobs.dims())?;
    let loss = ((logprobs * &mask)?.sum_all()?.neg()? / normaliser)?;
    let n_tokens = masked_sum(&mask, &mask)?;
    let sums = LossSums {
        n_tokens,
        logprob: masked_sum(&logprobs.detach(), &mask)?,
        tis_weight: n_tokens,
        ..LossSums::default()
    };
    Ok((loss, sums))
}
