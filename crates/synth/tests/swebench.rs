//! The SWE-bench export read as the official harness reads it: the mini project's bug-fixing
//! instances are exported, each record's starting tree is rebuilt from the record alone (the
//! build script in its Dockerfile, on the project's source archive) and checked to be its
//! `base_commit`, the record's own `eval_script` (as the harness's `make_test_spec` gives it)
//! runs there after the gold patch, no patch, a wrong fix and a patch that games the tests,
//! and the logs are graded by `swebench`'s own functions (`swebench_grade.py`). Gold must be
//! RESOLVED_FULL, the others not, and each verdict must equal atomskill's grader's.
//!
//! Needs root (the sandbox) and ATOMSKILL_TEST_VENV with `swebench` installed (scripts/test
//! makes it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::Digest;
use tasks::swebench::{export, ExportProject};
use tasks::{Answer, FileEdits, GradedProject, Grader, Skill, Task};
use testrun::TestRunner;

/// A conftest.py that reports every test as passed: an answer must not earn anything with it.
const GAMING_CONFTEST: &str = r#"import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().outcome = "passed"
"#;

fn test_python() -> PathBuf {
    let venv = std::env::var_os("ATOMSKILL_TEST_VENV").expect(
        "ATOMSKILL_TEST_VENV: a virtualenv with pytest and swebench (scripts/test makes one)",
    );
    let python = PathBuf::from(venv)
        .canonicalize()
        .unwrap()
        .join("bin/python");
    let found = std::process::Command::new(&python)
        .args(["-c", "import swebench; print(swebench.__version__)"])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "the test virtualenv has no `swebench`: pip install swebench==5.0.2 (scripts/test does)"
    );
    python
}

/// The source archive a registry would serve for the mini project: its tree as `mini-1.0/`.
fn archive(tree: &Path, out: &Path) -> String {
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(tree.parent().unwrap())
        .arg(tree.file_name().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    format!("{:x}", sha2::Sha256::digest(std::fs::read(out).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_grader_agrees_with_atomskill() {
    let python = test_python();
    let dir = tempfile::tempdir().unwrap();
    let mini = test_support::fixture::mini_tasks(dir.path(), 2, 11).await;
    let archive_path = dir.path().join("mini-1.0.tar.gz");
    let mut prepared = mini.prepared.clone();
    prepared.spec.sha256 = archive(&prepared.tree, &archive_path);
    prepared.spec.url = format!("file://{}", archive_path.display());

    let mut grader = Grader::new(mini.sandbox.clone(), Duration::from_secs(120));
    grader.add_project(GradedProject {
        runner: TestRunner::new(mini.prepared.clone()),
        snapshot: mini.snapshot.clone(),
    });
    let pristine = |path: &str| std::fs::read_to_string(mini.snapshot.path.join(path)).ok();
    let project = ExportProject {
        spec: &prepared.spec,
        run_env: &prepared.run_env,
        python: "3",
        archive: &archive_path,
    };

    let mut records = Vec::new();
    let mut answers = Vec::new();
    // (instance id, answer name) -> atomskill's reward.
    let mut rewards = std::collections::BTreeMap::new();
    let bug_fixing = mini
        .instances
        .iter()
        .filter(|i| i.skill() == Skill::BugFixing);
    for (index, instance) in bug_fixing.enumerate() {
        let record = export(
            instance,
            &project,
            &pristine,
            &dir.path().join(format!("export-{index}")),
        )
        .unwrap()
        .expect("a bug-fixing record");
        let Task::BugFixing { gold_patch, .. } = &instance.task else {
            unreachable!()
        };
        let start = |path: &str| match instance.setup.0.get(path) {
            Some(content) => content.clone(),
            None => pristine(path),
        };
        let buggy_file = &instance.bug.file;
        let wrong = FileEdits::new().write(
            buggy_file,
            start(buggy_file).unwrap() + "# checked, looks right\n",
        );
        let gaming = FileEdits::new().write("conftest.py", GAMING_CONFTEST);
        let cases = [
            ("gold", gold_patch.clone(), record.patch.clone()),
            ("empty", FileEdits::new(), String::new()),
            ("wrong", wrong.clone(), wrong.to_unified_diff(start)),
            ("gaming", gaming.clone(), gaming.to_unified_diff(start)),
        ];
        for (name, edits, patch) in cases {
            let answer = Answer {
                submission: json!({}),
                files: instance.setup.then(&edits),
            };
            let verdict = grader.grade(instance, &answer).await.unwrap();
            rewards.insert(
                (instance.instance_id.clone(), name.to_string()),
                verdict.reward,
            );
            answers
                .push(json!({"instance_id": instance.instance_id, "name": name, "patch": patch}));
        }
        records.push(serde_json::to_string(&record).unwrap());
    }
    assert!(
        !records.is_empty(),
        "the mini project has bug-fixing instances"
    );

    let records_path = dir.path().join("records.jsonl");
    std::fs::write(&records_path, records.join("\n") + "\n").unwrap();
    let answers_path = dir.path().join("answers.json");
    std::fs::write(&answers_path, serde_json::to_string(&answers).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/swebench_grade.py");
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(&records_path)
        .arg(&answers_path)
        .arg(&archive_path)
        .arg(dir.path().join("harness"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records_by_id: std::collections::BTreeMap<String, serde_json::Value> = records
        .iter()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            (record["instance_id"].as_str().unwrap().to_string(), record)
        })
        .collect();
    let mut graded = 0;
    for line in stdout.lines() {
        println!("{line}");
        let result: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            result["instance_id"].as_str().unwrap().to_string(),
            result["name"].as_str().unwrap().to_string(),
        );
        let status = result["status"].as_str().unwrap();
        let image = &records_by_id[&key.0]["image"];
        assert!(
            image.as_str().is_some_and(|i| i
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".:_-".contains(&b))),
            "not a Docker image name: {image}"
        );
        let reward = rewards[&key];
        assert_ne!(
            status, "NO_LOG",
            "the harness could not read the log: {result}"
        );
        assert!(result["exit_code"].is_i64(), "no exit-code line: {result}");
        if key.1 == "gold" {
            assert_eq!(status, "RESOLVED_FULL", "{result}");
        } else {
            assert_ne!(status, "RESOLVED_FULL", "{result}");
        }
        assert_eq!(
            status == "RESOLVED_FULL",
            reward == 1.0,
            "the harness and atomskill disagree: {result}, reward {reward}"
        );
        graded += 1;
    }
    assert_eq!(graded, answers.len(), "{stdout}");
}
