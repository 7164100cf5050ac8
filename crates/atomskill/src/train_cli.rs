//! `atomskill sft`: flags to a [`recipe::SftConfig`], with a progress bar.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct SftArgs {
    /// A trajectory file (JSONL) or a directory of them: bare `Trajectory` records or
    /// evaluation records `{trajectory, verdict: {reward, ..}}`.
    #[arg(long)]
    trajectories: PathBuf,
    /// The HF checkpoint directory to start from (config.json, safetensors, tokenizer).
    #[arg(long)]
    model: PathBuf,
    /// Output: checkpoint/ (resumable), model/ (final weights), metrics.jsonl, data.json.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Cosine decay to this fraction of the peak at the last step (omit for a constant rate).
    #[arg(long)]
    cosine_min_ratio: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm clipping (0 turns it off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Real tokens per optimiser step.
    #[arg(long, default_value_t = 8192)]
    batch_tokens: usize,
    /// Most padded tokens per forward/backward pass (gradients are accumulated across them).
    #[arg(long, default_value_t = 4096)]
    micro_batch_tokens: usize,
    /// Sequences are cut to this many tokens (default: the model's context).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Keep trajectories whose record's reward is at least this (records without a reward are
    /// kept when their outcome is `submitted`).
    #[arg(long, default_value_t = 1.0)]
    min_reward: f64,
    /// Train on every token of a conversation (system prompt, tool descriptions, tool output),
    /// not only the assistant's turns: for a model trained from scratch, which must learn the
    /// language of the prompts before it can answer them (axolotl's `train_on_inputs`).
    #[arg(long)]
    train_on_prompt: bool,
    /// Seed of the data order (recorded in the checkpoint).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
    /// Continue from OUT/checkpoint if it exists.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = crate::flags::device)]
    device: String,
    /// Train LoRA adapters of this rank on frozen base weights instead of every weight (the
    /// outputs then also hold a PEFT adapter in adapter/). Omit for full fine-tuning.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA's alpha: adapter outputs are scaled by alpha / rank (needs --lora-rank).
    #[arg(long, default_value_t = 16.0, requires = "lora_rank")]
    lora_alpha: f64,
    /// The linear layers that get adapters, comma-separated (needs --lora-rank).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        requires = "lora_rank"
    )]
    lora_targets: Vec<String>,
    /// Mixed precision: f32 master weights and optimiser, forward and backward in bf16 (for
    /// GPUs; not with --lora-rank yet).
    #[arg(long, conflicts_with = "lora_rank")]
    bf16: bool,
}

impl SftArgs {
    fn config(&self) -> recipe::SftConfig {
        recipe::SftConfig {
            trajectories: self.trajectories.clone(),
            model: self.model.clone(),
            out: self.out.clone(),
            steps: self.steps,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            cosine_min_ratio: self.cosine_min_ratio,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            batch_tokens: self.batch_tokens,
            micro_batch_tokens: self.micro_batch_tokens,
            max_seq_len: self.max_seq_len,
            min_reward: self.min_reward,
            train_on_prompt: self.train_on_prompt,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
            device: self.device.clone(),
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            lora_targets: self.lora_targets.clone(),
            bf16: self.bf16,
        }
    }
}

pub fn run_sft(args: SftArgs) -> Result<ExitCode> {
    let config = args.config();
    let bar = ProgressBar::new(args.steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcome = recipe::sft::run_sft(
        &config,
        |data| {
            let s = &data.selection;
            bar.suspend(|| {
                eprintln!(
                    "{} records: {} kept, {} not submitted, {} below reward {} ({} kept without a reward field)",
                    s.n_records, s.n_kept, s.n_not_submitted, s.n_below_min_reward, data.min_reward, s.n_without_reward
                );
                eprintln!(
                    "{} sequences, {} trained tokens ({} trajectories skipped: template not prefix-stable)",
                    data.n_sequences, data.n_trained_tokens, data.n_render_skipped
                );
            });
        },
        |m| {
            bar.set_position(m.step + 1);
            bar.set_message(format!(
                "nll {:.3} | grad {:.2} | {:.0} tok/s",
                -m.mean_logprob, m.grad_norm, m.tokens_per_second
            ));
        },
    )
    .with_context(|| format!("SFT from {}", args.trajectories.display()))?;
    bar.finish();
    eprintln!(
        "done: {} steps; model in {}",
        outcome.steps,
        outcome.model.display()
    );
    Ok(ExitCode::SUCCESS)
}
