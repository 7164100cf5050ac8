//! The `atomskill` command: parses flags, builds the parts, calls one function per mode.
//!
//! This is the only place that reads environment variables or installs a tracing subscriber.

mod model_cli;
mod train_cli;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod eval_cli;
mod factory;
mod flags;
mod quickstart;
mod rl_cli;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use sandbox::{ExecRequest, Isolation, Limits, Sandbox, SandboxConfig, SnapshotStore};

#[derive(Parser)]
#[command(
    name = "atomskill",
    version,
    about = "Train and evaluate LLM coding agents through atomic skills"
)]
struct Cli {
    /// Where snapshots, caches and runs live [default: $ATOMSKILL_HOME or ~/.cache/atomskill].
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run commands in the episode sandbox.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Fetch and prepare the corpus of real repositories.
    #[command(subcommand)]
    Corpus(factory::CorpusCommand),
    /// Synthesize verified task instances of the five skills and bug fixing.
    Synth(factory::Synth),
    /// Drop training instances that overlap the evaluation set.
    Decontam(factory::Decontam),
    /// Export or import bug-fixing instances as SWE-bench JSONL.
    #[command(subcommand)]
    Swebench(factory::SweBenchCommand),
    /// Evaluate a policy on task instances: Avg@k and pass@k per skill, an HTML report.
    Eval(eval_cli::EvalArgs),
    /// Play the library of reward hacks against task instances through the agent and the
    /// graders; report whether any earned more than the empty answer.
    Audit(eval_cli::AuditArgs),
    /// Create and inspect models.
    #[command(subcommand)]
    Model(model_cli::ModelCommand),
    /// Serve a model over the OpenAI-compatible API.
    Serve(model_cli::ServeArgs),
    /// Supervised fine-tuning on verified trajectories.
    Sft(train_cli::SftArgs),
    /// Joint GRPO over the skill mixture, rollouts decoupled from the optimiser.
    Train(rl_cli::TrainArgs),
    /// The whole recipe end to end at small scale on CPU: tasks, SFT, GRPO, before/after report.
    Quickstart(quickstart::QuickstartArgs),
    /// Benchmarks, each printed as ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Create an episode over DIR, run one command in it, print its output, exit with its status.
    Run(SandboxRun),
    /// Print the isolation this machine allows.
    Info(SandboxOptions),
}

#[derive(Args, Clone)]
struct SandboxOptions {
    /// auto (namespaces, cgroups when usable), full (require cgroups), none (no isolation).
    #[arg(long, default_value = "auto")]
    isolation: Isolation,
    /// A virtualenv to mount read-only and put first on PATH.
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Per-command wall-clock limit in seconds.
    #[arg(long, default_value_t = 60.0, value_parser = flags::seconds)]
    timeout: f64,
    /// Memory limit of the episode in MiB.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    memory: u64,
    /// Process limit of the episode.
    #[arg(long, default_value_t = 256)]
    max_processes: u64,
}

#[derive(Args)]
struct SandboxRun {
    /// The repository to run over (copied once into the snapshot store, without .git).
    #[arg(long)]
    repo: PathBuf,
    #[command(flatten)]
    options: SandboxOptions,
    /// Print the workspace diff after the command.
    #[arg(long)]
    diff: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Per-command overhead against direct spawn and plain `unshare`; episode set-up and teardown.
    Sandbox(bench::sandbox::Options),
    /// The editing reward's cost against raw pytest on the same test ids.
    Grading(bench::grading::Options),
    /// The unit-test reward's cost per mutant against mutmut's, on one function and test file.
    Mutants(bench::mutants::Options),
    /// Orchestration CPU and memory per episode of many concurrent agent episodes.
    Agent(bench::agent::Options),
    /// Forward pass against PyTorch eager; in-process generation throughput.
    Model(bench::model::Options),
    /// GRPO trainer step tokens/s against PyTorch eager on the same model, batch and loss.
    Train(bench::train::Options),
}

fn home_dir(cli_home: Option<PathBuf>) -> PathBuf {
    cli_home
        .or_else(|| std::env::var_os("ATOMSKILL_HOME").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/atomskill")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/atomskill"))
}

fn sandbox_from(home: &std::path::Path, options: &SandboxOptions) -> Result<Sandbox> {
    let mut config = SandboxConfig {
        isolation: options.isolation,
        ..SandboxConfig::default()
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // /run is root's; a rootless sandbox keeps its run-time state under the home directory.
        config.runtime_dir = home.join("run");
    }
    if let Some(venv) = &options.venv {
        let venv = venv
            .canonicalize()
            .with_context(|| format!("virtualenv {}", venv.display()))?;
        config = config.with_virtualenv(venv);
    }
    let limits = Limits {
        timeout: Duration::from_secs_f64(options.timeout),
        memory_bytes: options.memory << 20,
        max_processes: options.max_processes,
        ..Limits::default()
    };
    Ok(Sandbox::new(config, limits)?)
}

async fn sandbox_run(home: PathBuf, run: SandboxRun) -> Result<ExitCode> {
    let sandbox = sandbox_from(&home, &run.options)?;
    eprintln!("atomskill: {}", sandbox.isolation());
    let store = SnapshotStore::new(
        recipe::workbench::snapshot_dir(&home, &sandbox),
        sandbox.snapshot_owner(),
    );
    let repo = run
        .repo
        .canonicalize()
        .with_context(|| format!("repository {}", run.repo.display()))?;
    let snapshot = store.import_dir(&repo, None)?;
    let episode = sandbox.create_episode(&snapshot)?;
    let result = episode.exec(&ExecRequest::new(run.command.clone())).await?;
    let mut stdout = std::io::stdout().lock();
    result.stdout.write_to(&mut stdout)?;
    stdout.flush()?;
    let mut stderr = std::io::stderr().lock();
    result.stderr.write_to(&mut stderr)?;
    if let Some(limit) = result.killed_by {
        writeln!(
            stderr,
            "atomskill: command killed by the {limit:?} limit after {:.2?}",
            result.duration
        )?;
    }
    if let sandbox::ExitStatus::NotStarted { errno } = result.status {
        writeln!(
            stderr,
            "atomskill: `{}` could not be started: {}",
            run.command[0],
            std::io::Error::from_raw_os_error(errno)
        )?;
    }
    if run.diff {
        print!("{}", episode.diff()?.to_patch());
    }
    episode.destroy()?;
    Ok(ExitCode::from(result.status.code().clamp(0, 255) as u8))
}

/// Snapshots are kept per owner: a rootless run cannot use files chowned for a root run.
/// The sandbox the task factory runs tests in: the corpus cache (virtualenvs) and the Rust
/// toolchain mounted read-only.
fn factory_sandbox(home: &std::path::Path) -> Result<(std::sync::Arc<Sandbox>, SnapshotStore)> {
    let bench = recipe::Workbench::open(home)?;
    Ok((bench.sandbox, bench.store))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let home = home_dir(cli.home);
    match cli.command {
        Command::Sandbox(SandboxCommand::Run(run)) => sandbox_run(home, run).await,
        Command::Sandbox(SandboxCommand::Info(options)) => {
            let sandbox = sandbox_from(&home, &options)?;
            println!("{}", serde_json::to_string_pretty(sandbox.isolation())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Sandbox(options)) => {
            let defaults = SandboxOptions {
                isolation: Isolation::Auto,
                venv: None,
                timeout: 60.0,
                memory: 2048,
                max_processes: 256,
            };
            let sandbox = sandbox_from(&home, &defaults)?;
            let store = SnapshotStore::new(
                recipe::workbench::snapshot_dir(&home, &sandbox),
                sandbox.snapshot_owner(),
            );
            bench::sandbox::run(&options, &sandbox, &store).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Grading(options)) => {
            let (sandbox, store) = factory_sandbox(&home)?;
            let cases = factory::grading_cases(&home, &store, &options.tasks)?;
            bench::grading::run(&options, sandbox, &cases).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Mutants(options)) => {
            let (sandbox, store) = factory_sandbox(&home)?;
            let case = factory::mutants_case(&home, &store, &options.project)?;
            bench::mutants::run(&options, sandbox, &case).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Corpus(factory::CorpusCommand::List(args)) => factory::corpus_list(&home, args),
        Command::Corpus(factory::CorpusCommand::Fetch(fetch)) => {
            let (sandbox, store) = factory_sandbox(&home)?;
            factory::corpus_fetch(&home, sandbox, store, fetch).await
        }
        Command::Synth(args) => factory::synth(&home, args).await,
        Command::Decontam(args) => factory::decontam(args),
        Command::Swebench(command) => {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            factory::swebench(
                &home,
                &home.join(if root { "snapshots" } else { "snapshots-own" }),
                command,
            )
        }
        Command::Bench(BenchCommand::Agent(options)) => {
            let defaults = SandboxOptions {
                isolation: Isolation::Auto,
                venv: None,
                timeout: 60.0,
                memory: 2048,
                max_processes: 256,
            };
            let sandbox = std::sync::Arc::new(sandbox_from(&home, &defaults)?);
            let store = SnapshotStore::new(
                recipe::workbench::snapshot_dir(&home, &sandbox),
                sandbox.snapshot_owner(),
            );
            bench::agent::run(&options, sandbox, &store).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Model(options)) => {
            bench::model::run(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Train(options)) => {
            bench::train::run(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => eval_cli::run_eval(&home, args).await,
        Command::Audit(args) => eval_cli::run_audit(&home, args).await,
        Command::Model(command) => model_cli::run_model(command),
        Command::Serve(args) => model_cli::run_serve(args).await,
        Command::Sft(args) => train_cli::run_sft(args),
        Command::Train(args) => rl_cli::run_train(&home, args).await,
        Command::Quickstart(args) => quickstart::run(&home, args).await,
    }
}

/// glibc's allocator serves every block above its mmap threshold (128 KiB at first) with a
/// fresh mapping and unmaps it on free, so each activation-sized tensor of a training step came
/// back as zeroed pages faulted in one by one (keeping them made steps 4-5% faster in full
/// fine-tuning and 12-20% in LoRA on the development machine). Blocks up to 32 MiB now come from
/// the heap, and freed memory is kept for the next step instead of being returned at once; the
/// peak resident memory is unchanged (`bench train --side`, BENCHMARKS.md). glibc's own
/// settings stay when the user set any `MALLOC_*` variable or `GLIBC_TUNABLES`, or
/// `ATOMSKILL_MALLOC=default` (how the benchmarks measure the difference).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = std::env::vars_os().any(|(name, value)| {
            name.to_str().is_some_and(|n| {
                n.starts_with("MALLOC_")
                    || n == "GLIBC_TUNABLES"
                    || (n == "ATOMSKILL_MALLOC" && value == "default")
            })
        });
        if !user_set {
            // SAFETY: mallopt only changes allocator parameters; called before any thread
            // exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    }
}

fn main() -> ExitCode {
    // candle's CPU thread settings, set once before any thread exists, unless given: it parses
    // /proc/cpuinfo on every matmul to count cores unless RAYON_NUM_THREADS is set (~15% of a
    // tiny model's decode step), and its spin-waiting pool for element-wise ops made a forward
    // pass 4-9x slower on a shared 2-core machine (CANDLE_NUM_THREADS=1 turns that pool off;
    // matmuls still use every core). See BENCHMARKS.md.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATOMSKILL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("atomskill: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atomskill: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
