//! A project's environment outside its tree: a virtualenv with the pinned test dependencies and
//! the project itself (Python), or the host's Rust toolchain (crates).
//!
//! Environments are built on the host with network access during `corpus fetch`; tests later run
//! offline inside the sandbox, which mounts the environment read-only at the same path. The tree
//! is seen there at `/workspace`, so Python projects are put on `sys.path` with `PYTHONPATH`
//! (shadowing the installed copy) rather than through an editable install that names the host
//! path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{Ecosystem, ProjectSpec};

/// Where the workspace is inside the sandbox (the sandbox crate's `WORKSPACE`).
pub const SANDBOX_WORKSPACE: &str = "/workspace";

/// The interpreter virtualenvs are made from: visible inside the sandbox under `/usr`.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Environment {
    Python { venv: PathBuf },
    Cargo { sysroot: PathBuf },
}

impl Environment {
    /// Host directories the sandbox must mount read-only.
    pub fn mounts(&self) -> Vec<PathBuf> {
        match self {
            Environment::Python { venv } => vec![venv.clone()],
            Environment::Cargo { sysroot } => vec![sysroot.clone()],
        }
    }

    /// Environment variables of a test run inside the sandbox (besides the manifest's).
    pub fn run_env(&self, spec: &ProjectSpec) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        match self {
            Environment::Python { venv } => {
                let source = match spec.source_dir.trim_end_matches('/') {
                    "." | "" => SANDBOX_WORKSPACE.to_string(),
                    dir => format!("{SANDBOX_WORKSPACE}/{dir}"),
                };
                env.insert(
                    "PATH".into(),
                    format!("{}/bin:/usr/local/bin:/usr/bin:/bin", venv.display()),
                );
                env.insert("VIRTUAL_ENV".into(), venv.display().to_string());
                env.insert("PYTHONPATH".into(), source);
            }
            Environment::Cargo { sysroot } => {
                env.insert(
                    "PATH".into(),
                    format!("{}/bin:/usr/local/bin:/usr/bin:/bin", sysroot.display()),
                );
                env.insert("CARGO_HOME".into(), "/tmp/cargo-home".into());
                env.insert("CARGO_TARGET_DIR".into(), "/tmp/cargo-target".into());
                env.insert("CARGO_NET_OFFLINE".into(), "true".into());
                env.insert("CARGO_TERM_COLOR".into(), "never".into());
                env.insert("CARGO_INCREMENTAL".into(), "0".into());
                env.insert("RUSTFLAGS".into(), "-C debuginfo=0".into());
            }
        }
        env
    }
}

fn run(project: &str, command: &mut Command, what: &str) -> Result<String> {
    tracing::debug!(?command, "environment step");
    let output = command.output().map_err(|e| Error::Environment {
        project: project.to_string(),
        message: format!("{what}: could not start {:?}: {e}", command.get_program()),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Error::Environment {
            project: project.to_string(),
            message: format!("{what} failed ({}):\n{tail}", output.status),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Builds a virtualenv at `venv` with the pinned `test_deps` and the project from `tree`, then
/// checks that each of `packages` imports from inside `tree/source_dir`.
pub fn build_python(
    spec: &ProjectSpec,
    tree: &Path,
    venv: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Environment> {
    let name = &spec.name;
    if venv.exists() {
        std::fs::remove_dir_all(venv).map_err(|e| Error::io(venv, e))?;
    }
    run(
        name,
        Command::new(SYSTEM_PYTHON).args(["-m", "venv"]).arg(venv),
        "creating the virtualenv",
    )?;
    let pip = venv.join("bin/pip");
    let quiet = [
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
    ];
    if !spec.test_deps.is_empty() {
        run(
            name,
            Command::new(&pip)
                .args(quiet)
                .arg("--no-deps")
                .args(&spec.test_deps)
                .envs(env),
            "installing the pinned test dependencies",
        )?;
    }
    run(
        name,
        Command::new(&pip)
            .args(quiet)
            .arg("--no-deps")
            .arg(tree)
            .envs(env),
        "installing the project",
    )?;
    check_imports(spec, tree, venv, env)?;
    Ok(Environment::Python {
        venv: venv.to_path_buf(),
    })
}

/// Checks that the tests will import the tree, not a copy in site-packages.
pub fn check_imports(
    spec: &ProjectSpec,
    tree: &Path,
    venv: &Path,
    env: &BTreeMap<String, String>,
) -> Result<()> {
    let source = tree.join(&spec.source_dir);
    let script = format!(
        "import importlib, sys\nfor name in {:?}:\n    module = importlib.import_module(name)\n    print(name, getattr(module, '__file__', None) or list(module.__path__)[0])\n",
        spec.packages
    );
    let output = run(
        &spec.name,
        Command::new(venv.join("bin/python"))
            .args(["-c", &script])
            .envs(env)
            .env("PYTHONPATH", &source)
            .current_dir("/"),
        "importing the packages",
    )?;
    let source = std::fs::canonicalize(&source).map_err(|e| Error::io(&source, e))?;
    for line in output.lines() {
        let (package, file) = line.split_once(' ').unwrap_or((line, ""));
        if !Path::new(file).starts_with(&source) {
            return Err(Error::Environment {
                project: spec.name.clone(),
                message: format!(
                    "package `{package}` imports from {file}, not from {}: the tests would not see mutations",
                    source.display()
                ),
            });
        }
    }
    Ok(())
}

/// The host's Rust toolchain, and a lockfile generated offline in the tree (the default crates
/// have no dependencies; a crate with dependencies must be fetched first, which is refused).
pub fn prepare_cargo(spec: &ProjectSpec, tree: &Path) -> Result<Environment> {
    let name = &spec.name;
    let sysroot = run(
        name,
        Command::new("rustc").args(["--print", "sysroot"]),
        "finding the Rust toolchain",
    )?;
    let sysroot = PathBuf::from(sysroot.trim());
    if !sysroot.join("bin/cargo").exists() {
        return Err(Error::Environment {
            project: name.clone(),
            message: format!("{} has no bin/cargo", sysroot.display()),
        });
    }
    let cargo_home = tree.with_extension("cargo-home");
    let lockfile = |offline: bool| {
        let mut command = Command::new(sysroot.join("bin/cargo"));
        command
            .arg("generate-lockfile")
            .args(offline.then_some("--offline"))
            .current_dir(tree)
            .env("CARGO_HOME", &cargo_home)
            .env("PATH", format!("{}/bin:/usr/bin:/bin", sysroot.display()));
        command
    };
    // Offline first; a crate with optional or std-workspace dependencies needs the index once
    // (this runs during `corpus fetch`, which may use the network). Tests still run offline.
    if run(name, &mut lockfile(true), "generating Cargo.lock offline").is_err() {
        run(name, &mut lockfile(false), "generating Cargo.lock")?;
        // The sandbox has no network and no registry: vendor what the lockfile names into the
        // tree, with the source replacement cargo reads from .cargo/config.toml.
        run(
            name,
            Command::new(sysroot.join("bin/cargo"))
                .args(["vendor", "--versioned-dirs", "--quiet", "vendor"])
                .current_dir(tree)
                .env("CARGO_HOME", &cargo_home)
                .env("PATH", format!("{}/bin:/usr/bin:/bin", sysroot.display())),
            "vendoring the dependencies",
        )?;
        let dot_cargo = tree.join(".cargo");
        std::fs::create_dir_all(&dot_cargo).map_err(|e| Error::io(&dot_cargo, e))?;
        let config = "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n";
        std::fs::write(dot_cargo.join("config.toml"), config)
            .map_err(|e| Error::io(&dot_cargo, e))?;
    }
    let _ = std::fs::remove_dir_all(&cargo_home);
    debug_assert_eq!(spec.ecosystem, Ecosystem::Crates);
    Ok(Environment::Cargo { sysroot })
}
