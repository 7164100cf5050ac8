//! `atomskill train --config run.toml`: joint GRPO over the skill mixture.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rl::{RunConfig, TrainEvent};

#[derive(Args)]
pub struct TrainArgs {
    /// The run's TOML config (every field is documented in `crates/rl/src/config.rs`).
    #[arg(long)]
    config: PathBuf,
    /// The run directory: rollouts.jsonl, metrics.jsonl, checkpoint/, model/, report.html.
    #[arg(long)]
    out: PathBuf,
    /// Continue from OUT/checkpoint.
    #[arg(long)]
    resume: bool,
    /// Override `steps`.
    #[arg(long)]
    steps: Option<u64>,
    /// Override `model`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Override `tasks`.
    #[arg(long)]
    tasks: Option<PathBuf>,
    /// Override `seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Override `device` (cpu, cuda, cuda:N).
    #[arg(long, value_parser = crate::flags::device)]
    device: Option<String>,
}

pub async fn run_train(home: &Path, args: TrainArgs) -> Result<ExitCode> {
    let mut config = RunConfig::load(&args.config)?;
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(model) = args.model {
        config.model = model;
    }
    if let Some(tasks) = args.tasks {
        config.tasks = tasks;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(device) = args.device {
        config.device = device;
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let instances = recipe::load_instances(&config.tasks, &[], None)?;
    let rollout = recipe::Workbench::open(home)?.rollout(
        &instances,
        &config.agent,
        &recipe::quickstart::grpo_sampling(&config),
    )?;
    let bar = ProgressBar::new(config.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix("steps");
    let handle = bar.clone();
    let on_event = move |event: TrainEvent| match event {
        TrainEvent::Started { from_step, .. } => handle.set_position(from_step),
        TrainEvent::Step(record) => {
            let reward: Vec<String> = record
                .per_skill
                .iter()
                .map(|(skill, s)| format!("{skill} {:.2}", s.reward_mean))
                .collect();
            handle.set_message(format!(
                "loss {:.4} | {} | stale dropped {}",
                record.trainer.loss,
                reward.join(", "),
                record.stale_groups_dropped
            ));
            handle.inc(1);
        }
    };
    let history = rl::run_training(
        &config,
        rollout,
        instances,
        &args.out,
        args.resume,
        &on_event,
    )
    .await
    .context("training")?;
    bar.finish();
    println!(
        "{} steps run; model: {}  metrics: {}  report: {}",
        history.len(),
        args.out.join("model").display(),
        args.out.join("metrics.jsonl").display(),
        args.out.join("report.html").display()
    );
    Ok(ExitCode::SUCCESS)
}
