//! Training configuration: which policy-gradient variant, its clipping, KL and importance
//! correction, the optimiser and its schedule, micro-batching, and optional LoRA. Every field has a default and a
//! `validate` that says what is wrong; configs are plain data (serde) so a run records them.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The policy-gradient variant. All three use the same token-level clipped objective and the
/// same global-token normalisation; they differ in the advantage and the default clip range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Advantage `(r - mean) / (std + eps)` within the group (std with Bessel's correction, as
    /// `torch.std`).
    Grpo,
    /// Advantage `r - mean`: no std normalisation (Dr. GRPO).
    DrGrpo,
    /// GRPO advantages with clip-higher (`clip_high > clip_low`) and token-mean loss (DAPO).
    Dapo,
}

/// What to do with a group whose rewards are all equal (every advantage is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroVariance {
    /// Leave its samples out of the step (they neither count in the token normaliser nor pull
    /// the KL term). Refilling the batch is the rollout side's job.
    Drop,
    /// Keep them: they add tokens to the normaliser and, with a KL term, a gradient.
    Keep,
}

/// The clipped policy-gradient loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub algorithm: Algorithm,
    /// The ratio is clipped to `[1 - clip_low, 1 + clip_high]`.
    pub clip_low: f64,
    pub clip_high: f64,
    /// Added to the group std (GRPO, DAPO).
    pub advantage_eps: f64,
    /// Coefficient of the k3 KL estimate to the reference model; 0 turns it off (and the
    /// reference model is not loaded).
    pub kl_beta: f64,
    /// Truncated importance sampling: each token's loss is weighted by
    /// `min(exp(logp_trainer_old - logp_rollout), cap)`; `None` turns it off (rollout and
    /// trainer assumed to be the same engine).
    pub tis_cap: Option<f64>,
    pub zero_variance: ZeroVariance,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::for_algorithm(Algorithm::Grpo)
    }
}

impl LossConfig {
    /// The usual settings of each variant: clip 0.2/0.2, DAPO 0.2/0.28; no KL; TIS cap 2.
    pub fn for_algorithm(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            clip_low: 0.2,
            clip_high: if algorithm == Algorithm::Dapo {
                0.28
            } else {
                0.2
            },
            advantage_eps: 1e-6,
            kl_beta: 0.0,
            tis_cap: Some(2.0),
            zero_variance: if algorithm == Algorithm::Dapo {
                ZeroVariance::Drop
            } else {
                ZeroVariance::Keep
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.clip_low) {
            return Err(Error::Config(format!(
                "loss.clip_low must be in [0, 1), got {}",
                self.clip_low
            )));
        }
        if !(self.clip_high >= 0.0 && self.clip_high.is_finite()) {
            return Err(Error::Config(format!(
                "loss.clip_high must be a non-negative number, got {}",
                self.clip_high
            )));
        }
        if self.advantage_eps.is_nan() || self.advantage_eps < 0.0 {
            return Err(Error::Config("loss.advantage_eps must be >= 0".into()));
        }
        if !(self.kl_beta >= 0.0 && self.kl_beta.is_finite()) {
            return Err(Error::Config(format!(
                "loss.kl_beta must be >= 0, got {}",
                self.kl_beta
            )));
        }
        if let Some(cap) = self.tis_cap {
            if cap.is_nan() || cap <= 0.0 {
                return Err(Error::Config(format!(
                    "loss.tis_cap must be positive (or absent), got {cap}"
                )));
            }
        }
        Ok(())
    }
}

/// AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW` update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied only to matrices (rank >= 2): norms and biases are
    /// never decayed.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The learning-rate schedule after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decay {
    Constant,
    /// Cosine from the peak down to `min_ratio * peak` at `total_steps`.
    Cosine {
        min_ratio: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Steps of linear warm-up: step `s` (0-based) uses `peak * (s + 1) / warmup_steps`.
    pub warmup_steps: u64,
    /// The length of the run (for the cosine decay).
    pub total_steps: u64,
    pub decay: Decay,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            warmup_steps: 0,
            total_steps: 1000,
            decay: Decay::Constant,
        }
    }
}

impl Schedule {
    /// The learning rate of optimiser step `step` (0-based) for peak `peak`.
    pub fn lr(&self, peak: f64, step: u64) -> f64 {
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.decay {
            Decay::Constant => peak,
            Decay::Cosine { min_ratio } => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let floor = peak * min_ratio;
                floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// The dtype of trainable weights and of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// For gradient checks.
    F64,
    /// Mixed precision (for GPUs): f32 master weights (the variables, AdamW and checkpoints),
    /// the forward and backward passes in bf16 on a copy cast from them at every micro-batch,
    /// whose gradients flow back to the f32 variables; norms, softmax and log-probabilities
    /// stay f32. With LoRA, the frozen base is cast to bf16 once and the adapters (f32
    /// variables) at every step.
    Bf16,
}

impl Precision {
    /// The dtype of the variables, the optimiser state and the checkpoints.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 | Precision::Bf16 => candle_core::DType::F32,
            Precision::F64 => candle_core::DType::F64,
        }
    }

    /// The dtype the loss's forward and backward passes run in.
    pub fn compute_dtype(self) -> candle_core::DType {
        match self {
            Precision::Bf16 => candle_core::DType::BF16,
            other => other.dtype(),
        }
    }
}

/// LoRA: the base weights stay frozen (no gradient, not in the optimiser) and only low-rank
/// adapters `A` (rank × in, Kaiming-uniform from `seed`) and `B` (out × rank, zeros) on the
/// `targets` are trained; each adapted layer computes `x Wᵀ + b + (alpha / rank) · (x Aᵀ) Bᵀ`.
///
/// There is no adapter dropout: the trainer owns no randomness (a step is a function of weights,
/// optimiser state and batch), so `dropout` is not a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// The adapters' rank `r` (at least 1).
    pub rank: usize,
    /// `lora_alpha`: the adapter output is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Which linear layers of every decoder block get an adapter: any of `q_proj`, `k_proj`,
    /// `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj` (the default: all seven).
    pub targets: Vec<String>,
    /// Seed of the adapters' `A` matrices (each from its own ChaCha8 stream, keyed by name).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: model::lora::TARGETS.iter().map(|t| t.to_string()).collect(),
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// The model crate's view of it (rank, alpha, targets).
    pub fn spec(&self) -> model::lora::LoraSpec {
        model::lora::LoraSpec {
            rank: self.rank,
            alpha: self.alpha,
            targets: self.targets.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.spec().validate().map_err(|e| match e {
            model::Error::Config(message) => Error::Config(message),
            other => Error::Model(other),
        })
    }
}

/// Everything a [`crate::Trainer`] needs besides the model and the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub loss: LossConfig,
    pub optimizer: AdamWConfig,
    pub schedule: Schedule,
    /// Global gradient-norm clipping; `None` turns it off.
    pub max_grad_norm: Option<f64>,
    /// Most padded tokens (rows x longest row) in one micro-batch; a longer sequence still goes
    /// alone.
    pub micro_batch_tokens: usize,
    /// Positions per chunk when computing log-probs from logits.
    pub logprob_chunk: usize,
    /// Sequences longer than this are cut (the cut is counted in the step metrics); `None` uses
    /// the model's context length.
    pub max_seq_len: Option<usize>,
    pub precision: Precision,
    /// Train LoRA adapters on frozen base weights instead of every weight; `None` (the default)
    /// is full fine-tuning.
    pub lora: Option<LoraConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            loss: LossConfig::default(),
            optimizer: AdamWConfig::default(),
            schedule: Schedule::default(),
            max_grad_norm: Some(1.0),
            micro_batch_tokens: 8192,
            logprob_chunk: 256,
            max_seq_len: None,
            precision: Precision::F32,
            lora: None,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.loss.validate()?;
        let o = &self.optimizer;
        if !(o.lr >= 0.0 && o.lr.is_finite()) {
            return Err(Error::Config(format!(
                "optimizer.lr must be >= 0, got {}",
                o.lr
            )));
        }
        for (name, beta) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::Config(format!(
                    "optimizer.{name} must be in [0, 1), got {beta}"
                )));
            }
        }
        if o.eps.is_nan() || o.eps <= 0.0 {
            return Err(Error::Config("optimizer.eps must be positive".into()));
        }
        if o.weight_decay.is_nan() || o.weight_decay < 0.0 {
            return Err(Error::Config("optimizer.weight_decay must be >= 0".into()));
        }
        if let Decay::Cosine { min_ratio } = self.schedule.decay {
            if !(0.0..=1.0).contains(&min_ratio) {
                return Err(Error::Config(format!(
                    "schedule.decay.min_ratio must be in [0, 1], got {min_ratio}"
                )));
            }
        }
        if let Some(n) = self.max_grad_norm {
            if n.is_nan() || n <= 0.0 {
                return Err(Error::Config(format!(
                    "max_grad_norm must be positive (or absent), got {n}"
                )));
            }
        }
        if self.micro_batch_tokens == 0 || self.logprob_chunk == 0 {
            return Err(Error::Config(
                "micro_batch_tokens and logprob_chunk must be at least 1".into(),
            ));
        }
        if self.max_seq_len.is_some_and(|n| n < 2) {
            return Err(Error::Config("max_seq_len must be at least 2".into()));
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
        }
        Ok(())
    }
}
