//! The task factory end to end on a small real Python project with a real pytest suite, in the
//! real sandbox: baseline, call map, mutants validated by running tests, instances of every
//! skill validated by their verifiers, resumption, and answers that try to cheat.
//!
//! Needs root (the sandbox) and ATOMSKILL_TEST_VENV, a virtualenv with pytest (scripts/test
//! makes it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corpus::Environment;
use synth::pipeline::{read_lines, synth_state, ProjectReport, SynthOptions};
use tasks::{Answer, FileEdits, GradedProject, Grader, Instance, Skill, Task};
use test_support::fixture::{mini_project as project, test_sandbox as sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mini_project_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = project(dir.path());
    let venv = match &prepared.environment {
        Environment::Python { venv } => venv.clone(),
        Environment::Cargo { .. } => unreachable!(),
    };
    let (sandbox, store) = sandbox(dir.path(), &venv);
    let state = synth::project::prepare_state(
        prepared,
        &dir.path().join("cache"),
        &store,
        &sandbox,
        2,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(state.baseline.statuses.len(), 7);
    assert_eq!(state.baseline.passing().count(), 7);
    assert!(state.baseline.flaky.is_empty());
    // The call map knows which tests call clamp (and that no test calls it at import time).
    let coverage = state.coverage.as_ref().unwrap();
    let clamp_tests = coverage.tests_calling("src/mini/core.py", &[1]);
    assert_eq!(clamp_tests.len(), 3, "{clamp_tests:?}");
    assert!(clamp_tests.iter().all(|t| t.contains("test_clamp")));

    let out = dir.path().join("out");
    let options = SynthOptions {
        out: out.clone(),
        skills: Skill::ALL.into_iter().collect(),
        max_per_repo: 4,
        max_candidates: 40,
        seed: 7,
        concurrency: 2,
        test_timeout: Duration::from_secs(120),
        baseline_runs: 2,
    };
    let state = Arc::new(state);
    let report = synth_state(
        &options,
        sandbox.clone(),
        state.clone(),
        ProjectReport::default(),
        &|_| {},
    )
    .await
    .unwrap();
    // 4 single-mutation bugs, plus at most one combined bug (two kept mutations of one function).
    assert!((4..=5).contains(&report.bugs), "{report:?}");
    let n_bugs = report.bugs;
    let mut by_skill: BTreeMap<Skill, Vec<Instance>> = BTreeMap::new();
    for skill in Skill::ALL {
        let instances: Vec<Instance> =
            read_lines(&out.join(format!("{}.jsonl", skill.name()))).unwrap();
        by_skill.insert(skill, instances);
    }
    for skill in [
        Skill::Localization,
        Skill::Editing,
        Skill::Reproduction,
        Skill::BugFixing,
    ] {
        assert_eq!(by_skill[&skill].len(), n_bugs, "{skill:?}: {report:?}");
    }
    assert!(!by_skill[&Skill::Review].is_empty(), "{report:?}");
    assert!(!by_skill[&Skill::TestGeneration].is_empty(), "{report:?}");
    for instances in by_skill.values() {
        for instance in instances {
            let validation = instance.validation.as_ref().unwrap();
            let (low, high) = instance.skill().reward_range();
            assert_eq!(
                (validation.gold_reward, validation.empty_reward),
                (high, low),
                "{}",
                instance.instance_id
            );
        }
    }
    // Gold test files are trimmed to the tests that kill the kept mutants (the fixture's file
    // tests four functions), and still validated above.
    let mut trimmed = 0;
    for instance in &by_skill[&Skill::TestGeneration] {
        let Task::TestGeneration { gold_test, .. } = &instance.task else {
            unreachable!()
        };
        let file = instance.extra["gold_test_file"].as_str().unwrap();
        let whole = std::fs::read_to_string(state.prepared.tree.join(file)).unwrap();
        if instance.extra["gold_test_trimmed"] == serde_json::json!(true) {
            trimmed += 1;
            assert!(
                gold_test.matches("def test_").count() < whole.matches("def test_").count(),
                "{gold_test}"
            );
        } else {
            assert_eq!(gold_test, &whole);
        }
    }
    assert!(trimmed > 0);
    // Review labels come from running the hidden tests: the gold fix is right, the rest is not.
    for instance in &by_skill[&Skill::Review] {
        let Task::Review {
            candidate_kind,
            label,
            ..
        } = &instance.task
        else {
            panic!()
        };
        assert_eq!(
            *label,
            *candidate_kind == tasks::CandidateKind::Gold,
            "{}: {candidate_kind:?}",
            instance.instance_id
        );
    }
    // Issues never name the changed file or its module.
    for instance in &by_skill[&Skill::Localization] {
        let Task::Localization { issue, gold_files } = &instance.task else {
            panic!()
        };
        assert_eq!(gold_files, &vec!["src/mini/core.py".to_string()]);
        for forbidden in ["core.py", "mini.core", "test_core", "assert "] {
            assert!(!issue.contains(forbidden), "{forbidden} in {issue}");
        }
    }

    // A rerun continues and duplicates nothing.
    let again = synth_state(
        &options,
        sandbox.clone(),
        state.clone(),
        ProjectReport::default(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(again.bugs, n_bugs);
    let editing: Vec<Instance> = read_lines(&out.join("editing.jsonl")).unwrap();
    assert_eq!(editing.len(), n_bugs);

    // Answers that try to cheat get nothing.
    let mut grader = Grader::new(sandbox.clone(), Duration::from_secs(120));
    grader.add_project(GradedProject {
        runner: state.runner(),
        snapshot: state.snapshot.clone(),
    });
    let editing = &editing[0];
    let Task::Editing { fail_to_pass, .. } = &editing.task else {
        panic!()
    };
    let test_file = fail_to_pass[0].split("::").next().unwrap().to_string();
    for (what, files) in [
        ("tests emptied", editing.setup.then(&FileEdits::new().write(test_file.clone(), "def test_nothing():\n    pass\n"))),
        (
            "a conftest that turns failures into passes",
            editing.setup.then(&FileEdits::new().write(
                "conftest.py",
                "import pytest\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n    outcome = yield\n    outcome.get_result().outcome = 'passed'\n",
            )),
        ),
        ("pytest.ini deselecting everything", editing.setup.then(&FileEdits::new().write("pytest.ini", "[pytest]\naddopts = -k nothing_matches\n"))),
    ] {
        let verdict = grader.grade(editing, &Answer { submission: serde_json::json!({}), files }).await.unwrap();
        assert_eq!(verdict.reward, 0.0, "{what}: {verdict:?}");
    }
    let test_generation = &by_skill[&Skill::TestGeneration][0];
    let trivial = Answer {
        submission: serde_json::json!({"path": "tests/test_mine.py"}),
        files: FileEdits::new().write("tests/test_mine.py", "def test_truth():\n    assert True\n"),
    };
    let verdict = grader.grade(test_generation, &trivial).await.unwrap();
    assert_eq!(verdict.reward, 0.0, "{verdict:?}");
    assert_eq!(verdict.details.mutation_score, Some(0.0));
    let reproduction = &by_skill[&Skill::Reproduction][0];
    let always_fails = Answer {
        submission: serde_json::json!({"path": "repro.py"}),
        files: FileEdits::new().write("repro.py", "raise SystemExit(1)\n"),
    };
    let verdict = grader.grade(reproduction, &always_fails).await.unwrap();
    assert_eq!(verdict.reward, 0.0, "{verdict:?}");
    assert_eq!(
        (
            verdict.details.script_exit_before,
            verdict.details.script_exit_after
        ),
        (Some(1), Some(1))
    );
}
