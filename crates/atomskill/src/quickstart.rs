//! `atomskill quickstart`: the whole recipe at small scale, each stage's output kept under
//! `--out` so that a rerun skips what is done (a stage is done when its `.done` marker exists;
//! the long stages also resume inside).
//!
//! tasks (fetch + synth, split by bug into train and eval) → base model (`model init`, or
//! `--model DIR`) → oracle trajectories on the train tasks → SFT → eval before (Avg@k) → joint
//! GRPO → eval after → `report.html` (before/after per skill, outcomes, training curves).
//! With `--policy openai:URL --model-name NAME` it evaluates that server's model instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use eval::{EvalOptions, PolicyChoice, Summary};
use tasks::Instance;

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

fn done(dir: &Path) -> bool {
    dir.join(".done").is_file()
}

fn mark(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(".done"), b"")?;
    Ok(())
}

fn stage(n: usize, name: &str, skipped: bool) {
    if skipped {
        eprintln!("[{n}/8] {name}: done earlier, skipped");
    } else {
        eprintln!("[{n}/8] {name}");
    }
}

/// Splits instances by bug: every other bug (in id order) goes to evaluation, so no bug is in
/// both sets.
fn split_by_bug(instances: Vec<Instance>) -> (Vec<Instance>, Vec<Instance>) {
    let bugs: BTreeSet<String> = instances.iter().map(|i| i.bug.bug_id.clone()).collect();
    let eval_bugs: BTreeSet<&String> = bugs.iter().skip(1).step_by(2).collect();
    instances
        .into_iter()
        .partition(|i| !eval_bugs.contains(&i.bug.bug_id))
}

fn agent_args(max_steps: u32) -> crate::eval_cli::AgentArgs {
    crate::eval_cli::AgentArgs {
        max_steps,
        max_context_tokens: 8192,
        episode_timeout: 300,
        test_timeout: 120,
        temperature: 1.0,
        top_p: 1.0,
        max_tokens: Some(96),
        prompts: None,
        tools_in_prompt: false,
    }
}

async fn evaluate(
    home: &Path,
    instances: &[Instance],
    (choice, label): (&PolicyChoice, &str),
    k: u32,
    out: &Path,
    args: &QuickstartArgs,
    max_steps: u32,
) -> Result<Summary> {
    let rollout = crate::eval_cli::rollout_for(home, instances, &agent_args(max_steps))?;
    let options = EvalOptions {
        k,
        concurrency: args.concurrency,
        seed: args.seed,
        out: out.to_path_buf(),
        policy_label: label.to_string(),
        tasks_label: "quickstart".into(),
        report_title: format!("quickstart: {label}"),
    };
    let (bar, on_event) = crate::eval_cli::episode_bar("episodes");
    let summary = eval::run_eval(&rollout, choice, instances, &options, &on_event).await?;
    bar.finish();
    crate::eval_cli::print_summary(&summary);
    mark(out)?;
    Ok(summary)
}

pub async fn run(home: &Path, args: QuickstartArgs) -> Result<ExitCode> {
    let out = args.out.clone();
    std::fs::create_dir_all(&out)?;

    // 1. Tasks.
    let tasks_dir = out.join("tasks");
    stage(
        1,
        "tasks: fetch projects, synthesise and validate instances",
        done(&tasks_dir),
    );
    if !done(&tasks_dir) {
        let (sandbox, store) = crate::factory_sandbox(home)?;
        let synth = crate::factory::Synth {
            corpus: None,
            repo: None,
            only: args.projects.clone(),
            out: tasks_dir.join("all"),
            skills: Vec::new(),
            max_per_repo: args.bugs_per_project,
            max_candidates: 60,
            seed: args.seed,
            concurrency: None,
            timeout: 120,
        };
        crate::factory::synth(home, sandbox, store, synth).await?;
        let all = tasks::store::read_dir(&tasks_dir.join("all"))?;
        let (train, eval) = split_by_bug(all);
        tasks::store::write_dir(&tasks_dir.join("train"), &train)?;
        tasks::store::write_dir(&tasks_dir.join("eval"), &eval)?;
        mark(&tasks_dir)?;
    }
    let train_tasks = tasks::store::read_dir(&tasks_dir.join("train"))?;
    let eval_tasks = tasks::store::read_dir(&tasks_dir.join("eval"))?;
    eprintln!(
        "      {} training and {} evaluation instances (split by bug)",
        train_tasks.len(),
        eval_tasks.len()
    );

    if let Some(spec) = &args.policy {
        // A served model: evaluate it, no training.
        let (choice, label) =
            crate::eval_cli::policy_choice(spec, args.model_name.as_deref(), &args.device)?;
        stage(5, "evaluate the served model", false);
        let summary = evaluate(
            home,
            &eval_tasks,
            (&choice, &label),
            args.k,
            &out.join("eval"),
            &args,
            30,
        )
        .await?;
        write_report(&out, vec![(label, summary)], Vec::new())?;
        return Ok(ExitCode::SUCCESS);
    }

    // 2. The base model.
    let base = match &args.model {
        Some(dir) => {
            stage(2, "base model: given", true);
            dir.clone()
        }
        None => {
            let dir = out.join("model-base");
            stage(2, "base model: a tiny Qwen2 from a seed", done(&dir));
            if !done(&dir) {
                let options = model::init::InitOptions {
                    arch: model::Arch::Qwen2,
                    size: model::init::Size::Tiny,
                    seed: args.seed,
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
    stage(3, "oracle trajectories (SFT data)", done(&oracle_dir));
    if !done(&oracle_dir) {
        evaluate(
            home,
            &train_tasks,
            (&PolicyChoice::Oracle, "oracle"),
            1,
            &oracle_dir,
            &args,
            30,
        )
        .await?;
    }

    // 4. SFT.
    let sft_dir = out.join("sft");
    stage(4, "SFT on the oracle trajectories", done(&sft_dir));
    if !done(&sft_dir) {
        let sft = crate::train_cli::SftArgs {
            trajectories: oracle_dir.join(eval::store::EPISODES_FILE),
            model: base.clone(),
            out: sft_dir.clone(),
            steps: args.sft_steps,
            lr: 1e-3,
            warmup_steps: 2,
            cosine_min_ratio: Some(0.1),
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            batch_tokens: 8192,
            micro_batch_tokens: 4096,
            // Room for the longest one-call trajectories (a review's prompt is about 2,000 of
            // the tiny tokenizer's tokens): 2,048 cut the verdict off.
            max_seq_len: Some(3072),
            min_reward: 1.0,
            // Measured on the tiny model: no better on held-out assistant turns (see issue 7).
            train_on_prompt: false,
            seed: args.seed,
            checkpoint_every: 10,
            resume: true,
            device: args.device.clone(),
            lora_rank: None,
            lora_alpha: 16.0,
            lora_targets: model::lora::TARGETS.iter().map(|t| t.to_string()).collect(),
            bf16: false,
        };
        crate::train_cli::run_sft(sft)?;
        mark(&sft_dir)?;
    }
    let sft_model = sft_dir.join("model");

    // 5. Evaluation before GRPO.
    let before_dir = out.join("eval-before");
    stage(5, "evaluate the SFT model", done(&before_dir));
    let local = |dir: &Path| -> Result<(PolicyChoice, String)> {
        crate::eval_cli::policy_choice(&format!("local:{}", dir.display()), None, &args.device)
    };
    let before = if done(&before_dir) {
        read_summary(&before_dir)?
    } else {
        let (choice, label) = local(&sft_model)?;
        evaluate(
            home,
            &eval_tasks,
            (&choice, &label),
            args.k,
            &before_dir,
            &args,
            4,
        )
        .await?
    };

    // 6. Joint GRPO.
    let grpo_dir = out.join("grpo");
    stage(6, "joint GRPO over the skills", done(&grpo_dir));
    if !done(&grpo_dir) {
        let text = format!(
            "model = {:?}\ntasks = {:?}\nsteps = {}\nseed = {}\ncheckpoint_every = 1\ndevice = {:?}\n\
             [rollout]\ngroup_size = 4\ngroups_per_step = 2\nconcurrency = {}\nmax_staleness = 1\nmax_tokens = 96\n\
             [agent]\nmax_steps = 4\nmax_context_tokens = 8192\n\
             [train]\nmax_seq_len = 2048\nmicro_batch_tokens = 4096\n\
             loss = {{ algorithm = \"dr_grpo\", zero_variance = \"drop\" }}\noptimizer = {{ lr = 1e-4, weight_decay = 0.0 }}\n",
            sft_model.display().to_string(),
            tasks_dir.join("train").display().to_string(),
            args.steps,
            args.seed,
            args.device,
            args.concurrency
        );
        std::fs::create_dir_all(&grpo_dir)?;
        std::fs::write(grpo_dir.join("run.toml"), &text)?;
        let config = rl::RunConfig::parse(&text).map_err(anyhow::Error::msg)?;
        let rollout = crate::eval_cli::rollout_for(home, &train_tasks, &agent_args(4))?;
        let bar = indicatif::ProgressBar::new(config.steps);
        let handle = bar.clone();
        let on_event = move |event: rl::TrainEvent| match event {
            rl::TrainEvent::Started { from_step, .. } => handle.set_position(from_step),
            rl::TrainEvent::Step(_) => handle.inc(1),
        };
        rl::run_training(
            &config,
            rollout,
            train_tasks.clone(),
            &grpo_dir,
            true,
            &on_event,
        )
        .await
        .context("GRPO")?;
        bar.finish();
        mark(&grpo_dir)?;
    }

    // 7. Evaluation after GRPO.
    let after_dir = out.join("eval-after");
    stage(7, "evaluate the GRPO model", done(&after_dir));
    let after = if done(&after_dir) {
        read_summary(&after_dir)?
    } else {
        let (choice, label) = local(&grpo_dir.join("model"))?;
        evaluate(
            home,
            &eval_tasks,
            (&choice, &label),
            args.k,
            &after_dir,
            &args,
            4,
        )
        .await?
    };

    // 8. The report.
    stage(8, "report", false);
    let history = rl::run::read_history(&grpo_dir)?;
    write_report(
        &out,
        vec![
            ("before GRPO (SFT)".into(), before),
            ("after GRPO".into(), after),
        ],
        rl::run::charts(&history),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn read_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join(eval::store::SUMMARY_FILE);
    Ok(serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?)
}

fn write_report(
    out: &Path,
    runs: Vec<(String, Summary)>,
    charts: Vec<eval::report::Chart>,
) -> Result<()> {
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
    std::fs::write(&path, html)?;
    println!("report: {}", path.display());
    Ok(())
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
}
