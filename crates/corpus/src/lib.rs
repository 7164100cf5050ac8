//! Real projects for the task factory: the pinned manifest, fetching and unpacking source
//! archives, and building each project's environment.
//!
//! Everything here runs on the host, with network access, during `atomskill corpus fetch`.
//! Nothing here runs a project's tests: that happens in the sandbox (crate `testrun`). This crate
//! never reads environment variables; the caller passes the cache directory.

pub mod detect;
pub mod env;
pub mod error;
pub mod fetch;
pub mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::env::Environment;
pub use crate::error::{Error, Result};
pub use crate::manifest::{Ecosystem, Excluded, InstallMode, Manifest, ProjectSpec};

/// A project ready to be snapshotted and tested: its unpacked tree and its environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Prepared {
    pub spec: ProjectSpec,
    /// Host path of the unpacked tree (the archive's `root`).
    pub tree: PathBuf,
    pub environment: Environment,
    /// Environment variables of every test run: the manifest's, the project's, the
    /// environment's, in that order.
    pub run_env: BTreeMap<String, String>,
    /// Links in the archive that were not unpacked.
    pub skipped_links: Vec<String>,
}

/// The corpus cache: `<root>/<name>-<version>/{archive, tree/, venv/, prepared.json}`.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn project_dir(&self, spec: &ProjectSpec) -> PathBuf {
        self.root.join(spec.key())
    }

    /// A prepared project from an earlier fetch, if its spec is unchanged.
    pub fn load(&self, spec: &ProjectSpec) -> Option<Prepared> {
        let path = self.project_dir(spec).join("prepared.json");
        let prepared: Prepared = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let same = serde_json::to_value(&prepared.spec).ok()? == serde_json::to_value(spec).ok()?;
        (same && prepared.tree.is_dir()).then_some(prepared)
    }

    /// Every prepared project in the cache (a readable `prepared.json` whose tree exists), in
    /// path order.
    pub fn prepared_projects(&self) -> Vec<Prepared> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut found: Vec<Prepared> = entries
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path().join("prepared.json")).ok())
            .filter_map(|bytes| serde_json::from_slice::<Prepared>(&bytes).ok())
            .filter(|prepared| prepared.tree.is_dir())
            .collect();
        found.sort_by(|a, b| a.tree.cmp(&b.tree));
        found
    }

    /// The prepared project `name` `version`, whatever its spec, if the cache holds it.
    pub fn find(&self, name: &str, version: &str) -> Option<Prepared> {
        self.prepared_projects()
            .into_iter()
            .find(|p| p.spec.name == name && p.spec.version == version)
    }

    /// Downloads, checks, unpacks and installs one project, reusing whatever an earlier call
    /// finished. `manifest_env` is the manifest's `[env]`.
    pub fn prepare(
        &self,
        spec: &ProjectSpec,
        manifest_env: &BTreeMap<String, String>,
    ) -> Result<Prepared> {
        if let Some(prepared) = self.load(spec) {
            return Ok(prepared);
        }
        let dir = self.project_dir(spec);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let archive = dir.join(&spec.archive);
        fetch::fetch_archive(&spec.url, &spec.sha256, &archive)?;
        let unpacked = dir.join("tree");
        if unpacked.exists() {
            std::fs::remove_dir_all(&unpacked).map_err(|e| Error::io(&unpacked, e))?;
        }
        let report = fetch::unpack_tar_gz(&archive, &unpacked)?;
        let tree = unpacked.join(&spec.root);
        if !tree.is_dir() {
            return Err(Error::Unpack {
                archive: spec.archive.clone(),
                message: format!(
                    "the archive has no directory `{}` (manifest `root`)",
                    spec.root
                ),
            });
        }
        let mut install_env = manifest_env.clone();
        install_env.extend(spec.env.clone());
        let environment = match spec.ecosystem {
            Ecosystem::Pypi => env::build_python(spec, &tree, &dir.join("venv"), &install_env)?,
            Ecosystem::Crates => env::prepare_cargo(spec, &tree)?,
        };
        let mut run_env = install_env;
        run_env.extend(environment.run_env(spec));
        let prepared = Prepared {
            spec: spec.clone(),
            tree,
            environment,
            run_env,
            skipped_links: report.skipped_links,
        };
        let json = serde_json::to_vec_pretty(&prepared).expect("prepared projects serialise");
        fetch::write_atomically(&dir.join("prepared.json"), &json)?;
        Ok(prepared)
    }
}
