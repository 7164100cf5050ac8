//! Supervised fine-tuning as one call: verified trajectories → sequences (`data.json`) →
//! `train::sft::run` with a [`TrainConfig`] built from plain fields.

use std::path::PathBuf;

use train::sft::{self, DataSummary, SftOptions};
use train::StepMetrics;
use train::{AdamWConfig, Decay, LoraConfig, Precision, Schedule, TrainConfig};

use crate::error::Result;

/// An SFT run. [`SftConfig::new`] gives the defaults of `atomskill sft`.
#[derive(Clone, Debug, PartialEq)]
pub struct SftConfig {
    /// A trajectory file (JSONL) or a directory of them.
    pub trajectories: PathBuf,
    /// The HF checkpoint directory to start from.
    pub model: PathBuf,
    /// Output: checkpoint/ (resumable), model/ (final weights), metrics.jsonl, data.json.
    pub out: PathBuf,
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: u64,
    /// Cosine decay to this fraction of the peak at the last step (`None`: constant).
    pub cosine_min_ratio: Option<f64>,
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0 turns it off).
    pub max_grad_norm: f64,
    /// Real tokens per optimiser step.
    pub batch_tokens: usize,
    /// Most padded tokens per forward/backward pass.
    pub micro_batch_tokens: usize,
    /// Sequences are cut to this many tokens (default: the model's context).
    pub max_seq_len: Option<usize>,
    /// Keep trajectories whose reward is at least this.
    pub min_reward: f64,
    /// Train on every token, not only the assistant's turns.
    pub train_on_prompt: bool,
    /// Seed of the data order and of LoRA's initialisation.
    pub seed: u64,
    pub checkpoint_every: u64,
    /// Continue from `out/checkpoint` if it exists.
    pub resume: bool,
    /// cpu, cuda or cuda:N.
    pub device: String,
    /// Train LoRA adapters of this rank instead of every weight.
    pub lora_rank: Option<usize>,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    /// bf16 forward and backward with f32 master weights.
    pub bf16: bool,
}

impl SftConfig {
    pub fn new(trajectories: PathBuf, model: PathBuf, out: PathBuf) -> SftConfig {
        SftConfig {
            trajectories,
            model,
            out,
            steps: 100,
            lr: 1e-5,
            warmup_steps: 0,
            cosine_min_ratio: None,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            batch_tokens: 8192,
            micro_batch_tokens: 4096,
            max_seq_len: None,
            min_reward: 1.0,
            train_on_prompt: false,
            seed: 0,
            checkpoint_every: 50,
            resume: false,
            device: "cpu".into(),
            lora_rank: None,
            lora_alpha: 16.0,
            lora_targets: model::lora::TARGETS.iter().map(|t| t.to_string()).collect(),
            bf16: false,
        }
    }

    /// The trainer's configuration of this run.
    pub fn train_config(&self) -> Result<TrainConfig> {
        let config = TrainConfig {
            optimizer: AdamWConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            schedule: Schedule {
                warmup_steps: self.warmup_steps,
                total_steps: self.steps,
                decay: match self.cosine_min_ratio {
                    Some(min_ratio) => Decay::Cosine { min_ratio },
                    None => Decay::Constant,
                },
            },
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            micro_batch_tokens: self.micro_batch_tokens,
            max_seq_len: self.max_seq_len,
            precision: if self.bf16 {
                Precision::Bf16
            } else {
                Precision::F32
            },
            // The adapters' initial A derives from the run seed, like the data order.
            lora: self.lora_rank.map(|rank| LoraConfig {
                rank,
                alpha: self.lora_alpha,
                targets: self.lora_targets.clone(),
                seed: self.seed,
            }),
            ..TrainConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// What an SFT run did.
#[derive(Clone, Debug)]
pub struct SftOutcome {
    pub data: DataSummary,
    pub steps: u64,
    /// The final weights (HF layout).
    pub model: PathBuf,
}

/// Prepares the data (writing `out/data.json`), then trains; `on_data` sees the data summary
/// before the first step, `on_step` every step's metrics.
pub fn run_sft(
    config: &SftConfig,
    on_data: impl FnOnce(&DataSummary),
    on_step: impl FnMut(&StepMetrics),
) -> Result<SftOutcome> {
    let device = model::open_device(&config.device)?;
    let train_config = config.train_config()?;
    let data = sft::prepare(
        &config.trajectories,
        &config.model,
        config.min_reward,
        config.train_on_prompt,
    )?;
    std::fs::create_dir_all(&config.out).map_err(|e| crate::error::Error::io(&config.out, e))?;
    data.summary.write(&config.out)?;
    on_data(&data.summary);
    let options = SftOptions {
        steps: config.steps,
        batch_tokens: config.batch_tokens,
        seed: config.seed,
        checkpoint_every: config.checkpoint_every,
        config: train_config,
    };
    let trainer = sft::run(
        &config.model,
        &config.out,
        &data.sequences,
        &options,
        config.resume,
        &device,
        on_step,
    )?;
    Ok(SftOutcome {
        data: data.summary,
        steps: trainer.step_count(),
        model: config.out.join("model"),
    })
}
