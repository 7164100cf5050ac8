//! `atomskill bench train`: tokens per second of one GRPO trainer step (forward, chunked token
//! log-probs, clipped loss, backward, clipping, AdamW) against PyTorch eager doing the same step
//! on the same checkpoint, batch and loss (`scripts/bench/torch_train.py`, whose docstring
//! defines the batch). Rounds alternate the two sides so machine load hits both alike.
//!
//! With `--lora-rank`, the baseline is instead full fine-tuning in the same process: rounds
//! alternate a full trainer and a LoRA trainer on the same checkpoint and batch. Memory is only
//! comparable between processes (the allocator keeps what a step freed), so `--side full` or
//! `--side lora` builds one trainer alone and reports the process's peak resident memory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use model::Device;
use train::{AdamWConfig, Algorithm, LoraConfig, LossConfig, Sample, TrainConfig, Trainer};

use crate::median;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The checkpoint (e.g. from `atomskill model init`).
    #[arg(long)]
    pub model: PathBuf,
    /// A Python with torch and transformers (`scripts/bench/torch_venv.sh` makes one).
    #[arg(long)]
    pub torch_python: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Timed steps per side per round (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// PyTorch's intra-op threads (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    pub torch_threads: usize,
    /// Compare a LoRA trainer of this rank (alpha = 2 × rank, all seven projections) with full
    /// fine-tuning instead of with PyTorch.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// With --lora-rank: `both` (timed side by side), or `full` / `lora` alone (for the peak
    /// resident memory of a process that holds only that trainer).
    #[arg(long, default_value = "both")]
    pub side: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainBenchError {
    #[error(transparent)]
    Train(#[from] train::Error),
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error("PyTorch baseline: {0}")]
    Baseline(String),
}

/// The batch of `scripts/bench/torch_train.py`: half prompt, half trained; rewards
/// `(r * 37 % 5) / 4` in groups of 4 rows.
fn samples(batch: usize, seq: usize, vocab: usize) -> Vec<Sample> {
    (0..batch)
        .map(|r| {
            let token_ids: Vec<u32> = (0..seq)
                .map(|j| 1 + (((r * seq + j) * 7919 + 13) % (vocab - 1)) as u32)
                .collect();
            let loss_mask: Vec<u8> = (0..seq).map(|j| u8::from(j >= seq / 2)).collect();
            Sample {
                segments: vec![agent::TokenSegment {
                    logprobs: vec![0.0; seq],
                    token_ids,
                    loss_mask,
                    first_step: 0,
                    last_step: 0,
                }],
                reward: (r * 37 % 5) as f64 / 4.0,
                group: format!("g{}", r / 4),
                skill: "bench".into(),
            }
        })
        .collect()
}

fn torch_step_seconds(
    python: &Path,
    options: &Options,
    vocab: usize,
) -> Result<(f64, f64, f64), TrainBenchError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/torch_train.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&options.model)
        .args(["--batch", &options.batch.to_string()])
        .args(["--seq", &options.seq.to_string()])
        .args(["--vocab", &vocab.to_string()])
        .args(["--repeats", &options.repeats.to_string()])
        .args(["--threads", &options.torch_threads.to_string()])
        .output()
        .map_err(|e| TrainBenchError::Baseline(format!("{}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(TrainBenchError::Baseline(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| TrainBenchError::Baseline(format!("bad output {text:?}: {e}")))?;
    match (
        value["median_s"].as_f64(),
        value["min_s"].as_f64(),
        value["first_grad_norm"].as_f64(),
    ) {
        (Some(median), Some(min), Some(loss)) => Ok((median, min, loss)),
        _ => Err(TrainBenchError::Baseline(format!(
            "no median_s/min_s/first_grad_norm in {text}"
        ))),
    }
}

fn bench_config(options: &Options) -> TrainConfig {
    TrainConfig {
        loss: LossConfig {
            tis_cap: None,
            ..LossConfig::for_algorithm(Algorithm::Grpo)
        },
        optimizer: AdamWConfig {
            lr: 1e-5,
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        max_grad_norm: Some(1.0),
        micro_batch_tokens: options.batch * options.seq,
        ..TrainConfig::default()
    }
}

pub fn run(options: &Options) -> Result<(), TrainBenchError> {
    if let Some(rank) = options.lora_rank {
        return run_lora(options, rank);
    }
    let config = bench_config(options);
    let mut trainer = Trainer::new(&options.model, config, &Device::Cpu)?;
    let spec = trainer.model().spec().clone();
    let batch = samples(options.batch, options.seq, spec.vocab_size);
    let n_tokens = (options.batch * options.seq) as f64;
    println!(
        "model: {} parameters, vocabulary {}, {} layers, hidden {}; batch {}x{} ({} trained tokens)",
        spec.n_params(),
        spec.vocab_size,
        spec.num_hidden_layers,
        spec.hidden_size,
        options.batch,
        options.seq,
        options.batch * (options.seq - options.seq / 2)
    );
    let first = trainer.step(&batch)?;
    println!("first-step gradient norm: candle {:.9}", first.grad_norm);
    let (mut ours, mut theirs, mut ours_min, mut theirs_min) =
        (Vec::new(), Vec::new(), f64::MAX, f64::MAX);
    for round in 0..options.rounds {
        let mut times = Vec::new();
        for _ in 0..options.repeats {
            let start = Instant::now();
            trainer.step(&batch)?;
            times.push(start.elapsed().as_secs_f64());
        }
        ours_min = times.iter().copied().fold(ours_min, f64::min);
        let m = median(&mut times);
        ours.push(m);
        let line = format!(
            "round {round}: candle step {:.1} ms ({:.0} tok/s)",
            m * 1e3,
            n_tokens / m
        );
        match &options.torch_python {
            Some(python) => {
                let (median_s, min_s, torch_norm) =
                    torch_step_seconds(python, options, spec.vocab_size)?;
                if round == 0 {
                    println!("first-step gradient norm: PyTorch {torch_norm:.9}");
                }
                theirs.push(median_s);
                theirs_min = theirs_min.min(min_s);
                println!(
                    "{line}; PyTorch step {:.1} ms ({:.0} tok/s)",
                    median_s * 1e3,
                    n_tokens / median_s
                );
            }
            None => println!("{line}"),
        }
    }
    let ours_median = median(&mut ours);
    println!(
        "candle: median step {:.1} ms = {:.0} tokens/s (fastest {:.1} ms)",
        ours_median * 1e3,
        n_tokens / ours_median,
        ours_min * 1e3
    );
    if !theirs.is_empty() {
        let theirs_median = median(&mut theirs);
        println!(
            "PyTorch eager: median step {:.1} ms = {:.0} tokens/s (fastest {:.1} ms)",
            theirs_median * 1e3,
            n_tokens / theirs_median,
            theirs_min * 1e3
        );
        println!(
            "speed ratio candle / PyTorch: {:.2}x on medians, {:.2}x on the fastest steps",
            theirs_median / ours_median,
            theirs_min / ours_min
        );
    }
    Ok(())
}

/// The process's peak resident memory (`VmHWM`), in bytes.
fn peak_resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

struct Side {
    name: &'static str,
    trainer: Trainer,
    medians: Vec<f64>,
    fastest: f64,
}

impl Side {
    fn new(name: &'static str, model: &Path, config: TrainConfig) -> Result<Self, TrainBenchError> {
        Ok(Self {
            name,
            trainer: Trainer::new(model, config, &Device::Cpu)?,
            medians: Vec::new(),
            fastest: f64::MAX,
        })
    }

    fn n_trainable(&self) -> usize {
        self.trainer
            .vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// `repeats` timed steps; returns their median.
    fn round(&mut self, batch: &[Sample], repeats: usize) -> Result<f64, TrainBenchError> {
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let start = Instant::now();
            self.trainer.step(batch)?;
            times.push(start.elapsed().as_secs_f64());
        }
        self.fastest = times.iter().copied().fold(self.fastest, f64::min);
        let m = median(&mut times);
        self.medians.push(m);
        Ok(m)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Full fine-tuning against LoRA of `rank` on the same model and batch, rounds alternating.
fn run_lora(options: &Options, rank: usize) -> Result<(), TrainBenchError> {
    let full_config = bench_config(options);
    let lora_config = TrainConfig {
        lora: Some(LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            ..LoraConfig::default()
        }),
        ..full_config.clone()
    };
    if !matches!(options.side.as_str(), "both" | "full" | "lora") {
        return Err(TrainBenchError::Baseline(format!(
            "--side {} is not both, full or lora",
            options.side
        )));
    }
    let mut sides = Vec::new();
    if options.side != "lora" {
        sides.push(Side::new("full", &options.model, full_config)?);
    }
    if options.side != "full" {
        sides.push(Side::new("LoRA", &options.model, lora_config)?);
    }
    let spec = sides[0].trainer.model().spec().clone();
    let batch = samples(options.batch, options.seq, spec.vocab_size);
    let n_tokens = (options.batch * options.seq) as f64;
    println!(
        "model: {} parameters, {} layers, hidden {}; batch {}x{}; LoRA rank {rank}, alpha {}",
        spec.n_params(),
        spec.num_hidden_layers,
        spec.hidden_size,
        options.batch,
        options.seq,
        2 * rank
    );
    for side in &mut sides {
        let first = side.trainer.step(&batch)?;
        println!(
            "{}: {} trainable parameters, optimiser moments {:.1} MiB; first-step gradient norm \
             {:.6}",
            side.name,
            side.n_trainable(),
            mib(2 * 4 * side.n_trainable() as u64),
            first.grad_norm
        );
    }
    for round in 0..options.rounds {
        let mut line = format!("round {round}:");
        for side in &mut sides {
            let m = side.round(&batch, options.repeats)?;
            line += &format!(
                " {} step {:.1} ms ({:.0} tok/s);",
                side.name,
                m * 1e3,
                n_tokens / m
            );
        }
        println!("{line}");
    }
    let mut summary = Vec::new();
    for side in &mut sides {
        let m = median(&mut side.medians);
        println!(
            "{}: median step {:.1} ms = {:.0} tokens/s (fastest {:.1} ms)",
            side.name,
            m * 1e3,
            n_tokens / m,
            side.fastest * 1e3,
        );
        summary.push((m, side.fastest));
    }
    if let [full, lora] = summary[..] {
        println!(
            "speed ratio LoRA / full: {:.2}x on medians, {:.2}x on the fastest steps",
            full.0 / lora.0,
            full.1 / lora.1
        );
    } else {
        println!(
            "peak resident memory of this process ({} only): {:.1} MiB",
            options.side,
            mib(peak_resident_bytes())
        );
    }
    Ok(())
}
