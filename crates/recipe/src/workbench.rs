//! Where a recipe runs: the home directory's layout (corpus cache, snapshots, run-time state),
//! the sandbox the factory, the graders and the agent share, and how instances are loaded and
//! their projects found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rollout::{AgentConfig, Projects, Rollout};
use sandbox::{Limits, Sandbox, SandboxConfig, SnapshotStore};
use tasks::{Instance, Skill};

use crate::error::{Error, Result};

/// The sandbox, the snapshot store and the corpus cache of one home directory.
pub struct Workbench {
    pub home: PathBuf,
    pub sandbox: Arc<Sandbox>,
    pub store: SnapshotStore,
    /// Projects known without the corpus cache (tests); others are looked up in the cache.
    pub projects: Option<Projects>,
}

impl Workbench {
    /// The sandbox of `home`: the corpus cache (virtualenvs) and the Rust toolchain's sysroot
    /// mounted read-only; rootless (state under `home/run`) when not run as root.
    pub fn open(home: &Path) -> Result<Workbench> {
        let corpus_dir = home.join("corpus");
        std::fs::create_dir_all(&corpus_dir).map_err(|e| Error::io(&corpus_dir, e))?;
        let mut config = SandboxConfig::default();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            config.runtime_dir = home.join("run");
        }
        config.read_only_mounts.push(
            corpus_dir
                .canonicalize()
                .map_err(|e| Error::io(&corpus_dir, e))?,
        );
        if let Ok(output) = std::process::Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
        {
            let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if output.status.success() && sysroot.is_dir() {
                config.read_only_mounts.push(sysroot);
            }
        }
        let limits = Limits {
            timeout: Duration::from_secs(600),
            memory_bytes: 4 << 30,
            max_processes: 512,
            ..Limits::default()
        };
        let sandbox = Sandbox::new(config, limits)?;
        let store = SnapshotStore::new(snapshot_dir(home, &sandbox), sandbox.snapshot_owner());
        Ok(Workbench {
            home: home.to_path_buf(),
            sandbox: Arc::new(sandbox),
            store,
            projects: None,
        })
    }

    /// The corpus cache under the home directory.
    pub fn corpus_cache(&self) -> corpus::Cache {
        corpus::Cache::new(self.home.join("corpus"))
    }

    /// A rollout over the projects of `instances` with the agent of `agent`, sampling every
    /// step as `sampling` says.
    pub fn rollout(
        &self,
        instances: &[Instance],
        agent: &AgentConfig,
        sampling: &Sampling,
    ) -> Result<Rollout> {
        let projects = match &self.projects {
            Some(projects) => projects.clone(),
            None => Projects::resolve(&self.corpus_cache(), &self.store, instances)?,
        };
        let mut settings = agent.settings()?;
        settings.sampling.temperature = sampling.temperature;
        settings.sampling.top_p = sampling.top_p;
        settings.sampling.max_tokens = sampling.max_tokens;
        Ok(Rollout::new(
            self.sandbox.clone(),
            projects,
            settings,
            agent.test_timeout(),
        ))
    }
}

/// How each step of an episode samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    /// Tokens per reply (`None`: as many as the context allows).
    pub max_tokens: Option<u32>,
}

impl Default for Sampling {
    /// Evaluation's defaults.
    fn default() -> Sampling {
        Sampling {
            temperature: 0.7,
            top_p: 1.0,
            max_tokens: None,
        }
    }
}

/// Where snapshots live: a root sandbox hands them to its own uid, a rootless one keeps them.
pub fn snapshot_dir(home: &Path, sandbox: &Sandbox) -> PathBuf {
    match sandbox.snapshot_owner() {
        Some(_) => home.join("snapshots"),
        None => home.join("snapshots-own"),
    }
}

/// Instances of `path` (a directory of `<skill>.jsonl` files or one file), sorted by id,
/// filtered by skill (all when `skills` is empty) and capped per skill (the first by id).
pub fn load_instances(
    path: &Path,
    skills: &[Skill],
    limit: Option<usize>,
) -> Result<Vec<Instance>> {
    let mut instances = if path.is_dir() {
        tasks::store::read_dir(path)?
    } else {
        tasks::store::read_jsonl(path)?
    };
    instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let mut taken: BTreeMap<Skill, usize> = BTreeMap::new();
    instances.retain(|instance| {
        let skill = instance.skill();
        let n = taken.entry(skill).or_default();
        let keep = (skills.is_empty() || skills.contains(&skill)) && limit.is_none_or(|l| *n < l);
        if keep {
            *n += 1;
        }
        keep
    });
    if instances.is_empty() {
        return Err(Error::Config(format!(
            "no task instances in {} (after filtering)",
            path.display()
        )));
    }
    Ok(instances)
}
