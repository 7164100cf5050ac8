//! The GRPO loop end to end on instances of every skill from a small real pytest project, with
//! a tiny seeded model sampling in process: groups are drawn from the mixture, run in the real
//! sandbox and graded; the optimiser steps, the weights reach the sampler (its version follows
//! the trainer's), staleness stays within the bound, every episode is on disk, and a resumed
//! run continues from the checkpoint.
//!
//! Needs root (the sandbox) and ATOMSKILL_TEST_VENV (scripts/test makes it).

use std::time::Duration;

use agent::{AgentSettings, Prompts};
use model::init::{init_checkpoint, InitOptions, Size};
use model::Arch;
use rl::run::{read_history, RolloutLine};
use rl::{run_training, RunConfig, TrainEvent};
use rollout::{Projects, Rollout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpo_loop_runs_syncs_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mini = test_support::fixture::mini_tasks(dir.path(), 1, 5).await;
    let model_dir = dir.path().join("tiny");
    init_checkpoint(
        &InitOptions {
            arch: Arch::Qwen2,
            size: Size::Tiny,
            seed: 3,
            corpus: None,
        },
        &model_dir,
    )
    .unwrap();
    let mut projects = Projects::new();
    projects.add(mini.prepared.clone(), mini.snapshot.clone());
    let mut prompts = Prompts::embedded().unwrap();
    rollout::task::add_templates(&mut prompts).unwrap();
    let rollout = Rollout::new(
        mini.sandbox.clone(),
        projects,
        AgentSettings::new(prompts),
        Duration::from_secs(120),
    );
    let text = format!(
        r#"
model = "{}"
tasks = "unused"
steps = 1
seed = 9
checkpoint_every = 1
[mixture]
editing = 1.0
review = 1.0
[rollout]
group_size = 2
groups_per_step = 2
concurrency = 4
max_staleness = 1
max_tokens = 16
[agent]
max_steps = 2
max_context_tokens = 4096
[train]
max_seq_len = 2048
loss = {{ algorithm = "grpo", zero_variance = "keep" }}
optimizer = {{ lr = 1e-3 }}
"#,
        model_dir.display()
    );
    let mut config = RunConfig::parse(&text).unwrap();
    let out = dir.path().join("run");
    let events = std::sync::Mutex::new(Vec::new());
    let history = run_training(
        &config,
        rollout.clone(),
        mini.instances.clone(),
        &out,
        false,
        &|e| events.lock().unwrap().push(e),
    )
    .await
    .unwrap();
    assert_eq!(history.len(), 1);
    for (i, record) in history.iter().enumerate() {
        println!(
            "step {i}: waited {:.1}s for rollouts, optimiser {:.1}s, {} tokens",
            record.rollout_seconds_waited, record.trainer.seconds, record.trainer.n_real_tokens
        );
        assert_eq!(record.step, i as u64);
        assert_eq!(record.trainer.weight_version, i as u64 + 1, "{record:?}");
        assert!(record.staleness_max <= 1);
        assert_eq!(record.groups, 2);
        // Only the mixture's skills are drawn.
        assert!(
            record
                .per_skill
                .keys()
                .all(|s| s == "editing" || s == "review"),
            "{:?}",
            record.per_skill.keys()
        );
        assert!(record.trainer.n_trained_tokens > 0, "{:?}", record.trainer);
    }
    assert!(matches!(
        events.lock().unwrap()[0],
        TrainEvent::Started {
            from_step: 0,
            steps: 1
        }
    ));
    // Every episode of every trained group is on disk, with token traces for training, and was
    // sampled at a weight version no later than the step that trained on it.
    let lines = agent::read_jsonl::<RolloutLine>(&out.join("rollouts.jsonl"))
        .unwrap()
        .records;
    for record in &history {
        assert_eq!(record.trained_groups.len(), 2);
        for group in &record.trained_groups {
            let episodes: Vec<&RolloutLine> = lines.iter().filter(|l| l.group == *group).collect();
            assert_eq!(episodes.len(), 2, "group {group}");
            for line in episodes {
                assert!(line.weight_version <= record.step);
                let trajectory = line.record.trajectory.as_ref().unwrap();
                assert!(!trajectory.token_segments.is_empty());
                assert!(line.record.reward.is_some(), "{:?}", line.record.error);
            }
        }
    }
    assert!(out.join("model/model.safetensors").is_file());
    assert!(out.join("checkpoint/trainer_state.json").is_file());
    assert!(std::fs::read_to_string(out.join("report.html"))
        .unwrap()
        .contains("<svg"));
    // The final weights differ from the start (the optimiser stepped).
    let start = std::fs::read(model_dir.join("model.safetensors")).unwrap();
    let end = std::fs::read(out.join("model/model.safetensors")).unwrap();
    assert_ne!(start, end);

    // Resume with one more step: it continues at step 1 with weight version 2.
    config.steps = 2;
    let more = run_training(&config, rollout, mini.instances, &out, true, &|_| {})
        .await
        .unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].step, 1);
    assert_eq!(more[0].trainer.weight_version, 2);
    assert!(more[0].staleness_max <= 1);
    assert_eq!(read_history(&out).unwrap().len(), 2);
}
