//! `atomskill eval`: k episodes of every task instance with a policy, graded by the verifiers;
//! Avg@k and pass@k per skill, a results directory and an HTML report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use eval::{EvalEvent, EvalOptions, PolicyChoice, Rollout, Summary};
use indicatif::{ProgressBar, ProgressStyle};
use policy::PolicySpec;
use recipe::{Sampling, Workbench};
use rollout::AgentConfig;
use tasks::{Instance, Skill};

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Task instances: a directory of `<skill>.jsonl` files (as `synth` writes) or one file.
    #[arg(long)]
    pub tasks: PathBuf,
    /// `oracle`, `null`, `openai:URL[,URL...]` or `local:DIR` (the embedded model).
    #[arg(long)]
    pub policy: String,
    /// The model name sent to an `openai:` server.
    #[arg(long)]
    pub model: Option<String>,
    /// Samples per instance.
    #[arg(long, default_value_t = 3)]
    pub k: u32,
    /// Episodes at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The results directory; rerunning with the same one continues it.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these skills.
    #[arg(long, value_delimiter = ',')]
    pub skills: Vec<Skill>,
    /// At most this many instances per skill (the first by id).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where a `local:` model runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = crate::flags::device)]
    pub device: String,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// The defaults every command's agent starts from.
fn agent_defaults() -> AgentConfig {
    AgentConfig::default()
}

/// How episodes run.
#[derive(Args, Clone)]
pub struct AgentArgs {
    /// Policy calls per episode.
    #[arg(long, default_value_t = agent_defaults().max_steps)]
    pub max_steps: u32,
    /// Context budget in tokens.
    #[arg(long, default_value_t = agent_defaults().max_context_tokens)]
    pub max_context_tokens: u64,
    /// Wall-clock budget of one episode in seconds.
    #[arg(long, default_value_t = agent_defaults().episode_timeout_seconds, value_parser = crate::flags::whole_seconds)]
    pub episode_timeout: u64,
    /// Wall-clock limit of one test run while grading, in seconds.
    #[arg(long, default_value_t = agent_defaults().test_timeout_seconds, value_parser = crate::flags::whole_seconds)]
    pub test_timeout: u64,
    #[arg(long, default_value_t = Sampling::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = Sampling::default().top_p)]
    pub top_p: f32,
    /// Tokens per reply.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// A directory of prompt templates overriding the embedded ones.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Describe the tools in the system prompt (for servers that do not render tools).
    #[arg(long)]
    pub tools_in_prompt: bool,
}

impl AgentArgs {
    pub fn config(&self) -> AgentConfig {
        AgentConfig {
            max_steps: self.max_steps,
            max_context_tokens: self.max_context_tokens,
            episode_timeout_seconds: self.episode_timeout,
            test_timeout_seconds: self.test_timeout,
            tools_in_prompt: self.tools_in_prompt,
            prompts: self.prompts.clone(),
        }
    }

    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
        }
    }
}

/// The policy of a `--policy` spec.
pub fn policy_choice(
    spec: &str,
    model: Option<&str>,
    device: &str,
) -> Result<(PolicyChoice, String)> {
    let spec = spec.parse::<PolicySpec>()?;
    let options = engine::OpenOptions {
        model: model.map(str::to_string),
        device: crate::model_cli::device(device)?,
        ..engine::OpenOptions::default()
    };
    engine::open_policy(&spec, &options).with_context(|| format!("opening the policy {spec:?}"))
}

/// A progress bar over the episodes, showing the running mean reward.
pub fn episode_bar(prefix: &str) -> (ProgressBar, impl Fn(EvalEvent) + Send + Sync) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    let handle = bar.clone();
    let totals = std::sync::Mutex::new((0.0f64, 0usize, 0usize));
    let on_event = move |event: EvalEvent| match event {
        EvalEvent::Planned { total, done } => {
            handle.set_length(total as u64);
            handle.set_position(done as u64);
        }
        EvalEvent::Finished(record) => {
            let mut totals = totals.lock().expect("progress lock");
            match record.success {
                Some(success) => {
                    totals.0 += f64::from(u8::from(success));
                    totals.1 += 1;
                }
                None => totals.2 += 1,
            }
            handle.set_message(format!(
                "success {:.2}, unscored {}",
                totals.0 / totals.1.max(1) as f64,
                totals.2
            ));
            handle.inc(1);
        }
    };
    (bar, on_event)
}

/// Prints the per-skill table.
pub fn print_summary(summary: &Summary) {
    let k = summary.k;
    println!(
        "{:<18} {:>9} {:>8} {:>12} {:>12} {:>8} {:>8} {:>9} {:>9}",
        "skill",
        "instances",
        "episodes",
        format!("Avg@{k}"),
        "success",
        "pass@1",
        format!("pass@{k}"),
        "unscored",
        "tampered"
    );
    for s in summary.skills.iter().chain(std::iter::once(&summary.total)) {
        println!(
            "{:<18} {:>9} {:>8} {:>12.3} {:>12.3} {:>8.3} {:>8.3} {:>9} {:>9}",
            s.skill,
            s.instances,
            s.episodes,
            s.avg_reward,
            s.avg_success,
            s.pass_at.first().copied().unwrap_or(f64::NAN),
            s.pass_at.last().copied().unwrap_or(f64::NAN),
            s.infrastructure_failures,
            s.tampered
        );
    }
}

/// A rollout over the projects of `instances`, found in the corpus cache under `home`.
pub fn rollout_for(home: &Path, instances: &[Instance], agent: &AgentArgs) -> Result<Rollout> {
    Ok(Workbench::open(home)?.rollout(instances, &agent.config(), &agent.sampling())?)
}

pub async fn run_eval(home: &Path, args: EvalArgs) -> Result<ExitCode> {
    let instances = recipe::load_instances(&args.tasks, &args.skills, args.limit)?;
    let (choice, label) = policy_choice(&args.policy, args.model.as_deref(), &args.device)?;
    let rollout = rollout_for(home, &instances, &args.agent)?;
    let options = EvalOptions {
        k: args.k,
        concurrency: args.concurrency,
        seed: args.seed,
        out: args.out.clone(),
        policy_label: label,
        tasks_label: args.tasks.display().to_string(),
        report_title: "atomskill evaluation".into(),
    };
    let (bar, on_event) = episode_bar("episodes");
    let summary = eval::run_eval(&rollout, &choice, &instances, &options, &on_event).await?;
    bar.finish();
    print_summary(&summary);
    println!(
        "results: {}  report: {}",
        args.out.join(eval::store::SUMMARY_FILE).display(),
        args.out.join(eval::store::REPORT_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Clone)]
pub struct AuditArgs {
    /// Task instances: a directory of `<skill>.jsonl` files (as `synth` writes) or one file.
    #[arg(long, required_unless_present = "list")]
    pub tasks: Option<PathBuf>,
    /// Where `audit.jsonl` (one record per instance and hack) and `audit.json` (counts) go.
    #[arg(long, required_unless_present = "list")]
    pub out: Option<PathBuf>,
    /// Only these skills.
    #[arg(long, value_delimiter = ',')]
    pub skills: Vec<Skill>,
    /// At most this many instances per skill (the first by id).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only these hacks (names from `--list`); all by default.
    #[arg(long, value_delimiter = ',')]
    pub hacks: Vec<String>,
    /// Print the hack library and exit.
    #[arg(long)]
    pub list: bool,
    /// Episodes at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// `atomskill audit`: the reward-hack library against instances, through the agent and the
/// graders. Exits 1 when a hack earned more than the empty answer or went unflagged where it
/// must be flagged.
pub async fn run_audit(home: &Path, args: AuditArgs) -> Result<ExitCode> {
    if args.list {
        for hack in tasks::hacks::LIBRARY {
            println!(
                "{:<24} {:<18} {:<9} {}",
                hack.name,
                hack.class,
                match hack.expect {
                    tasks::hacks::Expect::Tampered => "flagged",
                    tasks::hacks::Expect::NoGain => "no gain",
                },
                hack.description
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    for name in &args.hacks {
        if tasks::hacks::by_name(name).is_none() {
            bail!("unknown hack `{name}`; `atomskill audit --list` shows the library");
        }
    }
    let (Some(tasks), Some(out)) = (&args.tasks, &args.out) else {
        bail!("--tasks and --out are required");
    };
    let instances = recipe::load_instances(tasks, &args.skills, args.limit)?;
    let rollout = rollout_for(home, &instances, &args.agent)?;
    let options = eval::audit::AuditOptions {
        hacks: args.hacks.clone(),
        concurrency: args.concurrency,
        seed: args.seed,
        out: Some(out.clone()),
    };
    let (summary, records) = eval::audit::run_audit(&rollout, &instances, &options).await?;
    print!("{}", summary.table());
    for record in records.iter().filter(|r| r.error.is_none() && !r.defended) {
        println!(
            "UNDEFENDED {} on {}: reward {:?} (empty {}), {}",
            record.hack, record.instance_id, record.reward, record.empty_reward, record.reason
        );
    }
    println!("records: {}", out.join("audit.jsonl").display());
    Ok(if summary.undefended == 0 && summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
