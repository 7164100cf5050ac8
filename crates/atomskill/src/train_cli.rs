//! `atomskill sft`: flags to a `train::sft::run` call, with a progress bar.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use train::sft::{self, Renderer, SftOptions};
use train::{AdamWConfig, Decay, LoraConfig, Precision, Schedule, TrainConfig};

#[derive(Args)]
pub struct SftArgs {
    /// A trajectory file (JSONL) or a directory of them: bare `agent::Trajectory` records or
    /// evaluation records `{trajectory, verdict: {reward, ..}}`.
    #[arg(long)]
    pub(crate) trajectories: PathBuf,
    /// The HF checkpoint directory to start from (config.json, safetensors, tokenizer).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Output: checkpoint/ (resumable), model/ (final weights), metrics.jsonl, data.json.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 100)]
    pub(crate) steps: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub(crate) lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub(crate) warmup_steps: u64,
    /// Cosine decay to this fraction of the peak at the last step (omit for a constant rate).
    #[arg(long)]
    pub(crate) cosine_min_ratio: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub(crate) weight_decay: f64,
    /// Global gradient-norm clipping (0 turns it off).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) max_grad_norm: f64,
    /// Real tokens per optimiser step.
    #[arg(long, default_value_t = 8192)]
    pub(crate) batch_tokens: usize,
    /// Most padded tokens per forward/backward pass (gradients are accumulated across them).
    #[arg(long, default_value_t = 4096)]
    pub(crate) micro_batch_tokens: usize,
    /// Sequences are cut to this many tokens (default: the model's context).
    #[arg(long)]
    pub(crate) max_seq_len: Option<usize>,
    /// Keep trajectories whose record's reward is at least this (records without a reward are
    /// kept when their outcome is `submitted`).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) min_reward: f64,
    /// Train on every token of a conversation (system prompt, tool descriptions, tool output),
    /// not only the assistant's turns: for a model trained from scratch, which must learn the
    /// language of the prompts before it can answer them (axolotl's `train_on_inputs`).
    #[arg(long)]
    pub(crate) train_on_prompt: bool,
    /// Seed of the data order (recorded in the checkpoint).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[arg(long, default_value_t = 50)]
    pub(crate) checkpoint_every: u64,
    /// Continue from OUT/checkpoint if it exists.
    #[arg(long)]
    pub(crate) resume: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = crate::flags::device)]
    pub(crate) device: String,
    /// Train LoRA adapters of this rank on frozen base weights instead of every weight (the
    /// outputs then also hold a PEFT adapter in adapter/). Omit for full fine-tuning.
    #[arg(long)]
    pub(crate) lora_rank: Option<usize>,
    /// LoRA's alpha: adapter outputs are scaled by alpha / rank (needs --lora-rank).
    #[arg(long, default_value_t = 16.0, requires = "lora_rank")]
    pub(crate) lora_alpha: f64,
    /// The linear layers that get adapters, comma-separated (needs --lora-rank).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        requires = "lora_rank"
    )]
    pub(crate) lora_targets: Vec<String>,
    /// Mixed precision: f32 master weights and optimiser, forward and backward in bf16 (for
    /// GPUs; not with --lora-rank yet).
    #[arg(long, conflicts_with = "lora_rank")]
    pub(crate) bf16: bool,
}

pub fn run_sft(args: SftArgs) -> Result<ExitCode> {
    let device = crate::model_cli::device(&args.device)?;
    let records = sft::read_records(&args.trajectories)
        .with_context(|| format!("reading {}", args.trajectories.display()))?;
    let selection = sft::select(records, args.min_reward);
    eprintln!(
        "{} records: {} kept, {} not submitted, {} below reward {} ({} kept without a reward field)",
        selection.n_records,
        selection.n_kept,
        selection.n_not_submitted,
        selection.n_below_min_reward,
        args.min_reward,
        selection.n_without_reward
    );
    let needs_render = selection.kept.iter().any(|t| t.token_segments.is_empty());
    let renderer = if needs_render {
        Some(Renderer::from_dir(&args.model).context("loading the tokenizer and chat template")?)
    } else {
        None
    };
    let (mut data, n_skipped) = sft::sequences(&selection.kept, renderer.as_ref())?;
    if args.train_on_prompt {
        sft::train_on_every_token(&mut data);
    }
    if data.is_empty() {
        bail!(
            "no training sequences ({} trajectories kept, {n_skipped} could not be rendered)",
            selection.n_kept
        );
    }
    let n_trained: usize = data.iter().map(|s| s.n_trained()).sum();
    eprintln!(
        "{} sequences, {} trained tokens ({n_skipped} trajectories skipped: template not prefix-stable)",
        data.len(),
        n_trained
    );
    std::fs::create_dir_all(&args.out)?;
    let mut summary = serde_json::to_value(&selection)?;
    summary["n_sequences"] = data.len().into();
    summary["n_trained_tokens"] = n_trained.into();
    summary["n_render_skipped"] = n_skipped.into();
    std::fs::write(
        args.out.join("data.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;

    let config = TrainConfig {
        optimizer: AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        schedule: Schedule {
            warmup_steps: args.warmup_steps,
            total_steps: args.steps,
            decay: match args.cosine_min_ratio {
                Some(min_ratio) => Decay::Cosine { min_ratio },
                None => Decay::Constant,
            },
        },
        max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
        micro_batch_tokens: args.micro_batch_tokens,
        max_seq_len: args.max_seq_len,
        precision: if args.bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        },
        // The adapters' initial A derives from the run seed, like the data order.
        lora: args.lora_rank.map(|rank| LoraConfig {
            rank,
            alpha: args.lora_alpha,
            targets: args.lora_targets.clone(),
            seed: args.seed,
        }),
        ..TrainConfig::default()
    };
    config.validate()?;
    let options = SftOptions {
        steps: args.steps,
        batch_tokens: args.batch_tokens,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        config,
    };
    let bar = ProgressBar::new(args.steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let trainer = sft::run(
        &args.model,
        &args.out,
        &data,
        &options,
        args.resume,
        &device,
        |m| {
            bar.set_position(m.step + 1);
            bar.set_message(format!(
                "nll {:.3} | grad {:.2} | {:.0} tok/s",
                -m.mean_logprob, m.grad_norm, m.tokens_per_second
            ));
        },
    )?;
    bar.finish();
    eprintln!(
        "done: {} steps; model in {}",
        trainer.step_count(),
        args.out.join("model").display()
    );
    Ok(ExitCode::SUCCESS)
}
