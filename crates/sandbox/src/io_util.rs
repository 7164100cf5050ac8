//! Shared by both backends: feeding stdin, capturing output with bounds, enforcing the
//! wall-clock and output limits, classifying how a command ended, and confined file writes.

use std::ffi::CString;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::dirfd::{describe_open_errno, Dir};
use crate::error::{Error, Result};
use crate::exec::{ExecResult, ExitStatus, LimitKind};
use crate::limits::Limits;
use crate::output::{Capture, Captured};
use crate::sys;

/// What the supervisor saw while a command ran.
pub(crate) struct Outcome {
    pub stdout: Captured,
    pub stderr: Captured,
    pub timed_out: bool,
    pub output_exceeded: bool,
}

impl Outcome {
    /// Whether the supervisor killed the command (so setup errors after that are noise).
    pub fn killed(&self) -> bool {
        self.timed_out || self.output_exceeded
    }
}

async fn read_stream<R: AsyncRead + Unpin>(
    mut reader: R,
    limits: &Limits,
    kill: &(impl Fn() + Sync),
    exceeded: &AtomicBool,
) -> Captured {
    let mut capture = Capture::new(limits.output_head_bytes, limits.output_tail_bytes);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                capture.push(&buf[..n]);
                if capture.total() > limits.output_kill_bytes
                    && !exceeded.swap(true, Ordering::SeqCst)
                {
                    kill();
                }
            }
        }
    }
    capture.finish()
}

/// Runs the supervision of one command: stdin in, stdout and stderr out, the wall clock.
/// `kill` must kill the whole command; `wait` resolves once it has ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn supervise<Fut>(
    limits: &Limits,
    timeout: Duration,
    stdin_bytes: &[u8],
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    kill: impl Fn() + Sync,
    wait: Fut,
) -> Result<Outcome>
where
    Fut: Future<Output = Result<()>>,
{
    let as_receiver = |fd: OwnedFd| {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| Error::io("reading command output", e))
    };
    let stdout = as_receiver(stdout)?;
    let stderr = as_receiver(stderr)?;
    let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(stdin)
        .map_err(|e| Error::io("writing command input", e))?;
    supervise_streams(
        limits,
        timeout,
        stdin_bytes,
        stdin,
        stdout,
        stderr,
        kill,
        wait,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn supervise_streams<W, R1, R2, Fut>(
    limits: &Limits,
    timeout: Duration,
    stdin_bytes: &[u8],
    mut stdin: W,
    stdout: R1,
    stderr: R2,
    kill: impl Fn() + Sync,
    wait: Fut,
) -> Result<Outcome>
where
    W: tokio::io::AsyncWrite + Unpin,
    R1: AsyncRead + Unpin,
    R2: AsyncRead + Unpin,
    Fut: Future<Output = Result<()>>,
{
    let exceeded = AtomicBool::new(false);
    let feed = async move {
        // A command that exits without reading its input is not an error.
        let _ = stdin.write_all(stdin_bytes).await;
        let _ = stdin.shutdown().await;
    };
    let watch = async {
        tokio::pin!(wait);
        match tokio::time::timeout(timeout, &mut wait).await {
            Ok(result) => result.map(|()| false),
            Err(_) => {
                kill();
                wait.await.map(|()| true)
            }
        }
    };
    let (_, out, err, timed_out) = tokio::join!(
        feed,
        read_stream(stdout, limits, &kill, &exceeded),
        read_stream(stderr, limits, &kill, &exceeded),
        watch
    );
    Ok(Outcome {
        stdout: out,
        stderr: err,
        timed_out: timed_out?,
        output_exceeded: exceeded.load(Ordering::SeqCst),
    })
}

/// Puts a command's result together and names the limit that ended it, if any.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    limits: &Limits,
    outcome: Outcome,
    status: ExitStatus,
    duration: Duration,
    cpu_time: Duration,
    oom_killed: bool,
    process_limit_hits: u64,
    peak_memory_bytes: Option<u64>,
) -> ExecResult {
    let killed_by = if outcome.timed_out {
        Some(LimitKind::WallClock)
    } else if outcome.output_exceeded {
        Some(LimitKind::Output)
    } else if oom_killed {
        Some(LimitKind::Memory)
    } else {
        match status {
            ExitStatus::Signaled(libc::SIGXCPU) => Some(LimitKind::CpuTime),
            ExitStatus::Signaled(libc::SIGKILL) if cpu_time.as_secs() >= limits.cpu_seconds => {
                Some(LimitKind::CpuTime)
            }
            ExitStatus::Signaled(libc::SIGXFSZ) => Some(LimitKind::FileSize),
            _ => None,
        }
    };
    ExecResult {
        status,
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        duration,
        cpu_time,
        peak_memory_bytes,
        timed_out: outcome.timed_out,
        oom_killed,
        killed_by,
        process_limit_hits,
    }
}

/// Writes a file below `root`, creating missing parent directories, never following a symlink;
/// new files and directories are given to `owner` (the sandbox user) when set.
pub(crate) fn write_confined(
    root: &Dir,
    path: &str,
    contents: &[u8],
    executable: bool,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let rel = crate::paths::normalise(path)?;
    let refuse = |errno: i32| Error::WorkspaceFile {
        path: rel.clone(),
        reason: describe_open_errno(errno),
    };
    let chown = |fd: i32, name: Option<&CString>| {
        if let Some((uid, gid)) = owner {
            // SAFETY: valid descriptor and (optional) C string.
            unsafe {
                match name {
                    Some(name) => {
                        libc::fchownat(fd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
                    }
                    None => libc::fchown(fd, uid, gid),
                };
            }
        }
    };
    let components: Vec<&str> = rel.split('/').collect();
    for depth in 1..components.len() {
        let prefix = components[..depth].join("/");
        match root.subdir(&prefix) {
            Ok(_) => continue,
            Err(libc::ENOENT) => {
                let parent = if depth == 1 {
                    None
                } else {
                    Some(
                        root.subdir(&components[..depth - 1].join("/"))
                            .map_err(refuse)?,
                    )
                };
                let parent_fd = parent.as_ref().map_or(root.raw(), |d| d.raw());
                let name = CString::new(components[depth - 1]).map_err(|_| refuse(libc::EINVAL))?;
                // SAFETY: valid descriptor and C string; mkdirat never follows the last component.
                if unsafe { libc::mkdirat(parent_fd, name.as_ptr(), 0o755) } != 0
                    && sys::errno() != libc::EEXIST
                {
                    return Err(refuse(sys::errno()));
                }
                chown(parent_fd, Some(&name));
            }
            Err(e) => return Err(refuse(e)),
        }
    }
    let mode = if executable { 0o755 } else { 0o644 };
    let fd = root
        .open(
            &rel,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
            mode,
        )
        .map_err(refuse)?;
    chown(fd.as_raw_fd(), None);
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, contents)
        .map_err(|e| Error::io(format!("writing {rel}"), e))?;
    let perms = std::os::unix::fs::PermissionsExt::from_mode(mode);
    file.set_permissions(perms)
        .map_err(|e| Error::io(format!("chmod {rel}"), e))?;
    Ok(())
}
