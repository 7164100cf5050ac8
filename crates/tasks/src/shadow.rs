//! Modules an answer may not add: those named like the test runner, its plugins, the packages of
//! the project's environment, or the standard library, where they could be imported in their
//! place.
//!
//! Every pytest run starts through `testrun`'s isolated start (pytest imported from the
//! environment first, the project after the standard library), which makes such a module inert;
//! refusing the answer as well gives a clear reason and a tampering flag instead of a silent
//! failure. What counts:
//! - a module or package named like one of the runner (`pytest`, `_pytest`, `pluggy`, `py`,
//!   atomskill's own plugins, `sitecustomize`, `usercustomize`) or of the environment's
//!   site-packages (other than the project's own packages), added anywhere outside a package;
//! - a package named like a standard-library module, or a module so named in the project's
//!   source directory (`src/json.py`). A scratch script at the top of the workspace (`test.py`,
//!   `random.py`) is not refused: agents often leave one, and the standard library comes first.

use std::collections::BTreeSet;
use std::path::Path;

use corpus::{Ecosystem, Environment, Prepared};

use crate::canary::{TamperKind, Tampering};
use crate::patch::FileEdits;

const STDLIB: &str = include_str!("../py/stdlib_modules.txt");

const RUNNER: [&str; 9] = [
    "pytest",
    "_pytest",
    "pluggy",
    "py",
    "iniconfig",
    "sitecustomize",
    "usercustomize",
    "atomskill_seed",
    "atomskill_run",
];

/// The names a project's answers may not add modules under.
#[derive(Clone, Debug, Default)]
pub struct ShadowNames {
    /// The runner's and the environment's top-level modules.
    environment: BTreeSet<String>,
    stdlib: BTreeSet<String>,
    /// The project's source directory, when it is not the workspace root (`src`).
    source_dir: Option<String>,
}

impl ShadowNames {
    /// The names of `prepared`'s environment (empty for crates).
    pub fn of(prepared: &Prepared) -> ShadowNames {
        if prepared.spec.ecosystem != Ecosystem::Pypi {
            return ShadowNames::default();
        }
        let mut environment: BTreeSet<String> = RUNNER.iter().map(|s| s.to_string()).collect();
        if let Environment::Python { venv } = &prepared.environment {
            environment.extend(site_packages_names(venv));
        }
        for own in &prepared.spec.packages {
            environment.remove(own.split('.').next().unwrap_or(own));
        }
        let source_dir = match prepared.spec.source_dir.trim_matches('/') {
            "" | "." => None,
            dir => Some(dir.to_string()),
        };
        ShadowNames {
            environment,
            stdlib: STDLIB.lines().map(str::to_string).collect(),
            source_dir,
        }
    }

    /// Whether an added file shadows something, given the pristine tree at `root` and the
    /// edits that make the graded tree: the tampering, if it does.
    pub fn check(&self, root: &Path, edits: &FileEdits) -> Option<Tampering> {
        if self.stdlib.is_empty() {
            return None;
        }
        for (path, content) in &edits.0 {
            if content.is_none() || root.join(path).exists() {
                continue;
            }
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            for (i, component) in parts.iter().enumerate() {
                let is_file = i + 1 == parts.len();
                let parent = parts[..i].join("/");
                if i > 0 && is_package(root, edits, &parent) {
                    continue;
                }
                let module = if is_file {
                    match module_name(component) {
                        Some(module) => module,
                        None => continue,
                    }
                } else {
                    component
                };
                let what = if self.environment.contains(module) {
                    Some("the test runner or a package of the environment")
                } else if self.stdlib.contains(module)
                    && (!is_file || self.source_dir.as_deref() == Some(parent.as_str()))
                {
                    Some("the standard library")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Some(Tampering {
                        kind: TamperKind::ShadowedModule,
                        evidence: format!(
                            "`{path}` adds a module `{module}` that would shadow {what}"
                        ),
                    });
                }
            }
        }
        None
    }
}

/// The module name of a file name (`json.py`, `json.cpython-311-x86_64-linux-gnu.so`), if it is
/// a module.
fn module_name(file: &str) -> Option<&str> {
    let (stem, _) = file.split_once('.')?;
    let is_module = [".py", ".pyc", ".so", ".pyd", ".pyw"]
        .iter()
        .any(|ext| file.ends_with(ext));
    (is_module && !stem.is_empty()).then_some(stem)
}

fn is_package(root: &Path, edits: &FileEdits, dir: &str) -> bool {
    let init = format!("{dir}/__init__.py");
    match edits.0.get(&init) {
        Some(content) => content.is_some(),
        None => root.join(&init).exists(),
    }
}

/// Top-level module names installed in a virtualenv's site-packages.
fn site_packages_names(venv: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(lib) = std::fs::read_dir(venv.join("lib")) else {
        return names;
    };
    for python in lib.flatten() {
        let Ok(entries) = std::fs::read_dir(python.path().join("site-packages")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".dist-info")
                || name.ends_with(".egg-info")
                || name.ends_with(".pth")
                || name == "__pycache__"
            {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let module = if is_dir {
                Some(name.as_str())
            } else {
                module_name(&name)
            };
            if let Some(module) = module {
                names.insert(module.to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "src/mini/__init__.py",
            "src/mini/core.py",
            "tests/test_core.py",
        ] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), "").unwrap();
        }
        let names = ShadowNames {
            environment: ["pytest", "_pytest", "hypothesis"].map(String::from).into(),
            stdlib: ["json", "xml", "test", "random"].map(String::from).into(),
            source_dir: Some("src".into()),
        };
        for (path, refused) in [
            ("pytest.py", true),
            ("src/pytest.py", true),
            ("src/_pytest/main.py", true),
            ("hypothesis/__init__.py", true),
            ("src/json.py", true),
            ("src/xml/__init__.py", true),
            ("xml/etree/ElementTree.py", true),
            ("docs/pytest.cpython-311-x86_64-linux-gnu.so", true),
            // Inside a package: only reachable as `mini.json`.
            ("src/mini/json.py", false),
            ("src/mini/pytest.py", false),
            // A scratch script at the top: the standard library comes first.
            ("test.py", false),
            ("random.py", false),
            ("reproduce.py", false),
            ("src/mini/helpers.py", false),
            ("notes.txt", false),
            // Changing a file that exists is never adding a module.
            ("src/mini/core.py", false),
        ] {
            let edits = FileEdits::new().write(path, "x = 1\n");
            assert_eq!(names.check(root, &edits).is_some(), refused, "{path}");
        }
        // A new package of the answer's own makes what is inside it safe.
        let edits = FileEdits::new()
            .write("src/extra/__init__.py", "")
            .write("src/extra/json.py", "");
        assert!(names.check(root, &edits).is_none());
    }
}
