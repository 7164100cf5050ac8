//! What the agent and the graders need of an episode's workspace, as a trait: run a command,
//! read and write a file, diff against the pristine snapshot. [`crate::Episode`] implements it
//! with real isolation; other backends (a container engine, a cluster, a test fake) can too.

use std::path::Path;

use crate::diff::WorkspaceDiff;
use crate::error::{Error, Result};
use crate::exec::{ExecRequest, ExecResult};

/// A writable copy of a project that commands run in. Paths are relative to the workspace
/// root (or absolute under [`crate::WORKSPACE`]); nothing may reach outside it.
#[async_trait::async_trait]
pub trait Workspace: Send + Sync {
    /// A name for logs and trajectories, unique among live workspaces.
    fn id(&self) -> &str;

    /// Runs one command to completion or to a limit; a failing command is a result, not an
    /// error.
    async fn exec(&self, request: &ExecRequest) -> Result<ExecResult>;

    /// The bytes of a file, at most `max_bytes` of them.
    fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>>;

    /// Creates or replaces a file (and its parent directories).
    fn write_file(&self, path: &str, contents: &[u8], executable: bool) -> Result<()>;

    /// Every change against the pristine snapshot.
    fn diff(&self) -> Result<WorkspaceDiff>;
}

#[async_trait::async_trait]
impl Workspace for crate::Episode {
    fn id(&self) -> &str {
        crate::Episode::id(self)
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ExecResult> {
        crate::Episode::exec(self, request).await
    }

    fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
        crate::Episode::read_file(self, path, max_bytes)
    }

    fn write_file(&self, path: &str, contents: &[u8], executable: bool) -> Result<()> {
        crate::Episode::write_file(self, path, contents, executable)
    }

    fn diff(&self) -> Result<WorkspaceDiff> {
        crate::Episode::diff(self)
    }
}

/// The changes that turn the directory `pristine` into `current`, as an episode's diff reports
/// them (no symlink followed).
pub fn diff_dirs(pristine: &Path, current: &Path) -> Result<WorkspaceDiff> {
    let file = std::fs::File::open(current)
        .map_err(|e| Error::io(format!("opening {}", current.display()), e))?;
    let dir = crate::dirfd::Dir::from_fd(std::os::fd::OwnedFd::from(file));
    crate::diff::compute(&crate::SandboxConfig::default(), pristine, &dir, false)
}
