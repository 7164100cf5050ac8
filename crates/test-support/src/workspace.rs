//! A workspace without a sandbox: a temporary directory standing in for `/workspace`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandbox::{Captured, ExecRequest, ExecResult, ExitStatus, WorkspaceDiff, WORKSPACE};

/// A [`sandbox::Workspace`] over a copy of some files in a temporary directory. Commands run
/// as the calling user with no isolation, in the directory, with every argument's
/// `/workspace` prefix rewritten to it: for tests of logic above the sandbox only, never for
/// untrusted commands.
pub struct FakeWorkspace {
    id: String,
    _dir: tempfile::TempDir,
    pristine: PathBuf,
    root: PathBuf,
    timeout: Duration,
}

impl FakeWorkspace {
    /// A workspace holding `files` (relative path, content).
    pub fn new(files: &[(&str, &str)]) -> std::io::Result<FakeWorkspace> {
        let dir = tempfile::tempdir()?;
        let pristine = dir.path().join("pristine");
        let root = dir.path().join("workspace");
        for base in [&pristine, &root] {
            std::fs::create_dir_all(base)?;
            for (path, content) in files {
                let file = base.join(path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(file, content)?;
            }
        }
        Ok(FakeWorkspace {
            id: format!("fake-{}", std::process::id()),
            _dir: dir,
            pristine,
            root,
            timeout: Duration::from_secs(30),
        })
    }

    /// The directory that plays `/workspace`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn rewrite(&self, arg: &str) -> String {
        arg.replace(WORKSPACE, &self.root.to_string_lossy())
    }

    fn confined(&self, path: &str) -> sandbox::Result<PathBuf> {
        let rel = path
            .strip_prefix(WORKSPACE)
            .unwrap_or(path)
            .trim_start_matches('/');
        if rel.split('/').any(|part| part == "..") {
            return Err(sandbox::Error::WorkspaceFile {
                path: path.to_string(),
                reason: "outside the workspace".into(),
            });
        }
        Ok(self.root.join(rel))
    }
}

fn captured(bytes: Vec<u8>) -> Captured {
    Captured {
        total_bytes: bytes.len() as u64,
        head: bytes,
        tail: Vec::new(),
    }
}

#[async_trait::async_trait]
impl sandbox::Workspace for FakeWorkspace {
    fn id(&self) -> &str {
        &self.id
    }

    async fn exec(&self, request: &ExecRequest) -> sandbox::Result<ExecResult> {
        let started = Instant::now();
        let Some((program, args)) = request.argv.split_first() else {
            return Err(sandbox::Error::PathRefused {
                path: String::new(),
                reason: "an empty command line".into(),
            });
        };
        let cwd = match &request.cwd {
            Some(cwd) => self.confined(cwd)?,
            None => self.root.clone(),
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args.iter().map(|a| self.rewrite(a)))
            .current_dir(cwd)
            .envs(request.env.iter().map(|(k, v)| (k, self.rewrite(v))))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Ok(ExecResult {
                    status: ExitStatus::NotStarted {
                        errno: e.raw_os_error().unwrap_or(0),
                    },
                    stdout: captured(Vec::new()),
                    stderr: captured(Vec::new()),
                    duration: started.elapsed(),
                    cpu_time: Duration::ZERO,
                    peak_memory_bytes: None,
                    timed_out: false,
                    oom_killed: false,
                    killed_by: None,
                    process_limit_hits: 0,
                })
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            let _ = stdin.write_all(&request.stdin).await;
        }
        let limit = request.timeout.unwrap_or(self.timeout);
        let (status, stdout, stderr, timed_out) =
            match tokio::time::timeout(limit, child.wait_with_output()).await {
                Ok(Ok(output)) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    let status = match (output.status.code(), output.status.signal()) {
                        (Some(code), _) => ExitStatus::Exited(code),
                        (None, Some(signal)) => ExitStatus::Signaled(signal),
                        _ => ExitStatus::Signaled(9),
                    };
                    (status, output.stdout, output.stderr, false)
                }
                Ok(Err(e)) => {
                    return Err(sandbox::Error::Io {
                        context: "waiting for a fake command".into(),
                        source: e,
                    })
                }
                Err(_) => (ExitStatus::Signaled(9), Vec::new(), Vec::new(), true),
            };
        Ok(ExecResult {
            status,
            stdout: captured(stdout),
            stderr: captured(stderr),
            duration: started.elapsed(),
            cpu_time: Duration::ZERO,
            peak_memory_bytes: None,
            timed_out,
            oom_killed: false,
            killed_by: timed_out.then_some(sandbox::LimitKind::WallClock),
            process_limit_hits: 0,
        })
    }

    fn read_file(&self, path: &str, max_bytes: u64) -> sandbox::Result<Vec<u8>> {
        let file = self.confined(path)?;
        let bytes = std::fs::read(&file).map_err(|e| sandbox::Error::WorkspaceFile {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        if bytes.len() as u64 > max_bytes {
            return Err(sandbox::Error::WorkspaceFile {
                path: path.to_string(),
                reason: format!("larger than {max_bytes} bytes"),
            });
        }
        Ok(bytes)
    }

    fn write_file(&self, path: &str, contents: &[u8], executable: bool) -> sandbox::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let file = self.confined(path)?;
        let fail = |e: std::io::Error| sandbox::Error::WorkspaceFile {
            path: path.to_string(),
            reason: e.to_string(),
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::write(&file, contents).map_err(fail)?;
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(fail)
    }

    fn diff(&self) -> sandbox::Result<WorkspaceDiff> {
        sandbox::diff_dirs(&self.pristine, &self.root)
    }
}
