//! Working out how to test a PyPI project from its sdist alone (`synth --repo pypi:NAME==VER`):
//! where the code and the tests are, which test dependencies it needs (extras named
//! test/tests/testing, dependency groups, requirements files, tox.ini), pinned by resolving them
//! once; and saying clearly what could not be worked out.
//!
//! Runs on the host with network access, like `corpus fetch`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::manifest::{Ecosystem, InstallMode, ProjectSpec};

const TEST_GROUPS: &[&str] = &["test", "tests", "testing", "dev"];
const NOT_PACKAGES: &[&str] = &[
    "tests",
    "test",
    "docs",
    "doc",
    "examples",
    "example",
    "benchmarks",
    "bench",
    "scripts",
    "tools",
    "build",
    "dist",
];

/// A detected project and what the detection could not settle.
#[derive(Clone, Debug)]
pub struct Detected {
    pub spec: ProjectSpec,
    pub notes: Vec<String>,
}

fn detect_error(project: &str, what: &str, message: impl Into<String>) -> Error {
    Error::Detect {
        project: project.to_string(),
        what: what.to_string(),
        message: message.into(),
    }
}

fn run(project: &str, what: &str, command: &mut Command) -> Result<String> {
    let output = command.output().map_err(|e| {
        detect_error(
            project,
            what,
            format!("could not start {:?}: {e}", command.get_program()),
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(detect_error(
            project,
            what,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Parses `pypi:NAME==VERSION`.
pub fn parse_repo(repo: &str) -> Result<(String, String)> {
    let bad = || {
        detect_error(
            repo,
            "the project",
            "expected `pypi:NAME==VERSION`, e.g. `pypi:toolz==1.2.0`",
        )
    };
    let rest = repo.strip_prefix("pypi:").ok_or_else(bad)?;
    let (name, version) = rest.split_once("==").ok_or_else(bad)?;
    if name.is_empty() || version.is_empty() {
        return Err(bad());
    }
    Ok((name.trim().to_string(), version.trim().to_string()))
}

/// Requirement lines of the kinds pip accepts, without options and includes.
fn requirement_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with('-') && !l.contains("://")
        })
        .map(String::from)
        .collect()
}

/// Test requirements from PKG-INFO extras, pyproject dependency groups, requirements files and
/// tox.ini; and runtime requirements from PKG-INFO.
pub fn test_requirements(root: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut runtime = Vec::new();
    let mut tests = Vec::new();
    let mut sources = Vec::new();
    if let Ok(info) = std::fs::read_to_string(root.join("PKG-INFO")) {
        for line in info.lines() {
            let Some(req) = line.strip_prefix("Requires-Dist: ") else {
                continue;
            };
            match req.split_once(';') {
                Some((name, marker)) if marker.contains("extra ==") => {
                    let extra = marker
                        .split("extra ==")
                        .nth(1)
                        .unwrap_or("")
                        .trim()
                        .trim_matches(['"', '\'', ' '])
                        .to_string();
                    let extra = extra
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_matches(['"', '\''])
                        .to_string();
                    if TEST_GROUPS[..3].contains(&extra.as_str()) {
                        tests.push(name.trim().to_string());
                        sources.push(format!("PKG-INFO extra `{extra}`"));
                    }
                }
                _ => runtime.push(req.trim().to_string()),
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("pyproject.toml")) {
        if let Ok(value) = text.parse::<toml::Table>() {
            if let Some(groups) = value.get("dependency-groups").and_then(|g| g.as_table()) {
                for group in TEST_GROUPS {
                    if let Some(items) = groups.get(*group).and_then(|g| g.as_array()) {
                        let found: Vec<String> = items
                            .iter()
                            .filter_map(|i| i.as_str().map(String::from))
                            .collect();
                        if !found.is_empty() {
                            sources.push(format!("pyproject dependency group `{group}`"));
                            tests.extend(found);
                        }
                    }
                }
            }
        }
    }
    for file in [
        "requirements/tests.txt",
        "requirements/test.txt",
        "requirements/testing.txt",
        "requirements-test.txt",
        "requirements-tests.txt",
        "test-requirements.txt",
        "tests/requirements.txt",
        "requirements-dev.txt",
        "requirements/dev.txt",
    ] {
        if let Ok(text) = std::fs::read_to_string(root.join(file)) {
            let found = requirement_lines(&text);
            if !found.is_empty() {
                sources.push(file.to_string());
                tests.extend(found);
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("tox.ini")) {
        let mut in_testenv = false;
        let mut in_deps = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                in_testenv = trimmed == "[testenv]";
                in_deps = false;
                continue;
            }
            if in_testenv && trimmed.starts_with("deps") {
                in_deps = true;
                let rest = trimmed
                    .trim_start_matches("deps")
                    .trim_start_matches([' ', '='])
                    .trim();
                tests.extend(requirement_lines(rest));
                sources.push("tox.ini [testenv] deps".into());
                continue;
            }
            if in_deps {
                if line.starts_with(char::is_whitespace) && !trimmed.is_empty() {
                    tests.extend(
                        requirement_lines(trimmed)
                            .into_iter()
                            .filter(|r| !r.contains('{')),
                    );
                } else {
                    in_deps = false;
                }
            }
        }
    }
    (runtime, tests, sources)
}

/// (source_dir, packages, tests) of an unpacked tree.
pub fn layout(root: &Path) -> (String, Vec<String>, Vec<String>) {
    let source_dir = if root.join("src").is_dir() {
        "src"
    } else {
        "."
    };
    let base = root.join(source_dir);
    let mut packages = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir()
                && path.join("__init__.py").exists()
                && !NOT_PACKAGES.contains(&name.as_str())
            {
                packages.insert(name);
            } else if path.is_file()
                && name.ends_with(".py")
                && !["setup.py", "conftest.py", "noxfile.py", "fabfile.py"].contains(&name.as_str())
                && !name.starts_with("test")
            {
                packages.insert(name.trim_end_matches(".py").to_string());
            }
        }
    }
    let mut tests: Vec<String> = ["tests", "test", "testing"]
        .iter()
        .filter(|d| root.join(d).is_dir())
        .map(|d| d.to_string())
        .collect();
    if tests.is_empty() {
        for package in &packages {
            for d in ["tests", "test"] {
                let rel = if source_dir == "." {
                    format!("{package}/{d}")
                } else {
                    format!("{source_dir}/{package}/{d}")
                };
                if root.join(&rel).is_dir() {
                    tests.push(rel);
                }
            }
        }
    }
    (
        source_dir.to_string(),
        packages.into_iter().collect(),
        tests,
    )
}

fn addopts_mention_cov(root: &Path) -> bool {
    ["pyproject.toml", "setup.cfg", "pytest.ini", "tox.ini"]
        .iter()
        .any(|f| {
            std::fs::read_to_string(root.join(f)).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.contains("addopts") && l.contains("--cov"))
            })
        })
}

/// Downloads the sdist, works out the layout and test dependencies, resolves and pins them.
pub fn detect(repo: &str, work: &Path) -> Result<Detected> {
    let (name, version) = parse_repo(repo)?;
    let key = format!("{name}-{version}");
    let dir = work.join(&key);
    let download = dir.join("download");
    std::fs::create_dir_all(&download).map_err(|e| Error::io(&download, e))?;
    let mut notes = Vec::new();
    // A helper venv with pip: the system interpreter may have no pip of its own.
    let helper = dir.join("resolve-venv");
    if !helper.join("bin/pip").exists() {
        run(
            &key,
            "a resolver environment",
            Command::new(crate::env::SYSTEM_PYTHON)
                .args(["-m", "venv"])
                .arg(&helper),
        )?;
    }
    let pip = helper.join("bin/pip");
    run(
        &key,
        "the source distribution",
        Command::new(&pip)
            .args([
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-binary",
                &name,
            ])
            .arg(format!("{name}=={version}"))
            .arg("-d")
            .arg(&download),
    )?;
    let archive: PathBuf = std::fs::read_dir(&download)
        .map_err(|e| Error::io(&download, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .ok_or_else(|| {
            detect_error(
                &key,
                "the source distribution",
                "pip downloaded no .tar.gz sdist",
            )
        })?;
    let bytes = std::fs::read(&archive).map_err(|e| Error::io(&archive, e))?;
    let sha256 = crate::fetch::sha256_hex(&bytes);
    let unpacked = dir.join("tree");
    if unpacked.exists() {
        std::fs::remove_dir_all(&unpacked).map_err(|e| Error::io(&unpacked, e))?;
    }
    crate::fetch::unpack_tar_gz(&archive, &unpacked)?;
    let roots: Vec<PathBuf> = std::fs::read_dir(&unpacked)
        .map_err(|e| Error::io(&unpacked, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    let [root] = roots.as_slice() else {
        return Err(detect_error(
            &key,
            "the archive root",
            format!("expected one top-level directory, found {}", roots.len()),
        ));
    };
    let root_name = root
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let (source_dir, packages, tests) = layout(root);
    if packages.is_empty() {
        return Err(detect_error(
            &key,
            "the packages",
            format!("no importable package under `{source_dir}`"),
        ));
    }
    if tests.is_empty() {
        return Err(detect_error(&key, "the tests", "the sdist has no tests/ or test/ directory (some projects leave their tests out of the sdist)"));
    }
    let (runtime, mut test_reqs, sources) = test_requirements(root);
    if sources.is_empty() {
        notes.push("no test dependencies declared anywhere (extras, dependency groups, requirements files, tox.ini): installing pytest only".into());
    } else {
        notes.push(format!("test dependencies from: {}", sources.join(", ")));
    }
    test_reqs.push("pytest".into());
    let mut command = vec![
        "python".to_string(),
        "-m".into(),
        "pytest".into(),
        "-p".into(),
        "no:cacheprovider".into(),
        "-q".into(),
    ];
    if addopts_mention_cov(root) {
        test_reqs.push("pytest-cov".into());
        command.push("--no-cov".into());
        notes.push("addopts use --cov: pytest-cov installed and --no-cov passed".into());
    }
    command.extend(tests.iter().cloned());
    // Resolve once into a scratch venv; pin what got installed.
    let venv = dir.join("pin-venv");
    if venv.exists() {
        std::fs::remove_dir_all(&venv).map_err(|e| Error::io(&venv, e))?;
    }
    run(
        &key,
        "a scratch environment",
        Command::new(crate::env::SYSTEM_PYTHON)
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    let vpip = venv.join("bin/pip");
    let quiet = ["install", "--quiet", "--disable-pip-version-check"];
    let mut wanted: Vec<String> = runtime
        .into_iter()
        .chain(test_reqs)
        .filter(|r| !r.starts_with(&name))
        .collect();
    wanted.sort();
    wanted.dedup();
    if let Err(error) = run(
        &key,
        "the test dependencies",
        Command::new(&vpip).args(quiet).args(&wanted),
    ) {
        notes.push(format!(
            "installing all declared test dependencies failed; retrying with pytest only: {error}"
        ));
        run(
            &key,
            "pytest",
            Command::new(&vpip).args(quiet).arg("pytest"),
        )?;
    }
    // Test modules that import what nothing declared: install by module name, up to 3 rounds.
    for _ in 0..3 {
        let output = Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
            ])
            .args(&tests)
            .current_dir(root)
            .env("PYTHONPATH", root.join(&source_dir))
            .output()
            .map_err(|e| detect_error(&key, "the test collection", e.to_string()))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let missing: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.split("No module named '").nth(1))
            .filter_map(|rest| rest.split('\'').next())
            .map(|m| m.split('.').next().unwrap_or(m).to_string())
            .filter(|m| !packages.contains(m))
            .collect();
        if missing.is_empty() {
            break;
        }
        for module in missing {
            match run(&key, "an undeclared test import", Command::new(&vpip).args(quiet).arg(&module)) {
                Ok(_) => notes.push(format!("tests import `{module}`, which no metadata declares: installed the PyPI package of that name")),
                Err(_) => notes.push(format!("tests import `{module}`, which is neither declared nor a PyPI package of that name: tests that need it will error")),
            }
        }
    }
    let freeze = run(
        &key,
        "the pinned environment",
        Command::new(&vpip).args([
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ]),
    )?;
    let test_deps: Vec<String> = freeze
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(&format!("{name}==")))
        .map(String::from)
        .collect();
    let spec = ProjectSpec {
        name: name.clone(),
        ecosystem: Ecosystem::Pypi,
        version: version.clone(),
        archive: archive
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        url: format!("file://{}", archive.display()),
        sha256,
        root: root_name,
        requires_python: None,
        source_dir,
        packages,
        tests,
        test_deps,
        install: InstallMode::Pythonpath,
        test_command: command,
        ignore: Vec::new(),
        deselect: Vec::new(),
        env: Default::default(),
        measured: None,
    };
    Ok(Detected { spec, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs() {
        assert_eq!(
            parse_repo("pypi:toolz==1.2.0").unwrap(),
            ("toolz".into(), "1.2.0".into())
        );
        for bad in ["toolz==1.2.0", "pypi:toolz", "pypi:==1", "crates:x==1"] {
            assert!(parse_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requirements_from_every_place() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("PKG-INFO"), "Name: p\nRequires-Dist: attrs>=20\nRequires-Dist: pytest>=7; extra == \"test\"\nRequires-Dist: sphinx; extra == \"docs\"\n").unwrap();
        std::fs::write(
            root.join("pyproject.toml"),
            "[dependency-groups]\ntests = [\"hypothesis\"]\ndocs = [\"furo\"]\n",
        )
        .unwrap();
        std::fs::create_dir(root.join("requirements")).unwrap();
        std::fs::write(
            root.join("requirements/tests.txt"),
            "# pinned\nfreezegun==1.5 # time\n-r base.txt\n",
        )
        .unwrap();
        std::fs::write(root.join("tox.ini"), "[tox]\nenvlist = py3\n[testenv]\ndeps =\n    trio\n    {env:EXTRA}\ncommands = pytest\n[testenv:docs]\ndeps = sphinx\n").unwrap();
        let (runtime, tests, sources) = test_requirements(root);
        assert_eq!(runtime, vec!["attrs>=20"]);
        assert_eq!(
            tests,
            vec!["pytest>=7", "hypothesis", "freezegun==1.5", "trio"]
        );
        assert_eq!(sources.len(), 4, "{sources:?}");
    }

    #[test]
    fn layouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "src/pkg/__init__.py",
            "src/pkg/tests/__init__.py",
            "src/single.py",
            "tests/test_a.py",
            "setup.py",
            "docs/conf.py",
        ] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), "").unwrap();
        }
        assert_eq!(
            layout(root),
            (
                "src".into(),
                vec!["pkg".into(), "single".into()],
                vec!["tests".into()]
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in ["toolz/__init__.py", "toolz/tests/test_x.py", "setup.py"] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), "").unwrap();
        }
        assert_eq!(
            layout(root),
            (".".into(), vec!["toolz".into()], vec!["toolz/tests".into()])
        );
    }
}
