//! The unisolated backend (`--isolation none`): a plain copy of the snapshot in a private
//! directory and commands run as the calling user in their own process group.
//!
//! It exists for machines where namespaces cannot be used and for trusted commands. It must
//! only ever be chosen by name: nothing falls back to it silently.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::SandboxConfig;
use crate::dirfd::{describe_open_errno, Dir};
use crate::error::{Error, Result};
use crate::exec::{ExecRequest, ExecResult, ExitStatus};
use crate::limits::Limits;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::{io_util, WorkspaceDiff};

pub(crate) struct LocalEpisode {
    snapshot: Snapshot,
    config: Arc<SandboxConfig>,
    limits: Limits,
    workspace: PathBuf,
    root: Dir,
}

impl LocalEpisode {
    pub fn create(
        id: &str,
        snapshot: &Snapshot,
        config: Arc<SandboxConfig>,
        limits: Limits,
    ) -> Result<LocalEpisode> {
        let parent = config.runtime_dir.join("local");
        let store = SnapshotStore::new(&parent, None);
        // A copy published under the episode id; never shared with another episode.
        let copy = store.import_dir(&snapshot.path, Some(id))?;
        let root = std::fs::File::open(&copy.path)
            .map_err(|e| Error::io(format!("opening {}", copy.path.display()), e))?;
        Ok(LocalEpisode {
            snapshot: snapshot.clone(),
            config,
            limits,
            workspace: copy.path,
            root: Dir::from_fd(OwnedFd::from(root)),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecResult> {
        let prepared =
            crate::namespace::prepare_command(&self.config, &self.limits, request, false)?;
        let mut command = tokio::process::Command::new(&request.argv[0]);
        command
            .args(&request.argv[1..])
            .env_clear()
            .envs(self.config.command_env(&request.env))
            .current_dir(match &request.cwd {
                Some(dir) => self.workspace.join(crate::paths::normalise(dir)?),
                None => self.workspace.clone(),
            })
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let rlimits = prepared.rlimits;
        // SAFETY: setrlimit is async-signal-safe and touches only prepared data.
        unsafe {
            command.pre_exec(move || {
                for &(resource, value) in &rlimits {
                    let limit = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::ENOENT);
                let outcome = io_util::Outcome {
                    stdout: Default::default(),
                    stderr: Default::default(),
                    timed_out: false,
                    output_exceeded: false,
                };
                let status = ExitStatus::NotStarted { errno };
                return Ok(unmetered(&self.limits, outcome, status, started.elapsed()));
            }
        };
        let pgid = child.id().map_or(0, |p| p as i32);
        let kill_group = move || {
            if pgid > 0 {
                // SAFETY: kill on the process group we created.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        };
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::io("stdin", std::io::Error::other("missing")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::io("stdout", std::io::Error::other("missing")))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Error::io("stderr", std::io::Error::other("missing")))?;
        let timeout = request
            .timeout
            .map_or(self.limits.timeout, |t| t.min(self.limits.timeout));
        let status_cell = std::sync::Mutex::new(None);
        let wait = async {
            let status = child
                .wait()
                .await
                .map_err(|e| Error::io("waiting for a command", e))?;
            // Background jobs of the group die with the command, as in the isolated backend.
            kill_group();
            *status_cell.lock().expect("not poisoned") = Some(status);
            Ok(())
        };
        let outcome = io_util::supervise_streams(
            &self.limits,
            timeout,
            &request.stdin,
            stdin,
            stdout,
            stderr,
            kill_group,
            wait,
        )
        .await?;
        use std::os::unix::process::ExitStatusExt;
        let status = match status_cell.into_inner().expect("not poisoned") {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => ExitStatus::Exited(code),
                (None, Some(signal)) => ExitStatus::Signaled(signal),
                _ => ExitStatus::Signaled(libc::SIGKILL),
            },
            None => ExitStatus::Signaled(libc::SIGKILL),
        };
        Ok(unmetered(&self.limits, outcome, status, started.elapsed()))
    }

    pub fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
        let rel = crate::paths::normalise(path)?;
        self.root
            .read_file(&rel, max_bytes)
            .map_err(|e| Error::WorkspaceFile {
                path: rel.clone(),
                reason: describe_open_errno(e),
            })
    }

    pub fn write_file(&self, path: &str, contents: &[u8], executable: bool) -> Result<()> {
        io_util::write_confined(&self.root, path, contents, executable, None)
    }

    pub fn diff(&self) -> Result<WorkspaceDiff> {
        crate::diff::compute(&self.config, &self.snapshot.path, &self.root, false)
    }

    pub fn teardown(&mut self) -> Result<()> {
        match std::fs::remove_dir_all(&self.workspace) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("removing {}", self.workspace.display()),
                e,
            )),
        }
    }
}

impl Drop for LocalEpisode {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// A result without the figures only cgroups and a reaped init can give (cpu time, memory,
/// OOM and process-limit counters).
fn unmetered(
    limits: &Limits,
    outcome: io_util::Outcome,
    status: ExitStatus,
    duration: Duration,
) -> ExecResult {
    io_util::assemble(
        limits,
        outcome,
        status,
        duration,
        Duration::ZERO,
        false,
        0,
        None,
    )
}
