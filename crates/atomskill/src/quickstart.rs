//! `atomskill quickstart`: flags to a [`recipe::QuickstartConfig`], progress to the terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Result;
use clap::Args;
use eval::{EvalEvent, Summary};
use indicatif::ProgressBar;
use recipe::quickstart::{Progress, STAGES};
use recipe::{QuickstartConfig, TaskSource, Workbench};

#[derive(Args)]
pub struct QuickstartArgs {
    /// Where every stage's output goes (rerunning continues).
    #[arg(long, default_value = "quickstart")]
    out: PathBuf,
    /// Projects of the default corpus to make tasks from.
    #[arg(long, value_delimiter = ',', default_value = "toolz,cachetools")]
    projects: Vec<String>,
    /// Bugs per project (each gives an instance of every skill; half the bugs go to evaluation).
    #[arg(long, default_value_t = 2)]
    bugs_per_project: usize,
    /// Use these task instances (a directory of `<skill>.jsonl`) instead of making them.
    #[arg(long, conflicts_with_all = ["projects", "bugs_per_project"])]
    tasks: Option<PathBuf>,
    /// Samples per instance in the evaluations.
    #[arg(long, default_value_t = 3)]
    k: u32,
    /// GRPO steps.
    #[arg(long, default_value_t = 4)]
    steps: u64,
    /// SFT steps.
    #[arg(long, default_value_t = 20)]
    sft_steps: u64,
    /// Start from this HF checkpoint instead of a new tiny model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Evaluate an OpenAI-compatible server's model instead of training one.
    #[arg(long)]
    policy: Option<String>,
    /// The model name for `--policy openai:URL`.
    #[arg(long)]
    model_name: Option<String>,
    /// Episodes at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Where the model trains and samples: cpu, cuda or cuda:N (a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_parser = crate::flags::device)]
    device: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl QuickstartArgs {
    fn config(&self) -> Result<QuickstartConfig> {
        Ok(QuickstartConfig {
            tasks: match &self.tasks {
                Some(dir) => TaskSource::Given(dir.clone()),
                None => TaskSource::Synthesize {
                    projects: self.projects.clone(),
                    bugs_per_project: self.bugs_per_project,
                },
            },
            k: self.k,
            steps: self.steps,
            sft_steps: self.sft_steps,
            model: self.model.clone(),
            policy: self.policy.as_deref().map(str::parse).transpose()?,
            model_name: self.model_name.clone(),
            concurrency: self.concurrency,
            device: self.device.clone(),
            seed: self.seed,
            ..QuickstartConfig::new(self.out.clone())
        })
    }
}

/// An evaluation's progress bar and the handler that moves it.
type EpisodeBar = (ProgressBar, Box<dyn Fn(EvalEvent) + Send + Sync>);

/// Stage lines on stderr, a progress bar per evaluation and training stage.
#[derive(Default)]
struct Terminal {
    sft_steps: u64,
    bar: Mutex<Option<EpisodeBar>>,
    steps: Mutex<Option<ProgressBar>>,
}

impl Terminal {
    fn finish(&self) {
        if let Some((bar, _)) = self.bar.lock().expect("progress lock").take() {
            bar.finish();
        }
        if let Some(bar) = self.steps.lock().expect("progress lock").take() {
            bar.finish();
        }
    }

    fn steps_bar(&self, len: u64) -> ProgressBar {
        self.steps
            .lock()
            .expect("progress lock")
            .get_or_insert_with(|| ProgressBar::new(len))
            .clone()
    }
}

impl Progress for Terminal {
    fn stage(&self, n: usize, name: &str, done_earlier: bool) {
        self.finish();
        if done_earlier {
            eprintln!("[{n}/{STAGES}] {name}: done earlier, skipped");
        } else {
            eprintln!("[{n}/{STAGES}] {name}");
        }
    }

    fn note(&self, line: &str) {
        eprintln!("      {line}");
    }

    fn synth(&self, event: synth::Event) {
        match event {
            synth::Event::Prepared {
                project,
                tests,
                flaky,
                seconds,
            } => eprintln!(
                "      {project}: {tests} stable tests, {flaky} flaky, prepared in {seconds:.0}s"
            ),
            synth::Event::Candidates {
                project,
                total,
                covered,
                sampled,
            } => eprintln!(
                "      {project}: {total} candidates, {covered} in tested functions, {sampled} sampled"
            ),
            synth::Event::ProjectSkipped { project, reason } => {
                eprintln!("      {project}: SKIPPED: {reason}")
            }
            _ => {}
        }
    }

    fn eval(&self, event: EvalEvent) {
        let mut slot = self.bar.lock().expect("progress lock");
        let (_, on_event) = slot.get_or_insert_with(|| {
            let (bar, on_event) = crate::eval_cli::episode_bar("episodes");
            (bar, Box::new(on_event))
        });
        on_event(event);
    }

    fn evaluated(&self, summary: &Summary) {
        self.finish();
        crate::eval_cli::print_summary(summary);
    }

    fn sft_step(&self, metrics: &train::StepMetrics) {
        let bar = self.steps_bar(self.sft_steps);
        bar.set_position(metrics.step + 1);
        bar.set_message(format!("nll {:.3}", -metrics.mean_logprob));
    }

    fn grpo(&self, event: rl::TrainEvent) {
        match event {
            rl::TrainEvent::Started { from_step, steps } => {
                let bar = self.steps_bar(steps);
                bar.set_length(steps);
                bar.set_position(from_step);
            }
            rl::TrainEvent::Step(_) => self.steps_bar(0).inc(1),
        }
    }
}

pub async fn run(home: &Path, args: QuickstartArgs) -> Result<ExitCode> {
    let config = args.config()?;
    let bench = Workbench::open(home)?;
    let terminal = Terminal {
        sft_steps: config.sft_steps,
        ..Terminal::default()
    };
    let outcome = recipe::quickstart::run(&bench, &config, &terminal).await;
    terminal.finish();
    let outcome = outcome?;
    println!("report: {}", outcome.report.display());
    Ok(ExitCode::SUCCESS)
}
