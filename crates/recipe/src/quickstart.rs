//! The whole recipe at small scale, each stage's output kept under `out` so that a rerun skips
//! what is done (a stage is done when its `.done` marker exists; the long stages also resume
//! inside):
//!
//! tasks (synthesised, or given; split by bug into train and eval) → base model (a tiny one
//! from a seed, or given) → oracle trajectories on the train tasks → SFT → eval before (Avg@k)
//! → joint GRPO → eval after → `report.html` (before/after per skill, outcomes, training
//! curves). With a served `policy` it evaluates that model instead of training one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eval::{EvalEvent, EvalOptions, PolicyChoice, Summary};
use policy::PolicySpec;
use rollout::AgentConfig;
use tasks::Instance;
use train::StepMetrics;

use crate::error::{Error, Result};
use crate::sft::SftConfig;
use crate::synth::SynthConfig;
use crate::workbench::{Sampling, Workbench};

/// Where the quickstart's tasks come from.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskSource {
    /// Synthesised from these projects of the default corpus, `bugs_per_project` bugs each.
    Synthesize {
        projects: Vec<String>,
        bugs_per_project: usize,
    },
    /// Instances made earlier (a directory of `<skill>.jsonl` files).
    Given(PathBuf),
}

/// A quickstart run. [`QuickstartConfig::new`] gives the defaults of `atomskill quickstart`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuickstartConfig {
    pub out: PathBuf,
    pub tasks: TaskSource,
    /// Samples per instance in the evaluations.
    pub k: u32,
    /// GRPO steps.
    pub steps: u64,
    pub sft_steps: u64,
    /// Start from this HF checkpoint instead of a new tiny model.
    pub model: Option<PathBuf>,
    /// Evaluate this policy (a served model) instead of training one.
    pub policy: Option<PolicySpec>,
    /// The model name for an `openai:` policy.
    pub model_name: Option<String>,
    /// Episodes at once.
    pub concurrency: usize,
    /// Where the model trains and samples: cpu, cuda or cuda:N.
    pub device: String,
    pub seed: u64,
}

impl QuickstartConfig {
    pub fn new(out: PathBuf) -> QuickstartConfig {
        QuickstartConfig {
            out,
            tasks: TaskSource::Synthesize {
                projects: vec!["toolz".into(), "cachetools".into()],
                bugs_per_project: 2,
            },
            k: 3,
            steps: 4,
            sft_steps: 20,
            model: None,
            policy: None,
            model_name: None,
            concurrency: 4,
            device: "cpu".into(),
            seed: 0,
        }
    }
}

/// What the quickstart tells its caller as it goes (every method may be left out).
pub trait Progress: Send + Sync {
    /// Stage `n` of [`STAGES`] starts (or was done by an earlier run).
    fn stage(&self, _n: usize, _name: &str, _done_earlier: bool) {}
    /// A line worth showing.
    fn note(&self, _line: &str) {}
    fn synth(&self, _event: synth::Event) {}
    fn eval(&self, _event: EvalEvent) {}
    fn evaluated(&self, _summary: &Summary) {}
    fn sft_step(&self, _metrics: &StepMetrics) {}
    fn grpo(&self, _event: rl::TrainEvent) {}
}

/// A [`Progress`] that shows nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// How many stages there are.
pub const STAGES: usize = 8;

/// What the quickstart produced.
#[derive(Clone, Debug)]
pub struct QuickstartOutcome {
    /// `(label, summary)` of every evaluation, in order.
    pub runs: Vec<(String, Summary)>,
    pub report: PathBuf,
}

fn done(dir: &Path) -> bool {
    dir.join(".done").is_file()
}

fn mark(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    trajectory::write_atomic(&dir.join(".done"), b"").map_err(|e| Error::io(dir.join(".done"), e))
}

/// Splits instances by bug: every other bug (in id order) goes to evaluation, so no bug is in
/// both sets.
pub fn split_by_bug(instances: Vec<Instance>) -> (Vec<Instance>, Vec<Instance>) {
    let bugs: BTreeSet<String> = instances.iter().map(|i| i.bug.bug_id.clone()).collect();
    let eval_bugs: BTreeSet<&String> = bugs.iter().skip(1).step_by(2).collect();
    instances
        .into_iter()
        .partition(|i| !eval_bugs.contains(&i.bug.bug_id))
}

/// The agent of every quickstart episode: short budgets for a small model on CPU.
pub fn agent_config(max_steps: u32) -> AgentConfig {
    AgentConfig {
        max_steps,
        max_context_tokens: 8192,
        episode_timeout_seconds: 300,
        test_timeout_seconds: 120,
        ..AgentConfig::default()
    }
}

/// How the quickstart's episodes sample.
pub fn sampling() -> Sampling {
    Sampling {
        temperature: 1.0,
        top_p: 1.0,
        max_tokens: Some(96),
    }
}

/// The SFT stage's run: a short warm-up, cosine decay, the oracle's verified trajectories.
pub fn sft_config(config: &QuickstartConfig, trajectories: PathBuf, base: PathBuf) -> SftConfig {
    SftConfig {
        steps: config.sft_steps,
        lr: 1e-3,
        warmup_steps: 2,
        cosine_min_ratio: Some(0.1),
        checkpoint_every: 10,
        // Room for the longest one-call trajectories (a review's prompt is about 2,000 of the
        // tiny tokenizer's tokens): 2,048 cut the verdict off.
        max_seq_len: Some(3072),
        // Measured on the tiny model: no better on held-out assistant turns.
        train_on_prompt: false,
        seed: config.seed,
        resume: true,
        device: config.device.clone(),
        ..SftConfig::new(trajectories, base, config.out.join("sft"))
    }
}

/// The GRPO stage's run: groups of 4, two groups a step, Dr. GRPO without zero-variance
/// groups, weights synced to the in-process policy after every step.
pub fn grpo_config(config: &QuickstartConfig, model: PathBuf, tasks: PathBuf) -> rl::RunConfig {
    rl::RunConfig {
        model,
        tasks,
        steps: config.steps,
        seed: config.seed,
        checkpoint_every: 1,
        device: config.device.clone(),
        mixture: Default::default(),
        rollout: rl::config::RolloutConfig {
            group_size: 4,
            groups_per_step: 2,
            concurrency: config.concurrency,
            max_staleness: 1,
            max_tokens: Some(96),
            ..rl::config::RolloutConfig::default()
        },
        agent: agent_config(4),
        policy: rl::config::PolicyConfig::Local,
        train: train::TrainConfig {
            max_seq_len: Some(2048),
            micro_batch_tokens: 4096,
            loss: train::LossConfig {
                algorithm: train::Algorithm::DrGrpo,
                zero_variance: train::ZeroVariance::Drop,
                ..train::LossConfig::default()
            },
            optimizer: train::AdamWConfig {
                lr: 1e-4,
                weight_decay: 0.0,
                ..train::AdamWConfig::default()
            },
            ..train::TrainConfig::default()
        },
    }
}

/// What every stage of one run shares.
struct Context<'a> {
    bench: &'a Workbench,
    config: &'a QuickstartConfig,
    progress: &'a dyn Progress,
}

async fn evaluate(
    cx: &Context<'_>,
    instances: &[Instance],
    (choice, label): (&PolicyChoice, &str),
    (k, max_steps): (u32, u32),
    out: &Path,
) -> Result<Summary> {
    let (bench, config, progress) = (cx.bench, cx.config, cx.progress);
    let rollout = bench.rollout(instances, &agent_config(max_steps), &sampling())?;
    let options = EvalOptions {
        k,
        concurrency: config.concurrency,
        seed: config.seed,
        out: out.to_path_buf(),
        policy_label: label.to_string(),
        tasks_label: "quickstart".into(),
        report_title: format!("quickstart: {label}"),
    };
    let on_event = |event: EvalEvent| progress.eval(event);
    let summary = eval::run_eval(&rollout, choice, instances, &options, &on_event).await?;
    progress.evaluated(&summary);
    mark(out)?;
    Ok(summary)
}

fn open_local(dir: &Path, config: &QuickstartConfig) -> Result<(PolicyChoice, String)> {
    let options = engine::OpenOptions {
        device: model::open_device(&config.device)?,
        ..engine::OpenOptions::default()
    };
    Ok(engine::open_policy(
        &PolicySpec::Local {
            model_dir: dir.to_path_buf(),
        },
        &options,
    )?)
}

/// Runs (or continues) the quickstart in `config.out`.
pub async fn run(
    bench: &Workbench,
    config: &QuickstartConfig,
    progress: &dyn Progress,
) -> Result<QuickstartOutcome> {
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let cx = Context {
        bench,
        config,
        progress,
    };

    // 1. Tasks.
    let tasks_dir = out.join("tasks");
    progress.stage(
        1,
        "tasks: fetch projects, synthesise and validate instances",
        done(&tasks_dir),
    );
    if !done(&tasks_dir) {
        let all = match &config.tasks {
            TaskSource::Synthesize {
                projects,
                bugs_per_project,
            } => {
                let synth = SynthConfig {
                    only: projects.clone(),
                    max_per_repo: *bugs_per_project,
                    max_candidates: 60,
                    seed: config.seed,
                    test_timeout: Duration::from_secs(120),
                    ..SynthConfig::new(tasks_dir.join("all"))
                };
                crate::synth::run_synth(bench, &synth, &|e| progress.synth(e), &|n| {
                    progress.note(&n)
                })
                .await?;
                tasks::store::read_dir(&tasks_dir.join("all"))?
            }
            TaskSource::Given(dir) => tasks::store::read_dir(dir)?,
        };
        let (train, eval) = split_by_bug(all);
        tasks::store::write_dir(&tasks_dir.join("train"), &train)?;
        tasks::store::write_dir(&tasks_dir.join("eval"), &eval)?;
        mark(&tasks_dir)?;
    }
    let train_tasks = tasks::store::read_dir(&tasks_dir.join("train"))?;
    let eval_tasks = tasks::store::read_dir(&tasks_dir.join("eval"))?;
    progress.note(&format!(
        "{} training and {} evaluation instances (split by bug)",
        train_tasks.len(),
        eval_tasks.len()
    ));

    if let Some(spec) = &config.policy {
        // A served model: evaluate it, no training.
        let options = engine::OpenOptions {
            model: config.model_name.clone(),
            device: model::open_device(&config.device)?,
            ..engine::OpenOptions::default()
        };
        let (choice, label) = engine::open_policy(spec, &options)?;
        progress.stage(5, "evaluate the served model", false);
        let summary = evaluate(
            &cx,
            &eval_tasks,
            (&choice, &label),
            (config.k, 30),
            &out.join("eval"),
        )
        .await?;
        let runs = vec![(label, summary)];
        let report = write_report(out, runs.clone(), Vec::new())?;
        return Ok(QuickstartOutcome { runs, report });
    }

    // 2. The base model.
    let base = match &config.model {
        Some(dir) => {
            progress.stage(2, "base model: given", true);
            dir.clone()
        }
        None => {
            let dir = out.join("model-base");
            progress.stage(2, "base model: a tiny Qwen2 from a seed", done(&dir));
            if !done(&dir) {
                let options = model::init::InitOptions {
                    arch: model::Arch::Qwen2,
                    size: model::init::Size::Tiny,
                    seed: config.seed,
                    corpus: None,
                };
                model::init::init_checkpoint(&options, &dir)?;
                mark(&dir)?;
            }
            dir
        }
    };

    // 3. Oracle trajectories on the training tasks.
    let oracle_dir = out.join("oracle");
    progress.stage(3, "oracle trajectories (SFT data)", done(&oracle_dir));
    if !done(&oracle_dir) {
        evaluate(
            &cx,
            &train_tasks,
            (&PolicyChoice::Oracle, "oracle"),
            (1, 30),
            &oracle_dir,
        )
        .await?;
    }

    // 4. SFT.
    let sft_dir = out.join("sft");
    progress.stage(4, "SFT on the oracle trajectories", done(&sft_dir));
    if !done(&sft_dir) {
        let sft = sft_config(config, oracle_dir.join(eval::store::EPISODES_FILE), base);
        let outcome = crate::sft::run_sft(
            &sft,
            |data| {
                progress.note(&format!(
                    "{} trajectories kept of {}; {} sequences, {} trained tokens",
                    data.selection.n_kept,
                    data.selection.n_records,
                    data.n_sequences,
                    data.n_trained_tokens
                ))
            },
            |m| progress.sft_step(m),
        )?;
        progress.note(&format!("SFT: {} steps", outcome.steps));
        mark(&sft_dir)?;
    }
    let sft_model = sft_dir.join("model");

    // 5. Evaluation before GRPO.
    let before_dir = out.join("eval-before");
    progress.stage(5, "evaluate the SFT model", done(&before_dir));
    let before = if done(&before_dir) {
        read_summary(&before_dir)?
    } else {
        let (choice, label) = open_local(&sft_model, config)?;
        evaluate(
            &cx,
            &eval_tasks,
            (&choice, &label),
            (config.k, 4),
            &before_dir,
        )
        .await?
    };

    // 6. Joint GRPO.
    let grpo_dir = out.join("grpo");
    progress.stage(6, "joint GRPO over the skills", done(&grpo_dir));
    if !done(&grpo_dir) {
        let run = grpo_config(config, sft_model.clone(), tasks_dir.join("train"));
        run.validate().map_err(Error::Config)?;
        std::fs::create_dir_all(&grpo_dir).map_err(|e| Error::io(&grpo_dir, e))?;
        let text = toml::to_string(&run).map_err(|e| Error::Config(e.to_string()))?;
        trajectory::write_atomic(&grpo_dir.join("run.toml"), text.as_bytes())
            .map_err(|e| Error::io(grpo_dir.join("run.toml"), e))?;
        let rollout = bench.rollout(&train_tasks, &run.agent, &grpo_sampling(&run))?;
        let on_event = |event: rl::TrainEvent| progress.grpo(event);
        rl::run_training(
            &run,
            rollout,
            train_tasks.clone(),
            &grpo_dir,
            true,
            &on_event,
        )
        .await?;
        mark(&grpo_dir)?;
    }

    // 7. Evaluation after GRPO.
    let after_dir = out.join("eval-after");
    progress.stage(7, "evaluate the GRPO model", done(&after_dir));
    let after = if done(&after_dir) {
        read_summary(&after_dir)?
    } else {
        let (choice, label) = open_local(&grpo_dir.join("model"), config)?;
        evaluate(
            &cx,
            &eval_tasks,
            (&choice, &label),
            (config.k, 4),
            &after_dir,
        )
        .await?
    };

    // 8. The report.
    progress.stage(8, "report", false);
    let history = rl::run::read_history(&grpo_dir)?;
    let runs = vec![
        ("before GRPO (SFT)".to_string(), before),
        ("after GRPO".to_string(), after),
    ];
    let report = write_report(out, runs.clone(), rl::run::charts(&history))?;
    Ok(QuickstartOutcome { runs, report })
}

/// How a GRPO run's rollouts sample.
pub fn grpo_sampling(run: &rl::RunConfig) -> Sampling {
    Sampling {
        temperature: run.rollout.temperature,
        top_p: run.rollout.top_p,
        max_tokens: run.rollout.max_tokens,
    }
}

fn read_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join(eval::store::SUMMARY_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
}

fn write_report(
    out: &Path,
    runs: Vec<(String, Summary)>,
    charts: Vec<eval::report::Chart>,
) -> Result<PathBuf> {
    let html = eval::report::Report {
        title: "atomskill quickstart".into(),
        subtitle:
            "atomic-skill tasks from real projects; Avg@k per skill before and after joint GRPO"
                .into(),
        runs,
        charts,
    }
    .to_html()?;
    let path = out.join("report.html");
    trajectory::write_atomic(&path, html.as_bytes()).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, bug: &str) -> Instance {
        let line = serde_json::json!({
            "schema_version": 1,
            "instance_id": id,
            "project": {"name": "p", "version": "1", "ecosystem": "pypi", "snapshot": "s"},
            "bug": {"bug_id": bug, "file": "f.py", "function": null, "operators": [], "line": 1, "description": "", "seed": 0},
            "setup": {},
            "task": {"skill": "localization", "issue": "", "gold_files": []},
        });
        serde_json::from_value(line).unwrap()
    }

    #[test]
    fn every_bug_is_in_one_set_only() {
        let instances: Vec<Instance> = ["a", "b", "c", "d", "e"]
            .iter()
            .flat_map(|bug| (0..3).map(move |i| instance(&format!("{bug}{i}"), bug)))
            .collect();
        let (train, eval) = split_by_bug(instances);
        let bugs = |set: &[Instance]| -> BTreeSet<String> {
            set.iter().map(|i| i.bug.bug_id.clone()).collect()
        };
        assert_eq!(bugs(&train), ["a", "c", "e"].map(String::from).into());
        assert_eq!(bugs(&eval), ["b", "d"].map(String::from).into());
        assert_eq!(train.len() + eval.len(), 15);
    }

    /// The GRPO stage's config, built as a struct, is the one the quickstart used to write as
    /// TOML text (kept here verbatim as the reference), and it survives its own TOML.
    #[test]
    fn the_grpo_config_equals_the_former_toml() {
        let mut config = QuickstartConfig::new("qs".into());
        config.concurrency = 3;
        config.steps = 5;
        config.seed = 9;
        let built = grpo_config(&config, "qs/sft/model".into(), "qs/tasks/train".into());
        let text = format!(
            "model = {:?}\ntasks = {:?}\nsteps = {}\nseed = {}\ncheckpoint_every = 1\ndevice = {:?}\n\
             [rollout]\ngroup_size = 4\ngroups_per_step = 2\nconcurrency = {}\nmax_staleness = 1\nmax_tokens = 96\n\
             [agent]\nmax_steps = 4\nmax_context_tokens = 8192\nepisode_timeout_seconds = 300\ntest_timeout_seconds = 120\n\
             [train]\nmax_seq_len = 2048\nmicro_batch_tokens = 4096\n\
             loss = {{ algorithm = \"dr_grpo\", zero_variance = \"drop\" }}\noptimizer = {{ lr = 1e-4, weight_decay = 0.0 }}\n",
            "qs/sft/model", "qs/tasks/train", 5, 9, "cpu", 3
        );
        let parsed = rl::RunConfig::parse(&text).unwrap();
        assert_eq!(built, parsed);
        let round_trip = rl::RunConfig::parse(&toml::to_string(&built).unwrap()).unwrap();
        assert_eq!(built, round_trip);
    }
}
