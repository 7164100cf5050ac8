//! The task factory end to end on a small real Python project with a real pytest suite, in the
//! real sandbox: baseline, call map, mutants validated by running tests, instances of every
//! skill validated by their verifiers, resumption, and answers that try to cheat.
//!
//! Needs root (the sandbox) and ATOMSKILL_TEST_VENV, a virtualenv with pytest (scripts/test
//! makes it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corpus::{Ecosystem, Environment, InstallMode, Prepared, ProjectSpec};
use sandbox::{Isolation, Limits, Sandbox, SandboxConfig, SnapshotStore};
use synth::pipeline::{read_lines, synth_state, ProjectReport, SynthOptions};
use tasks::{Answer, FileEdits, GradedProject, Grader, Instance, Skill, Task};

const CORE: &str = r#"def clamp(x, lo, hi):
    """Clamp x into the closed interval [lo, hi]."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def mean_abs(values):
    """Mean of the absolute values."""
    total = 0
    for value in values:
        total += abs(value)
    return total / len(values)


def words(text):
    """Lower-cased words of a text."""
    return [word.lower() for word in text.split() if word]


class Counter:
    def __init__(self, start=0):
        self.count = start

    def bump(self, by=1):
        if by < 0:
            raise ValueError("negative step")
        self.count = self.count + by
        return self.count
"#;

const TESTS: &str = r#"import pytest

from mini import Counter, clamp, mean_abs, words


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_clamp_low():
    assert clamp(-3, 0, 10) == 0


def test_clamp_high():
    assert clamp(30, 0, 10) == 10


def test_mean_abs():
    assert mean_abs([1, -3]) == 2


def test_words():
    assert words("Hello  World") == ["hello", "world"]


def test_counter():
    c = Counter(2)
    assert c.bump() == 3
    assert c.bump(4) == 7


def test_counter_negative():
    with pytest.raises(ValueError):
        Counter().bump(-1)
"#;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn project(dir: &Path) -> Prepared {
    let venv = std::env::var_os("ATOMSKILL_TEST_VENV")
        .expect("ATOMSKILL_TEST_VENV: a virtualenv with pytest (scripts/test makes one)");
    let venv = std::path::PathBuf::from(venv).canonicalize().unwrap();
    let tree = dir.join("mini-1.0");
    write(
        &tree,
        "src/mini/__init__.py",
        "from .core import Counter, clamp, mean_abs, words\n",
    );
    write(&tree, "src/mini/core.py", CORE);
    write(&tree, "tests/test_core.py", TESTS);
    let spec = ProjectSpec {
        name: "mini".into(),
        ecosystem: Ecosystem::Pypi,
        version: "1.0".into(),
        archive: "mini-1.0.tar.gz".into(),
        url: "file:///nonexistent".into(),
        sha256: "0".repeat(64),
        root: "mini-1.0".into(),
        requires_python: None,
        source_dir: "src".into(),
        packages: vec!["mini".into()],
        tests: vec!["tests".into()],
        test_deps: vec![],
        install: InstallMode::Pythonpath,
        test_command: [
            "python",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests",
        ]
        .map(String::from)
        .to_vec(),
        ignore: vec![],
        deselect: vec![],
        env: BTreeMap::new(),
        measured: None,
    };
    let environment = Environment::Python { venv };
    let mut run_env: BTreeMap<String, String> =
        [("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONHASHSEED", "0")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
    run_env.extend(environment.run_env(&spec));
    Prepared {
        spec,
        tree,
        environment,
        run_env,
        skipped_links: vec![],
    }
}

fn sandbox(dir: &Path, venv: &Path) -> (Arc<Sandbox>, SnapshotStore) {
    let config = SandboxConfig {
        isolation: Isolation::Full,
        runtime_dir: dir.join("run"),
        sandbox_uid: 210_000,
        sandbox_gid: 210_000,
        read_only_mounts: vec![venv.to_path_buf()],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(
        config,
        Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        },
    )
    .expect("these tests need root for the sandbox");
    let store = SnapshotStore::new(dir.join("snapshots"), sandbox.snapshot_owner());
    (Arc::new(sandbox), store)
}

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
        let instances: Vec<Instance> = read_lines(&out.join(format!("{}.jsonl", skill.name())));
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
    let editing: Vec<Instance> = read_lines(&out.join("editing.jsonl"));
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
