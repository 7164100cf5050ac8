//! The quickstart's stage logic for real, at the smallest budget: the mini project's instances
//! (given, not synthesised from PyPI), a tiny model from a seed, oracle trajectories, two SFT
//! steps, one GRPO step, both evaluations and the report; then a rerun that finds every stage
//! done. Needs root (the sandbox) and `ATOMSKILL_TEST_VENV`, like the other end-to-end tests.

use std::sync::Mutex;

use recipe::quickstart::{Progress, QuickstartConfig, TaskSource};
use recipe::Workbench;
use rollout::Projects;

#[derive(Default)]
struct Stages(Mutex<Vec<(usize, bool)>>);

impl Progress for Stages {
    fn stage(&self, n: usize, _name: &str, done_earlier: bool) {
        self.0.lock().unwrap().push((n, done_earlier));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_every_stage_then_resumes_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let mini = test_support::fixture::mini_tasks(dir.path(), 2, 11).await;
    let given = dir.path().join("given");
    tasks::store::write_dir(&given, &mini.instances).unwrap();
    let mut projects = Projects::new();
    projects.add(mini.prepared.clone(), mini.snapshot.clone());
    let bench = Workbench {
        home: dir.path().join("home"),
        sandbox: mini.sandbox.clone(),
        store: mini.store,
        projects: Some(projects),
    };
    let config = QuickstartConfig {
        tasks: TaskSource::Given(given),
        k: 1,
        steps: 1,
        sft_steps: 2,
        concurrency: 2,
        seed: 3,
        ..QuickstartConfig::new(dir.path().join("qs"))
    };

    let first = Stages::default();
    let outcome = recipe::quickstart::run(&bench, &config, &first)
        .await
        .unwrap();
    let stages: Vec<(usize, bool)> = first.0.into_inner().unwrap();
    assert_eq!(
        stages,
        (1..=8).map(|n| (n, false)).collect::<Vec<_>>(),
        "every stage ran once, in order"
    );
    let out = &config.out;
    for stage in [
        "tasks",
        "model-base",
        "oracle",
        "sft",
        "eval-before",
        "grpo",
        "eval-after",
    ] {
        assert!(
            out.join(stage).join(".done").is_file(),
            "{stage} is marked done"
        );
    }
    // The split is by bug, and both halves are non-empty.
    let train = tasks::store::read_dir(&out.join("tasks/train")).unwrap();
    let eval = tasks::store::read_dir(&out.join("tasks/eval")).unwrap();
    assert!(!train.is_empty() && !eval.is_empty());
    assert!(train
        .iter()
        .all(|t| eval.iter().all(|e| e.bug.bug_id != t.bug.bug_id)));
    // The oracle solved every training instance: SFT had verified data, and data.json says so.
    let oracle: eval::Summary = serde_json::from_slice(
        &std::fs::read(out.join("oracle").join(eval::store::SUMMARY_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(oracle.total.avg_success, 1.0, "{:?}", oracle.total);
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sft/data.json")).unwrap()).unwrap();
    assert_eq!(data["n_kept"], serde_json::json!(train.len()));
    assert!(out.join("sft/model/model.safetensors").is_file());
    // GRPO ran its one step from the SFT model, with the config it wrote down.
    let run = rl::RunConfig::load(&out.join("grpo/run.toml")).unwrap();
    assert_eq!(run.steps, 1);
    assert_eq!(run.model, out.join("sft/model"));
    assert_eq!(rl::run::read_history(&out.join("grpo")).unwrap().len(), 1);
    // Two evaluations of every evaluation instance, and the report shows both.
    assert_eq!(outcome.runs.len(), 2);
    for (_, summary) in &outcome.runs {
        assert_eq!(summary.total.instances, eval.len());
    }
    let html = std::fs::read_to_string(&outcome.report).unwrap();
    assert!(html.contains("before GRPO (SFT)") && html.contains("after GRPO"));

    // A rerun finds every stage done (the report is always rewritten).
    let second = Stages::default();
    recipe::quickstart::run(&bench, &config, &second)
        .await
        .unwrap();
    let stages: Vec<(usize, bool)> = second.0.into_inner().unwrap();
    assert_eq!(
        stages,
        vec![
            (1, true),
            (2, true),
            (3, true),
            (4, true),
            (5, true),
            (6, true),
            (7, true),
            (8, false)
        ]
    );
}
