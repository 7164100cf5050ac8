//! A small real Python project with a real pytest suite (7 tests over 4 functions and a
//! method), for the tests of the task factory and of everything built on it.
//!
//! Not for production use: it needs root (the sandbox) and a virtualenv with pytest.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corpus::{Ecosystem, Environment, InstallMode, Prepared, ProjectSpec};
use sandbox::{Isolation, Limits, Sandbox, SandboxConfig, SnapshotStore};

pub const MINI_CORE: &str = r#"def clamp(x, lo, hi):
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

pub const MINI_TESTS: &str = r#"import pytest

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

/// The spec of a project made on the spot (`name-version/`, code in `src/`, tests in `tests/`).
fn local_spec(
    (name, version, archive): (&str, &str, &str),
    ecosystem: Ecosystem,
    install: InstallMode,
    test_command: &[&str],
) -> ProjectSpec {
    ProjectSpec {
        name: name.into(),
        ecosystem,
        version: version.into(),
        archive: archive.into(),
        url: "file:///nonexistent".into(),
        sha256: "0".repeat(64),
        root: format!("{name}-{version}"),
        requires_python: None,
        source_dir: "src".into(),
        packages: vec![name.into()],
        tests: vec!["tests".into()],
        test_deps: vec![],
        install,
        test_command: test_command.iter().map(|a| a.to_string()).collect(),
        ignore: vec![],
        deselect: vec![],
        env: BTreeMap::new(),
        measured: None,
    }
}

/// The mini project, unpacked under `dir`, tested with the virtualenv in `ATOMSKILL_TEST_VENV`
/// (a virtualenv with pytest; scripts/test makes it).
pub fn mini_project(dir: &Path) -> Prepared {
    let venv = std::env::var_os("ATOMSKILL_TEST_VENV")
        .expect("ATOMSKILL_TEST_VENV: a virtualenv with pytest (scripts/test makes one)");
    let venv = std::path::PathBuf::from(venv).canonicalize().unwrap();
    let tree = dir.join("mini-1.0");
    write(
        &tree,
        "src/mini/__init__.py",
        "from .core import Counter, clamp, mean_abs, words\n",
    );
    write(&tree, "src/mini/core.py", MINI_CORE);
    write(&tree, "tests/test_core.py", MINI_TESTS);
    let spec = local_spec(
        ("mini", "1.0", "mini-1.0.tar.gz"),
        Ecosystem::Pypi,
        InstallMode::Pythonpath,
        &[
            "python",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests",
        ],
    );
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

pub const MINI_CRATE_LIB: &str = r#"//! Small integer helpers.
mod stats;

pub use stats::clamp;

/// The sum of the squares of `values`.
///
/// ```
/// assert_eq!(minirs::sum_squares(&[1, 2, 3]), 14);
/// ```
pub fn sum_squares(values: &[i64]) -> i64 {
    let mut total = 0;
    for value in values {
        total += value * value;
    }
    total
}
"#;

pub const MINI_CRATE_STATS: &str = r#"/// Clamps `x` into the closed interval `[lo, hi]`.
pub fn clamp(x: i64, lo: i64, hi: i64) -> i64 {
    if x < lo {
        return lo;
    }
    if x > hi {
        return hi;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside() {
        assert_eq!(clamp(5, 0, 10), 5);
    }

    #[test]
    fn below() {
        assert_eq!(clamp(-3, 0, 10), 0);
    }

    #[test]
    fn above() {
        assert_eq!(clamp(30, 0, 10), 10);
    }

    #[test]
    fn bounds() {
        assert_eq!(clamp(0, 0, 10), 0);
        assert_eq!(clamp(10, 0, 10), 10);
    }
}
"#;

pub const MINI_CRATE_IT: &str = r#"use minirs::sum_squares;

#[test]
fn squares() {
    assert_eq!(sum_squares(&[2, -3]), 13);
}

#[test]
fn empty() {
    assert_eq!(sum_squares(&[]), 0);
}
"#;

/// A small real crate (a function with a doc test and integration tests, and one with inline
/// unit tests in a submodule), unpacked under `dir` and tested with the host's cargo.
pub fn mini_crate(dir: &Path) -> Prepared {
    let tree = dir.join("minirs-1.0.0");
    write(
        &tree,
        "Cargo.toml",
        "[package]\nname = \"minirs\"\nversion = \"1.0.0\"\nedition = \"2021\"\n",
    );
    write(&tree, "src/lib.rs", MINI_CRATE_LIB);
    write(&tree, "src/stats.rs", MINI_CRATE_STATS);
    write(&tree, "tests/it.rs", MINI_CRATE_IT);
    let spec = local_spec(
        ("minirs", "1.0.0", "minirs-1.0.0.crate"),
        Ecosystem::Crates,
        InstallMode::Cargo,
        &["cargo", "test", "--offline", "--no-fail-fast"],
    );
    let environment = corpus::env::prepare_cargo(&spec, &tree).expect("a Rust toolchain");
    let run_env = environment.run_env(&spec);
    Prepared {
        spec,
        tree,
        environment,
        run_env,
        skipped_links: vec![],
    }
}

/// A fully isolated sandbox (needs root) with `venv` mounted read-only, and a snapshot store,
/// both under `dir`.
pub fn test_sandbox(dir: &Path, venv: &Path) -> (Arc<Sandbox>, SnapshotStore) {
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

/// The mini project with instances of every skill made from it.
pub struct MiniTasks {
    pub sandbox: Arc<Sandbox>,
    pub store: SnapshotStore,
    pub prepared: Prepared,
    pub snapshot: sandbox::Snapshot,
    pub instances: Vec<tasks::Instance>,
}

/// Prepares the mini project under `dir` and synthesises instances of every skill from up to
/// `bugs` of its bugs (seeded).
pub async fn mini_tasks(dir: &Path, bugs: usize, seed: u64) -> MiniTasks {
    let prepared = mini_project(dir);
    let Environment::Python { venv } = prepared.environment.clone() else {
        unreachable!("the mini project is a Python project")
    };
    tasks_of(dir, prepared, &venv, bugs, seed).await
}

/// The mini crate (`mini_crate`) under `dir` with instances of every skill made from up to
/// `bugs` of its bugs (seeded); needs the host's Rust toolchain.
pub async fn mini_crate_tasks(dir: &Path, bugs: usize, seed: u64) -> MiniTasks {
    let prepared = mini_crate(dir);
    let Environment::Cargo { sysroot } = prepared.environment.clone() else {
        unreachable!("the mini crate is a crate")
    };
    tasks_of(dir, prepared, &sysroot, bugs, seed).await
}

async fn tasks_of(
    dir: &Path,
    prepared: Prepared,
    mount: &Path,
    bugs: usize,
    seed: u64,
) -> MiniTasks {
    let (sandbox, store) = test_sandbox(dir, mount);
    let state = synth::project::prepare_state(
        prepared.clone(),
        &dir.join("cache"),
        &store,
        &sandbox,
        1,
        Duration::from_secs(120),
    )
    .await
    .expect("the project prepares");
    let options = synth::pipeline::SynthOptions {
        out: dir.join("tasks"),
        skills: tasks::Skill::ALL.into_iter().collect(),
        max_per_repo: bugs,
        max_candidates: 30,
        seed,
        concurrency: 2,
        test_timeout: Duration::from_secs(120),
        baseline_runs: 1,
    };
    let snapshot = state.snapshot.clone();
    synth::pipeline::synth_state(
        &options,
        sandbox.clone(),
        Arc::new(state),
        synth::pipeline::ProjectReport::default(),
        &|_| {},
    )
    .await
    .expect("synthesis of the project");
    let instances = tasks::store::read_dir(&options.out).expect("instances written");
    MiniTasks {
        sandbox,
        store,
        prepared,
        snapshot,
        instances,
    }
}
