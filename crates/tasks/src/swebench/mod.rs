//! SWE-bench JSONL for the bug-fixing task, in the form of SWE-bench 5.x datasets: export (with
//! the four fields the harness's `make_test_spec` reads: `image`, `eval_script`, `log_parser`,
//! `eval_type`, and the image recipe as `dockerfile`) and import of such records.
//!
//! An exported record describes a tree a consumer can rebuild without atomskill: the
//! project's source archive (`source`: URL and sha256) with `setup_patch` applied (the bug
//! written in, the hidden test files deleted) is the starting state, committed with a fixed
//! identity and date as `base_commit`. `patch` (the gold fix) and `test_patch` (the hidden test
//! files) apply to it with `git apply`; the export builds the tree and checks both.

pub mod base;
pub mod scripts;

use std::collections::BTreeMap;
use std::path::Path;

use corpus::{Ecosystem, ProjectSpec};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::instance::{BugRef, Instance, ProjectRef, Task, SCHEMA_VERSION};
use crate::patch::FileEdits;

/// One SWE-bench record (the harness's field names; test lists written as JSON arrays, read
/// as arrays or as JSON strings holding arrays, the form of the Hugging Face datasets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweBenchRecord {
    pub instance_id: String,
    /// `owner/name`: the project's registry stands in for the owner (`pypi/toolz`); the name
    /// and version are in `source` and `version`.
    pub repo: String,
    /// The git commit of the starting (buggy) tree as `dockerfile` builds it, for records
    /// atomskill exports; for older records, the id of a local snapshot.
    pub base_commit: String,
    /// The gold fix, against `base_commit`.
    pub patch: String,
    /// The hidden test files, added back, against `base_commit`.
    pub test_patch: String,
    pub problem_statement: String,
    #[serde(default)]
    pub hints_text: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(rename = "FAIL_TO_PASS", deserialize_with = "test_list")]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS", deserialize_with = "test_list")]
    pub pass_to_pass: Vec<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub environment_setup_commit: String,
    /// The image the harness runs the instance in (`sweb.eval.x86_64.<id>:latest`), built from
    /// `dockerfile`.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub eval_script: String,
    /// A key of the harness's `PARSER_REGISTRY`.
    #[serde(default)]
    pub log_parser: String,
    /// `pass_and_fail`.
    #[serde(default)]
    pub eval_type: String,
    /// atomskill's extension: the image recipe (Dockerfile text; the harness's task repos keep
    /// it as `tasks/<instance_id>/Dockerfile`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dockerfile: String,
    /// atomskill's extension: where the pristine tree comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// atomskill's extension: the diff from the pristine tree (the archive's `root`) to the
    /// starting state: the bug written in and the hidden test files deleted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup_patch: String,
}

/// The project a record's pristine tree comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
    /// The directory of the archive that is the tree.
    pub root: String,
}

/// A test list given as a JSON array or as a JSON string holding one.
fn test_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    match Form::deserialize(deserializer)? {
        Form::List(list) => Ok(list),
        Form::Text(text) => serde_json::from_str(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "a test list given as a string must hold a JSON array of strings: {e}"
            ))
        }),
    }
}

/// What the export needs of the project besides its pristine files.
pub struct ExportProject<'a> {
    pub spec: &'a ProjectSpec,
    /// atomskill's environment of a test run (`corpus::Prepared::run_env`).
    pub run_env: &'a BTreeMap<String, String>,
    /// `X.Y`: the Python the project's environment runs.
    pub python: &'a str,
    /// The project's source archive (checked against `spec.sha256` when the tree is built).
    pub archive: &'a Path,
}

/// The record of a bug-fixing instance (`None` for other skills). `pristine(path)` gives a file
/// of the pristine snapshot; the starting tree is built under `work` (an empty directory the
/// caller removes) from the archive, to learn `base_commit` and check that `patch` and
/// `test_patch` apply to it.
pub fn export(
    instance: &Instance,
    project: &ExportProject,
    pristine: &dyn Fn(&str) -> Option<String>,
    work: &Path,
) -> Result<Option<SweBenchRecord>> {
    let Task::BugFixing {
        problem_statement,
        gold_patch,
        fail_to_pass,
        pass_to_pass,
    } = &instance.task
    else {
        return Ok(None);
    };
    let spec = project.spec;
    if spec.ecosystem != Ecosystem::Pypi {
        return Err(Error::Export(format!(
            "{}: only Python projects can be exported (SWE-bench's cargo log parser names tests \
             without their target)",
            instance.instance_id
        )));
    }
    // The agent starts from pristine + setup: the bug written in, hidden tests deleted.
    let start = |path: &str| match instance.setup.0.get(path) {
        Some(content) => content.clone(),
        None => pristine(path),
    };
    let tests = FileEdits(
        instance
            .setup
            .0
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(p, _)| (p.clone(), pristine(p)))
            .collect(),
    );
    let patch = gold_patch.to_unified_diff(start);
    let test_patch = tests.to_unified_diff(start);
    let setup_patch = instance.setup.to_unified_diff(pristine);
    for (what, text) in [
        ("patch", &patch),
        ("test_patch", &test_patch),
        ("setup_patch", &setup_patch),
    ] {
        if scripts::delimiters_clash(text) {
            return Err(Error::Export(format!(
                "{}: {what} holds a line the scripts use as a heredoc delimiter",
                instance.instance_id
            )));
        }
    }
    let archive = scripts::ArchiveRef {
        url: &spec.url,
        sha256: &spec.sha256,
        root: &spec.root,
    };
    let build_script = scripts::build_base_script(&instance.instance_id, &archive, &setup_patch);
    let base_commit = base::build(&build_script, project.archive, work)?;
    base::check_applies(work, &patch, "the gold patch")?;
    base::check_applies(work, &test_patch, "the test patch")?;
    let eval_script = scripts::eval_script(&scripts::EvalInputs {
        spec,
        base_commit: &base_commit,
        test_patch: &test_patch,
        test_files: tests.paths().cloned().collect(),
        test_ids: fail_to_pass.iter().chain(pass_to_pass).cloned().collect(),
    });
    let dockerfile = scripts::dockerfile(&scripts::ImageInputs {
        spec,
        python: project.python,
        run_env: project.run_env,
        base_commit: &base_commit,
        build_script: &build_script,
    });
    Ok(Some(SweBenchRecord {
        instance_id: instance.instance_id.clone(),
        repo: format!("pypi/{}", instance.project.name),
        base_commit: base_commit.clone(),
        patch,
        test_patch,
        problem_statement: problem_statement.clone(),
        hints_text: String::new(),
        created_at: String::new(),
        fail_to_pass: fail_to_pass.clone(),
        pass_to_pass: pass_to_pass.clone(),
        version: instance.project.version.clone(),
        environment_setup_commit: base_commit,
        image: scripts::image_name(&instance.instance_id),
        eval_script,
        log_parser: "parse_log_pytest".into(),
        eval_type: "pass_and_fail".into(),
        dockerfile,
        source: Some(Source {
            ecosystem: spec.ecosystem,
            name: spec.name.clone(),
            version: spec.version.clone(),
            url: spec.url.clone(),
            sha256: spec.sha256.clone(),
            root: spec.root.clone(),
        }),
        setup_patch,
    }))
}

/// The project name and version a record names: its `source`, or (older records) a `repo` of
/// the form `name==version`, or the last part of `owner/name` and `version`.
pub fn project_of(record: &SweBenchRecord) -> (String, String) {
    if let Some(source) = &record.source {
        return (source.name.clone(), source.version.clone());
    }
    match record.repo.split_once("==") {
        Some((name, version)) => (name.to_string(), version.to_string()),
        None => (
            record
                .repo
                .rsplit('/')
                .next()
                .unwrap_or(&record.repo)
                .to_string(),
            record.version.clone(),
        ),
    }
}

/// Rebuilds a bug-fixing instance from a record. `snapshot` is the id of the local snapshot
/// of its pristine tree (the archive's `root` for records atomskill exported, `base_commit`
/// itself for records whose base is a local snapshot); `pristine(path)` reads it. The
/// starting state is the pristine tree with `setup_patch` applied (empty for records that
/// start from their base commit) and the files `test_patch` adds deleted.
pub fn import(
    record: &SweBenchRecord,
    ecosystem: corpus::Ecosystem,
    snapshot: &str,
    pristine: &dyn Fn(&str) -> Option<String>,
) -> Result<Instance> {
    let (name, version) = project_of(record);
    let setup_code = FileEdits::from_unified_diff(&record.setup_patch, pristine).map_err(|e| {
        Error::Patch(format!(
            "{}: setup_patch does not apply to snapshot {snapshot}: {e}",
            record.instance_id
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
            snapshot: snapshot.to_string(),
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
    use sha2::Digest;

    const CODE: &str = "def f(x):\n    return x + 1\n";
    const TESTS: &str = "from p.a import f\n\ndef test_f():\n    assert f(1) == 2\n";

    fn spec(archive: &Path) -> ProjectSpec {
        let sha256 = format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(archive).unwrap())
        );
        serde_json::from_value(serde_json::json!({
            "name": "p", "ecosystem": "pypi", "version": "1.0", "archive": "p-1.0.tar.gz",
            "url": format!("file://{}", archive.display()), "sha256": sha256,
            "root": "p-1.0", "source_dir": "src", "packages": ["p"], "tests": ["tests"],
            "install": "pythonpath",
            "test_command": ["python", "-m", "pytest", "-q", "tests"],
        }))
        .unwrap()
    }

    fn instance() -> Instance {
        Instance {
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
                gold_patch: FileEdits::new().write("src/p/a.py", CODE),
                fail_to_pass: vec!["tests/test_a.py::test_f".into()],
                pass_to_pass: vec![],
            },
            validation: None,
            extra: Default::default(),
        }
    }

    fn pristine(path: &str) -> Option<String> {
        match path {
            "src/p/a.py" => Some(CODE.to_string()),
            "tests/test_a.py" => Some(TESTS.to_string()),
            _ => None,
        }
    }

    /// A source archive of the pristine tree, as a registry serves it.
    fn archive(dir: &Path) -> std::path::PathBuf {
        let root = dir.join("p-1.0");
        for (path, text) in [("src/p/a.py", CODE), ("tests/test_a.py", TESTS)] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let archive = dir.join("p-1.0.tar.gz");
        let status = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(dir)
            .arg("p-1.0")
            .status()
            .unwrap();
        assert!(status.success());
        archive
    }

    #[test]
    fn export_import_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let archive = archive(dir.path());
        let spec = spec(&archive);
        let project = ExportProject {
            spec: &spec,
            run_env: &BTreeMap::new(),
            python: "3.11",
            archive: &archive,
        };
        let instance = instance();
        let record = export(&instance, &project, &pristine, &dir.path().join("work"))
            .unwrap()
            .unwrap();
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
        assert!(
            record.setup_patch.contains("+++ /dev/null"),
            "{}",
            record.setup_patch
        );
        assert_eq!(record.repo, "pypi/p");
        assert_eq!(record.base_commit.len(), 40);
        assert_eq!(record.image, "sweb.eval.x86_64.p-1.0.abc.bug_fixing:latest");
        assert!(record.dockerfile.contains(&record.base_commit));
        // The same tree gives the same commit, wherever it is built.
        let again = export(&instance, &project, &pristine, &dir.path().join("again"))
            .unwrap()
            .unwrap();
        assert_eq!(again.base_commit, record.base_commit);

        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains("\"FAIL_TO_PASS\":[\""));
        let back = import(
            &serde_json::from_str(&line).unwrap(),
            corpus::Ecosystem::Pypi,
            "snap",
            &pristine,
        )
        .unwrap();
        assert_eq!(back.project, instance.project);
        assert_eq!(back.setup, instance.setup);
        assert_eq!(back.task, instance.task);
    }

    #[test]
    fn test_lists_may_be_json_strings() {
        let mut value = serde_json::json!({
            "instance_id": "x", "repo": "o/p", "base_commit": "c", "patch": "",
            "test_patch": "", "problem_statement": "",
            "FAIL_TO_PASS": "[\"t.py::a\", \"t.py::b\"]", "PASS_TO_PASS": ["t.py::c"],
        });
        let record: SweBenchRecord = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(record.fail_to_pass, ["t.py::a", "t.py::b"]);
        assert_eq!(record.pass_to_pass, ["t.py::c"]);
        assert_eq!(project_of(&record), ("p".to_string(), String::new()));
        value["PASS_TO_PASS"] = "t.py::c".into();
        let error = serde_json::from_value::<SweBenchRecord>(value).unwrap_err();
        assert!(error.to_string().contains("JSON array"), "{error}");
    }
}
