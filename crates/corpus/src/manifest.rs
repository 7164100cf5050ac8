//! The corpus manifest: real projects pinned by name, version and archive sha256, with what it
//! takes to run their test suites. `corpus/default.toml` documents every field.
//!
//! Parsing never guesses: an unknown field, a missing one or a bad value is an error that names
//! the manifest line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const SCHEMA_VERSION: u32 = 1;

/// The default manifest shipped with atomskill.
pub const DEFAULT_MANIFEST: &str = include_str!("../../../corpus/default.toml");

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// Environment variables of every install and test run.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, rename = "project")]
    pub projects: Vec<ProjectSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Pypi,
    Crates,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallMode {
    /// Recorded by the manifest's author; installed like `pythonpath`, because the sandbox sees
    /// the tree at `/workspace`, not where an editable install would point.
    Editable,
    Pythonpath,
    Cargo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Excluded {
    #[serde(alias = "path")]
    pub id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub name: String,
    pub ecosystem: Ecosystem,
    pub version: String,
    pub archive: String,
    pub url: String,
    pub sha256: String,
    pub root: String,
    #[serde(default)]
    pub requires_python: Option<String>,
    pub source_dir: String,
    pub packages: Vec<String>,
    #[serde(default)]
    pub tests: Vec<String>,
    #[serde(default)]
    pub test_deps: Vec<String>,
    pub install: InstallMode,
    pub test_command: Vec<String>,
    #[serde(default)]
    pub ignore: Vec<Excluded>,
    #[serde(default)]
    pub deselect: Vec<Excluded>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What the manifest's author measured; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<toml::Value>,
}

impl ProjectSpec {
    /// `name-version`, the project's directory name in the cache.
    pub fn key(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// Whether a root-relative path is test code: under one of `tests`, or (Rust) an
    /// integration-test, bench or example directory.
    pub fn is_test_path(&self, path: &str) -> bool {
        let path = path.trim_start_matches("./");
        let under = |dir: &str| {
            let dir = dir.trim_end_matches('/');
            path == dir || path.starts_with(&format!("{dir}/"))
        };
        if self.tests.iter().any(|dir| under(dir)) {
            return true;
        }
        let file = path.rsplit('/').next().unwrap_or(path);
        match self.ecosystem {
            Ecosystem::Pypi => {
                file == "conftest.py"
                    || (file.starts_with("test_") && file.ends_with(".py"))
                    || file.ends_with("_test.py")
            }
            Ecosystem::Crates => ["tests", "benches", "examples"]
                .iter()
                .any(|dir| under(dir)),
        }
    }

    /// Whether a root-relative path is code under test (a mutation target): below `source_dir`,
    /// inside one of `packages` for Python, and not test code.
    pub fn is_source_path(&self, path: &str) -> bool {
        let path = path.trim_start_matches("./");
        if self.is_test_path(path) {
            return false;
        }
        let rel = match self.source_dir.trim_end_matches('/') {
            "." | "" => path,
            dir => match path.strip_prefix(dir).and_then(|p| p.strip_prefix('/')) {
                Some(rest) => rest,
                None => return false,
            },
        };
        match self.ecosystem {
            Ecosystem::Pypi => {
                rel.ends_with(".py")
                    && self.packages.iter().any(|package| {
                        rel == format!("{package}.py") || rel.starts_with(&format!("{package}/"))
                    })
            }
            Ecosystem::Crates => rel.ends_with(".rs"),
        }
    }
}

impl Manifest {
    /// Parses and checks a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|error| Error::Manifest {
            path: origin.to_string(),
            line: error.span().map_or(0, |span| line_of(text, span.start)),
            message: error.message().to_string(),
        })?;
        let project_line = |index: usize| {
            text.match_indices("[[project]]")
                .nth(index)
                .map_or(0, |(offset, _)| line_of(text, offset))
        };
        let fail = |index: usize, message: String| Error::Manifest {
            path: origin.to_string(),
            line: project_line(index),
            message,
        };
        if manifest.schema_version != SCHEMA_VERSION {
            return Err(Error::Manifest {
                path: origin.to_string(),
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("schema_version"))
                    .map_or(0, |i| i + 1),
                message: format!(
                    "schema_version {} is not supported (this build reads {SCHEMA_VERSION})",
                    manifest.schema_version
                ),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, project) in manifest.projects.iter().enumerate() {
            if !seen.insert(project.key()) {
                return Err(fail(
                    index,
                    format!("project {} is listed twice", project.key()),
                ));
            }
            let sha_ok =
                project.sha256.len() == 64 && project.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !sha_ok {
                return Err(fail(
                    index,
                    format!("{}: sha256 must be 64 hex digits", project.name),
                ));
            }
            if project.test_command.is_empty() {
                return Err(fail(
                    index,
                    format!("{}: test_command is empty", project.name),
                ));
            }
            for path in [&project.root, &project.source_dir]
                .into_iter()
                .chain(&project.tests)
            {
                if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                    return Err(fail(
                        index,
                        format!(
                            "{}: `{path}` must be a relative path inside the archive",
                            project.name
                        ),
                    ));
                }
            }
            let cargo = project.install == InstallMode::Cargo;
            if cargo != (project.ecosystem == Ecosystem::Crates) {
                return Err(fail(
                    index,
                    format!(
                        "{}: install = \"cargo\" goes with ecosystem = \"crates\" and only with it",
                        project.name
                    ),
                ));
            }
        }
        Ok(manifest)
    }

    pub fn load(path: &std::path::Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    pub fn default_manifest() -> Manifest {
        Manifest::parse(DEFAULT_MANIFEST, "corpus/default.toml")
            .expect("the embedded default manifest is checked by the tests")
    }

    pub fn project(&self, name: &str) -> Option<&ProjectSpec> {
        self.projects
            .iter()
            .find(|p| p.name == name || p.key() == name)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_manifest_parses() {
        let manifest = Manifest::default_manifest();
        let pypi = manifest
            .projects
            .iter()
            .filter(|p| p.ecosystem == Ecosystem::Pypi)
            .count();
        let crates = manifest.projects.len() - pypi;
        assert!(pypi >= 12 && crates >= 3, "{pypi} pypi, {crates} crates");
    }

    fn check_error(text: &str, line: usize, needle: &str) {
        let error = Manifest::parse(text, "m.toml").unwrap_err().to_string();
        assert!(error.starts_with(&format!("m.toml:{line}:")), "{error}");
        assert!(error.contains(needle), "{error}");
    }

    const GOOD: &str = r#"schema_version = 1
[[project]]
name = "p"
ecosystem = "pypi"
version = "1.0"
archive = "p-1.0.tar.gz"
url = "https://example.invalid/p-1.0.tar.gz"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
root = "p-1.0"
source_dir = "src"
packages = ["p"]
tests = ["tests"]
install = "pythonpath"
test_command = ["python", "-m", "pytest"]
"#;

    #[test]
    fn malformed_manifests_name_the_line() {
        assert!(Manifest::parse(GOOD, "m.toml").is_ok());
        check_error(
            &GOOD.replace("schema_version = 1", "schema_version = 7"),
            1,
            "schema_version 7",
        );
        check_error(
            &GOOD.replace("version = \"1.0\"\n", "version = \"1.0\"\ncolour = 3\n"),
            6,
            "colour",
        );
        check_error(
            &GOOD.replace("ecosystem = \"pypi\"", "ecosystem = \"npm\""),
            4,
            "npm",
        );
        check_error(
            &GOOD.replace("sha256 = \"0000", "sha256 = \"zz00"),
            2,
            "sha256",
        );
        check_error(
            &GOOD.replace("root = \"p-1.0\"", "root = \"../etc\""),
            2,
            "relative path",
        );
        check_error(
            &GOOD.replace("install = \"pythonpath\"", "install = \"cargo\""),
            2,
            "cargo",
        );
        check_error(
            &format!("{GOOD}{}", &GOOD[GOOD.find("[[project]]").unwrap()..]),
            15,
            "twice",
        );
    }

    #[test]
    fn test_and_source_paths() {
        let manifest = Manifest::parse(GOOD, "m.toml").unwrap();
        let p = &manifest.projects[0];
        for (path, test, source) in [
            ("tests/test_a.py", true, false),
            ("src/p/a.py", false, true),
            ("src/p/conftest.py", true, false),
            ("src/p/test_a.py", true, false),
            ("src/q/a.py", false, false),
            ("src/p.py", false, true),
            ("setup.py", false, false),
            ("src/p/data.json", false, false),
        ] {
            assert_eq!(
                (p.is_test_path(path), p.is_source_path(path)),
                (test, source),
                "{path}"
            );
        }
    }
}
