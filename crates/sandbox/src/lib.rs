//! The episode sandbox: untrusted, model-issued commands over a copy-on-write view of a real
//! repository, isolated from the host and from every other episode.
//!
//! A [`Sandbox`] is made once per process from a [`SandboxConfig`] and default [`Limits`]; it
//! detects what isolation the machine allows and says so in its [`IsolationReport`]. Each
//! [`Episode`] is created over a [`Snapshot`] and offers `exec`, confined `read_file` and
//! `write_file`, `diff` and `destroy` (the [`Workspace`] trait, which other backends implement
//! too). Many episodes run at once; each owns its resources and
//! destroying one never touches another.
//!
//! This crate never runs anything unisolated unless [`Isolation::None`] was asked for by name,
//! and never follows a symlink the agent could have planted.

mod cgroup;
mod child;
mod config;
mod diff;
mod dirfd;
mod error;
mod exec;
mod io_util;
mod limits;
mod local;
mod namespace;
mod output;
mod paths;
mod plan;
mod snapshot;
mod sys;
mod workspace;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::config::{Isolation, SandboxConfig};
pub use crate::diff::{Entry, FileChange, WorkspaceDiff};
pub use crate::error::{Error, Result};
pub use crate::exec::{ExecRequest, ExecResult, ExitStatus, LimitKind};
pub use crate::limits::Limits;
pub use crate::output::{Capture, Captured};
pub use crate::paths::normalise as normalise_path;
pub use crate::plan::{INSIDE_GID, INSIDE_UID, WORKSPACE};
pub use crate::snapshot::{fingerprint, Snapshot, SnapshotStore};
pub use crate::workspace::{diff_dirs, Workspace};

use crate::cgroup::CgroupSupport;

/// The isolation actually in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationLevel {
    /// Namespaces, overlay on a capped tmpfs, memory and pids cgroups, rlimits.
    Full,
    /// Namespaces and overlay, but limits from rlimits only (no usable cgroups).
    NamespacesWithoutCgroups,
    /// Nothing: a plain copy and process-group kills.
    None,
}

/// What a sandbox enforces on this machine, for logs and reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IsolationReport {
    pub level: IsolationLevel,
    pub namespaces: Vec<String>,
    pub cgroups: Vec<String>,
    pub rlimits: Vec<String>,
    /// What is missing and why.
    pub notes: Vec<String>,
}

impl std::fmt::Display for IsolationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            IsolationLevel::Full => "full",
            IsolationLevel::NamespacesWithoutCgroups => "namespaces without cgroups",
            IsolationLevel::None => "NONE (commands run unisolated)",
        };
        write!(f, "isolation: {level}")?;
        if !self.namespaces.is_empty() {
            write!(f, "; namespaces: {}", self.namespaces.join(","))?;
        }
        if !self.cgroups.is_empty() {
            write!(f, "; cgroups: {}", self.cgroups.join(","))?;
        }
        write!(f, "; rlimits: {}", self.rlimits.join(","))?;
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

enum Backend {
    Namespaces {
        cgroups: Option<CgroupSupport>,
        stage_dir: PathBuf,
        rootless: bool,
    },
    Local,
}

/// Creates episodes. One per process is enough; it is cheap to share behind an `Arc`.
pub struct Sandbox {
    config: Arc<SandboxConfig>,
    limits: Limits,
    backend: Backend,
    report: IsolationReport,
    next_episode: AtomicU64,
    /// Distinguishes this sandbox's episodes from those of other sandboxes and processes.
    instance: String,
}

/// Whether namespaces can be used, and whether rootless (`Ok(true)`) or as root (`Ok(false)`).
fn can_use_namespaces() -> std::result::Result<bool, String> {
    for path in [
        "/proc/self/ns/user",
        "/proc/self/ns/mnt",
        "/proc/self/ns/pid",
        "/proc/self/ns/net",
    ] {
        if std::fs::metadata(path).is_err() {
            return Err(format!("the kernel lacks {path}"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(false);
    }
    let allowed = |path: &str, minimum: u64| {
        std::fs::read_to_string(path).map_or(true, |v| {
            v.trim().parse::<u64>().is_ok_and(|n| n >= minimum)
        })
    };
    if !allowed("/proc/sys/user/max_user_namespaces", 1)
        || !allowed("/proc/sys/kernel/unprivileged_userns_clone", 1)
    {
        return Err(
            "not root, and unprivileged user namespaces are disabled on this machine".into(),
        );
    }
    Ok(true)
}

impl Sandbox {
    pub fn new(config: SandboxConfig, limits: Limits) -> Result<Sandbox> {
        let pid = std::process::id();
        let (backend, report) = match config.isolation {
            Isolation::None => (
                Backend::Local,
                IsolationReport {
                    level: IsolationLevel::None,
                    namespaces: vec![],
                    cgroups: vec![],
                    rlimits: vec![
                        "cpu".into(),
                        "fsize".into(),
                        "nofile".into(),
                        "as".into(),
                        "nproc".into(),
                    ],
                    notes: vec![
                        "--isolation none: commands run as the calling user on the host".into(),
                    ],
                },
            ),
            requested => {
                let rootless =
                    can_use_namespaces().map_err(|reason| Error::IsolationUnavailable {
                        requested: format!("{requested:?}").to_lowercase(),
                        reason,
                    })?;
                let mut support = if rootless {
                    CgroupSupport {
                        notes: vec!["rootless: no cgroups (memory is limited per process by RLIMIT_AS, processes per host user by RLIMIT_NPROC); the agent runs as the calling user on the host".into()],
                        ..CgroupSupport::default()
                    }
                } else {
                    CgroupSupport::detect()
                };
                if support.complete() {
                    support.tune_attach(config.favor_dynamic_cgroups);
                }
                if requested == Isolation::Full && !support.complete() {
                    return Err(Error::IsolationUnavailable {
                        requested: "full".into(),
                        reason: support.notes.join("; "),
                    });
                }
                let complete = support.complete();
                let stage_dir = config.runtime_dir.join(format!("stage-{pid}"));
                std::fs::create_dir_all(&stage_dir)
                    .map_err(|e| Error::io(format!("creating {}", stage_dir.display()), e))?;
                let mut rlimits = vec![
                    "cpu".to_string(),
                    "fsize".into(),
                    "nofile".into(),
                    "core".into(),
                ];
                if !complete {
                    rlimits.extend(["as".to_string(), "nproc".into()]);
                }
                let report = IsolationReport {
                    level: if complete {
                        IsolationLevel::Full
                    } else {
                        IsolationLevel::NamespacesWithoutCgroups
                    },
                    namespaces: ["user", "mount", "pid", "net", "ipc", "uts"]
                        .map(String::from)
                        .to_vec(),
                    cgroups: if complete {
                        vec!["memory".into(), "pids".into()]
                    } else {
                        vec![]
                    },
                    rlimits,
                    notes: support.notes.clone(),
                };
                (
                    Backend::Namespaces {
                        cgroups: complete.then_some(support),
                        stage_dir,
                        rootless,
                    },
                    report,
                )
            }
        };
        tracing::info!(%report, "sandbox ready");
        let config = Arc::new(config);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // The config's heap address is unique among live sandboxes of this process.
        let instance = format!("{pid}-{:x}-{nanos:x}", Arc::as_ptr(&config) as usize);
        Ok(Sandbox {
            config,
            limits,
            backend,
            report,
            next_episode: AtomicU64::new(0),
            instance,
        })
    }

    pub fn isolation(&self) -> &IsolationReport {
        &self.report
    }

    /// Who must own snapshot files so the agent can edit its view of them: the sandbox user
    /// when running as root, the calling user (`None`: keep the importer's) otherwise.
    pub fn snapshot_owner(&self) -> Option<(u32, u32)> {
        match self.backend {
            Backend::Namespaces {
                rootless: false, ..
            } => Some((self.config.sandbox_uid, self.config.sandbox_gid)),
            _ => None,
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn default_limits(&self) -> &Limits {
        &self.limits
    }

    /// Creates an episode over `snapshot` with the sandbox's default limits.
    pub fn create_episode(&self, snapshot: &Snapshot) -> Result<Episode> {
        self.create_episode_with(snapshot, self.limits.clone())
    }

    pub fn create_episode_with(&self, snapshot: &Snapshot, limits: Limits) -> Result<Episode> {
        let n = self.next_episode.fetch_add(1, Ordering::Relaxed);
        let id = format!("ep-{}-{n}", self.instance);
        let inner = match &self.backend {
            Backend::Namespaces {
                cgroups,
                stage_dir,
                rootless,
            } => Inner::Namespaces(namespace::NsEpisode::create(
                id.clone(),
                snapshot,
                self.config.clone(),
                limits,
                cgroups.as_ref(),
                stage_dir,
                *rootless,
            )?),
            Backend::Local => Inner::Local(local::LocalEpisode::create(
                &id,
                snapshot,
                self.config.clone(),
                limits,
            )?),
        };
        tracing::debug!(episode = %id, snapshot = %snapshot.id, "episode created");
        Ok(Episode { id, inner })
    }
}

enum Inner {
    Namespaces(namespace::NsEpisode),
    Local(local::LocalEpisode),
}

/// One agent episode: a private, writable view of a snapshot and the commands run in it.
pub struct Episode {
    id: String,
    inner: Inner,
}

impl Episode {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn limits(&self) -> &Limits {
        match &self.inner {
            Inner::Namespaces(e) => e.limits(),
            Inner::Local(e) => e.limits(),
        }
    }

    /// Runs one command to completion (or to a limit). The command's whole process tree is gone
    /// when this returns, and so is it if the returned future is dropped early.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecResult> {
        match &self.inner {
            Inner::Namespaces(e) => e.exec(request).await,
            Inner::Local(e) => e.exec(request).await,
        }
    }

    /// Reads a workspace file; paths that are absolute, contain `..` or pass through a symlink
    /// are refused.
    pub fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Namespaces(e) => e.read_file(path, max_bytes),
            Inner::Local(e) => e.read_file(path, max_bytes),
        }
    }

    /// Writes a workspace file (creating parent directories) owned by the sandbox user.
    pub fn write_file(&self, path: &str, contents: &[u8], executable: bool) -> Result<()> {
        match &self.inner {
            Inner::Namespaces(e) => e.write_file(path, contents, executable),
            Inner::Local(e) => e.write_file(path, contents, executable),
        }
    }

    /// The workspace's changes against the pristine snapshot.
    pub fn diff(&self) -> Result<WorkspaceDiff> {
        match &self.inner {
            Inner::Namespaces(e) => e.diff(),
            Inner::Local(e) => e.diff(),
        }
    }

    /// Releases everything the episode holds. Dropping an episode does the same, ignoring errors.
    pub fn destroy(mut self) -> Result<()> {
        match &mut self.inner {
            Inner::Namespaces(e) => e.teardown(),
            Inner::Local(e) => e.teardown(),
        }
    }
}
