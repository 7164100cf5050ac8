//! SWE-bench JSONL for the bug-fixing task: export (the snapshot id stands in for
//! `base_commit`, the hidden test files re-added form `test_patch`) and import of such records.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::instance::{BugRef, Instance, ProjectRef, Task, SCHEMA_VERSION};
use crate::patch::FileEdits;

/// One SWE-bench record (the harness's field names; lists as JSON arrays).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweBenchRecord {
    pub instance_id: String,
    /// `name==version` of the project.
    pub repo: String,
    /// The pristine snapshot id.
    pub base_commit: String,
    pub patch: String,
    pub test_patch: String,
    pub problem_statement: String,
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: Vec<String>,
    #[serde(default)]
    pub version: String,
    /// atomskill's extension: the diff from `base_commit` to the buggy starting state (a
    /// synthesized bug written into the pristine snapshot). Empty for records whose base commit
    /// is already buggy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup_patch: String,
}

/// `pristine(path)` gives a file of the pristine snapshot.
pub fn export(
    instance: &Instance,
    pristine: &dyn Fn(&str) -> Option<String>,
) -> Option<SweBenchRecord> {
    let Task::BugFixing {
        problem_statement,
        gold_patch,
        fail_to_pass,
        pass_to_pass,
    } = &instance.task
    else {
        return None;
    };
    // The agent starts from pristine + setup: the bug written in, hidden tests deleted.
    let start = |path: &str| match instance.setup.0.get(path) {
        Some(content) => content.clone(),
        None => pristine(path),
    };
    let code: FileEdits = FileEdits(gold_patch.0.clone());
    let setup_code = FileEdits(
        instance
            .setup
            .0
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect(),
    );
    let tests = FileEdits(
        instance
            .setup
            .0
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(p, _)| (p.clone(), pristine(p)))
            .collect(),
    );
    Some(SweBenchRecord {
        instance_id: instance.instance_id.clone(),
        repo: format!("{}=={}", instance.project.name, instance.project.version),
        base_commit: instance.project.snapshot.clone(),
        patch: code.to_unified_diff(start),
        test_patch: tests.to_unified_diff(start),
        problem_statement: problem_statement.clone(),
        fail_to_pass: fail_to_pass.clone(),
        pass_to_pass: pass_to_pass.clone(),
        version: instance.project.version.clone(),
        setup_patch: setup_code.to_unified_diff(pristine),
    })
}

/// Rebuilds a bug-fixing instance from a record whose `base_commit` is a snapshot this machine
/// has; `pristine(path)` reads that snapshot. The buggy starting state is the pristine tree:
/// SWE-bench records start from the buggy commit itself, so `setup` only deletes the files the
/// test patch adds back.
pub fn import(
    record: &SweBenchRecord,
    ecosystem: corpus::Ecosystem,
    pristine: &dyn Fn(&str) -> Option<String>,
) -> Result<Instance> {
    let (name, version) = record
        .repo
        .split_once("==")
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .unwrap_or((record.repo.clone(), record.version.clone()));
    let setup_code = FileEdits::from_unified_diff(&record.setup_patch, pristine).map_err(|e| {
        Error::Patch(format!(
            "{}: setup_patch does not apply to snapshot {}: {e}",
            record.instance_id, record.base_commit
        ))
    })?;
    let start = |path: &str| match setup_code.0.get(path) {
        Some(content) => content.clone(),
        None => pristine(path),
    };
    let gold_patch = FileEdits::from_unified_diff(&record.patch, start).map_err(|e| {
        Error::Patch(format!(
            "{}: the patch does not apply to its starting state: {e}",
            record.instance_id
        ))
    })?;
    // The test patch adds the hidden test files back: the agent starts without them.
    let test_files = FileEdits::from_unified_diff(&record.test_patch, |_| None)?;
    let mut setup = setup_code.clone();
    for path in test_files.paths() {
        setup = setup.delete(path.clone());
    }
    let file = gold_patch.paths().next().cloned().unwrap_or_default();
    Ok(Instance {
        schema_version: SCHEMA_VERSION,
        instance_id: record.instance_id.clone(),
        project: ProjectRef {
            name,
            version,
            ecosystem,
            snapshot: record.base_commit.clone(),
        },
        bug: BugRef {
            bug_id: record.instance_id.clone(),
            file,
            function: None,
            operators: vec![],
            line: 0,
            description: "imported from SWE-bench JSONL".into(),
            seed: 0,
        },
        setup,
        task: Task::BugFixing {
            problem_statement: record.problem_statement.clone(),
            gold_patch,
            fail_to_pass: record.fail_to_pass.clone(),
            pass_to_pass: record.pass_to_pass.clone(),
        },
        validation: None,
        extra: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_import_round_trip() {
        let pristine = |path: &str| match path {
            "src/p/a.py" => Some("def f(x):\n    return x + 1\n".to_string()),
            "tests/test_a.py" => {
                Some("from p.a import f\n\ndef test_f():\n    assert f(1) == 2\n".to_string())
            }
            _ => None,
        };
        let instance = Instance {
            schema_version: SCHEMA_VERSION,
            instance_id: "p-1.0.abc.bug_fixing".into(),
            project: ProjectRef {
                name: "p".into(),
                version: "1.0".into(),
                ecosystem: corpus::Ecosystem::Pypi,
                snapshot: "snap".into(),
            },
            bug: BugRef {
                bug_id: "abc".into(),
                file: "src/p/a.py".into(),
                function: Some("f".into()),
                operators: vec![],
                line: 2,
                description: String::new(),
                seed: 0,
            },
            setup: FileEdits::new()
                .write("src/p/a.py", "def f(x):\n    return x - 1\n")
                .delete("tests/test_a.py"),
            task: Task::BugFixing {
                problem_statement: "f is off".into(),
                gold_patch: FileEdits::new().write("src/p/a.py", pristine("src/p/a.py").unwrap()),
                fail_to_pass: vec!["tests/test_a.py::test_f".into()],
                pass_to_pass: vec![],
            },
            validation: None,
            extra: Default::default(),
        };
        let record = export(&instance, &pristine).unwrap();
        assert!(
            record
                .patch
                .contains("-    return x - 1\n+    return x + 1"),
            "{}",
            record.patch
        );
        assert!(
            record.test_patch.contains("+++ b/tests/test_a.py"),
            "{}",
            record.test_patch
        );
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains("\"FAIL_TO_PASS\""));
        let back = import(
            &serde_json::from_str(&line).unwrap(),
            corpus::Ecosystem::Pypi,
            &pristine,
        )
        .unwrap();
        assert_eq!(back.setup, instance.setup);
        assert_eq!(back.task, instance.task);
    }
}
