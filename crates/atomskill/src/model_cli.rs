//! Flags of `atomskill model ...` and `atomskill serve`, and the calls into the model and serve
//! crates. Reads files named on the command line; nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use model::generate::{Engine, EngineConfig, GenerationParams, Request};
use model::init::{init_checkpoint, InitOptions, Size};
use model::sampling::SamplingParams;
use model::{Arch, CausalLm, DType, Device};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a complete HF-style checkpoint with seeded random weights and a trained tokenizer.
    Init(InitArgs),
    /// Print a checkpoint's architecture, shape and parameter count.
    Info(ModelDir),
    /// Generate a reply to one user message (a quick check of a checkpoint).
    Generate(GenerateArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// qwen2, qwen3 or llama.
    #[arg(long)]
    arch: String,
    /// tiny (~4M parameters) or small (~26M).
    #[arg(long, default_value = "tiny")]
    size: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The checkpoint directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Train the tokenizer on the .rs/.py/.md/.txt/.toml files under this directory instead of
    /// the built-in corpus.
    #[arg(long)]
    corpus: Option<PathBuf>,
}

#[derive(Args)]
pub struct ModelDir {
    /// A checkpoint directory.
    #[arg(long)]
    model: PathBuf,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long)]
    model: PathBuf,
    /// The user message.
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The checkpoint directory to serve.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The name clients pass as `model` [default: the directory's name].
    #[arg(long)]
    served_model_name: Option<String>,
    /// Weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = crate::flags::dtype())]
    dtype: String,
    /// cpu, or cuda / cuda:N (needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu", value_parser = crate::flags::device)]
    device: String,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Base seed of requests that do not set one.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn device(name: &str) -> Result<Device> {
    Ok(model::open_device(name)?)
}

pub fn dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => bail!("unknown dtype `{other}` (expected f32, bf16 or f16)"),
    })
}

/// Text files under `dir`, in path order, at most 64 MiB in all.
fn read_corpus(dir: &Path) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("corpus {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() && !entry.file_name().to_string_lossy().starts_with('.') {
                pending.push(path);
            } else if kind.is_file()
                && path.extension().is_some_and(|e| {
                    ["rs", "py", "md", "txt", "toml"].contains(&&*e.to_string_lossy())
                })
            {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut texts = Vec::new();
    let mut total = 0;
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text.len();
        if total > 64 << 20 {
            break;
        }
        texts.push(text);
    }
    if texts.is_empty() {
        bail!("no text files under {}", dir.display());
    }
    Ok(texts)
}

pub fn run_model(command: ModelCommand) -> Result<ExitCode> {
    match command {
        ModelCommand::Init(args) => {
            let arch: Arch = args.arch.parse()?;
            let size: Size = args.size.parse()?;
            let corpus = args.corpus.as_deref().map(read_corpus).transpose()?;
            let summary = init_checkpoint(
                &InitOptions {
                    arch,
                    size,
                    seed: args.seed,
                    corpus,
                },
                &args.out,
            )?;
            println!(
                "wrote {} ({} parameters, vocabulary {}) to {}",
                arch.name(),
                summary.n_params,
                summary.vocab_size,
                args.out.display()
            );
        }
        ModelCommand::Info(args) => {
            let config = model::model::read_config(&args.model)?;
            let arch = Arch::from_config(&config)?;
            let spec = CausalLm::spec_of(&config)?;
            println!("architecture: {}", arch.name());
            println!("parameters: {}", spec.n_params());
            println!("{spec:#?}");
        }
        ModelCommand::Generate(args) => {
            let model = CausalLm::load(&args.model, DType::F32, &Device::Cpu)?;
            let tokenizer = model::tokenizer::Tokenizer::from_dir(&args.model)?;
            let template = model::chat::ChatTemplate::from_dir(&args.model)?;
            let text = template.render(
                &[serde_json::json!({"role": "user", "content": args.prompt})],
                None,
                true,
                &Default::default(),
            )?;
            let prompt = tokenizer.encode(&text)?;
            let eos_token_ids = model::model::eos_token_ids(&args.model)?;
            let mut engine = Engine::new(
                model,
                Some(tokenizer.clone()),
                EngineConfig {
                    eos_token_ids,
                    ..EngineConfig::default()
                },
            );
            let completion = engine
                .generate(vec![Request {
                    id: 0,
                    prompt,
                    params: GenerationParams {
                        sampling: SamplingParams {
                            temperature: args.temperature,
                            seed: args.seed,
                            ..SamplingParams::default()
                        },
                        max_tokens: args.max_tokens,
                        ..GenerationParams::default()
                    },
                }])?
                .remove(0);
            println!("{}", tokenizer.decode(&completion.token_ids, true)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    let options = serve::ServeOptions {
        model_dir: args.model,
        model_name: args.served_model_name,
        dtype: dtype(&args.dtype)?,
        device: device(&args.device)?,
        max_batch: args.max_batch,
        seed: args.seed,
    };
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("bad address {}:{}", args.host, args.port))?;
    serve::serve(&options, addr, |bound| {
        eprintln!("atomskill serve: listening on http://{bound}/v1");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
