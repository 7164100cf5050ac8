//! The namespace backend: each episode is a mount, network and UTS namespace built once over
//! an overlay of its snapshot; each command is a fresh pid and IPC namespace inside it, with its
//! own `/proc`, run as an unprivileged user in a user namespace of its own.
//!
//! The episode's file systems exist only inside its namespaces: the host holds descriptors, not
//! mounts, so a crashed supervisor leaves nothing mounted behind. The host never resolves a path
//! the agent could have planted a symlink in, except through [`Dir`].

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::cgroup::{CgroupSupport, EpisodeCgroups};
use crate::child::{self, BuilderIo, CommandPlan, ExecPointers, InitStep};
use crate::config::SandboxConfig;
use crate::dirfd::{describe_open_errno, Dir};
use crate::error::{Error, Result};
use crate::exec::{ExecRequest, ExecResult, ExitStatus};
use crate::limits::Limits;
use crate::plan::{RootfsPlan, INSIDE_GID, INSIDE_UID, WORKSPACE};
use crate::snapshot::Snapshot;
use crate::sys;
use crate::{io_util, WorkspaceDiff};

struct Started {
    guard: ChildGuard,
    pidfd: RawFd,
    started: Instant,
    counters_before: Option<(u64, u64)>,
    stdin_w: OwnedFd,
    stdout_r: OwnedFd,
    stderr_r: OwnedFd,
    status_r: OwnedFd,
}

pub(crate) struct NsEpisode {
    pub id: String,
    snapshot: Snapshot,
    config: Arc<SandboxConfig>,
    limits: Limits,
    /// Rootless mode: the episode's user namespace (owner of all its other namespaces).
    user_ns: Option<OwnedFd>,
    mount_ns: OwnedFd,
    net_ns: OwnedFd,
    uts_ns: OwnedFd,
    upper: Dir,
    merged: Dir,
    cgroups: Option<EpisodeCgroups>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::os("creating a pipe", sys::errno()));
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

/// Reads every status record until end of file (all writers gone).
fn read_records(fd: &OwnedFd) -> Vec<(u32, i32, i32)> {
    let mut records = Vec::new();
    let mut buf = [0u8; child::RECORD_LEN];
    while let Ok(true) = sys::read_exact(fd.as_raw_fd(), &mut buf) {
        records.push(child::decode(&buf));
    }
    records
}

/// Kills and reaps a child on drop unless it was reaped: a dropped `exec` future or a failed
/// setup never leaves a process behind.
struct ChildGuard {
    pidfd: Option<OwnedFd>,
    /// SIGKILL, or SIGTERM for a rootless init (which then kills its pid namespace and waits).
    kill_signal: i32,
}

impl ChildGuard {
    fn reap(&mut self) -> Result<sys::Reaped> {
        let fd = self.pidfd.take().ok_or(Error::Destroyed)?;
        sys::waitid_pidfd(fd.as_raw_fd()).map_err(|e| Error::os("reaping a sandbox process", e))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            let _ = sys::pidfd_send_signal(fd.as_raw_fd(), self.kill_signal);
            let _ = sys::waitid_pidfd(fd.as_raw_fd());
        }
    }
}

fn open_ns(pid: libc::pid_t, kind: &str) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening {path}"), e))
}

fn builder_failure(plan: &RootfsPlan, index: i32, errno: i32) -> Error {
    let step = match index {
        -1 => "making the mount tree private".to_string(),
        -2 => "opening the workspace layers".to_string(),
        -5..=-3 => "pivot_root into the episode root".to_string(),
        -6 => "remounting the root read-only".to_string(),
        -7 => "bringing up the loopback interface".to_string(),
        -8 => "setting the host name".to_string(),
        i => plan
            .steps
            .get(i as usize)
            .map_or_else(|| format!("step {i}"), |s| format!("{s:?}")),
    };
    Error::Setup {
        step,
        source: std::io::Error::from_raw_os_error(errno),
    }
}

impl NsEpisode {
    pub fn create(
        id: String,
        snapshot: &Snapshot,
        config: Arc<SandboxConfig>,
        limits: Limits,
        cgroup_support: Option<&CgroupSupport>,
        stage_dir: &Path,
        rootless: bool,
    ) -> Result<NsEpisode> {
        let cgroups = match cgroup_support {
            Some(support) => Some(EpisodeCgroups::create(support, &id, &limits)?),
            None => None,
        };
        let cleanup = |e: Error| {
            if let Some(groups) = &cgroups {
                let _ = groups.remove();
            }
            e
        };
        let plan = RootfsPlan::build(&config, &limits, &snapshot.path, stage_dir, rootless)
            .map_err(cleanup)?;
        let (status_r, status_w) = pipe().map_err(cleanup)?;
        let (hold_r, hold_w) = pipe().map_err(cleanup)?;
        let (go_r, go_w) = pipe().map_err(cleanup)?;
        let mut keep = vec![status_w.as_raw_fd(), hold_r.as_raw_fd(), go_r.as_raw_fd()];
        keep.sort_unstable();
        let io = BuilderIo {
            keep,
            status_fd: status_w.as_raw_fd(),
            hold_fd: hold_r.as_raw_fd(),
            go_fd: go_r.as_raw_fd(),
        };
        let mut flags = (libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS) as u64;
        if rootless {
            flags |= libc::CLONE_NEWUSER as u64;
        }
        // SAFETY: the child only runs `builder_main`, which makes system calls on `plan` and `io`.
        let (pid, pidfd) = match unsafe { sys::clone3_fork(flags) } {
            Ok(sys::Forked::Child) => child::builder_main(&plan, &io),
            Ok(sys::Forked::Parent { pid, pidfd }) => (pid, pidfd),
            Err(e) => {
                return Err(cleanup(Error::os(
                    "creating the episode namespaces (clone3)",
                    e,
                )))
            }
        };
        // SAFETY: clone3 handed us a fresh pidfd that we now own.
        let mut guard = ChildGuard {
            pidfd: Some(unsafe { OwnedFd::from_raw_fd(pidfd) }),
            kill_signal: libc::SIGKILL,
        };
        drop(status_w);
        drop(hold_r);
        drop(go_r);
        if rootless {
            // The builder is root in its user namespace, which maps to the calling user.
            // SAFETY: geteuid and getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let maps = [
                ("setgroups", "deny".to_string()),
                ("uid_map", format!("0 {uid} 1\n")),
                ("gid_map", format!("0 {gid} 1\n")),
            ];
            for (file, contents) in maps {
                let path = format!("/proc/{pid}/{file}");
                if let Err(e) = std::fs::write(&path, contents) {
                    return Err(cleanup(Error::io(format!("writing {path}"), e)));
                }
            }
        }
        if sys::write_all(go_w.as_raw_fd(), b"g").is_err() {
            return Err(cleanup(Error::Setup {
                step: "starting the episode builder".into(),
                source: std::io::Error::other("the builder died"),
            }));
        }
        drop(go_w);
        let mut record = [0u8; child::RECORD_LEN];
        let got = sys::read_exact(status_r.as_raw_fd(), &mut record).unwrap_or(false);
        let (tag, a, b) = child::decode(&record);
        if !got {
            return Err(cleanup(Error::Setup {
                step: "building the episode root (the builder died)".into(),
                source: std::io::Error::other("no status"),
            }));
        }
        if tag == child::TAG_BUILD_ERROR {
            let _ = guard.reap();
            return Err(cleanup(builder_failure(&plan, a, b)));
        }
        let result = (|| {
            let raw_pidfd = guard.pidfd.as_ref().map_or(-1, |f| f.as_raw_fd());
            let take = |fd: RawFd| -> Result<OwnedFd> {
                let got =
                    sys::pidfd_getfd(raw_pidfd, fd).map_err(|e| Error::os("pidfd_getfd", e))?;
                // SAFETY: pidfd_getfd returned a fresh descriptor that we now own.
                Ok(unsafe { OwnedFd::from_raw_fd(got) })
            };
            let user_ns = if rootless {
                Some(open_ns(pid, "user")?)
            } else {
                None
            };
            Ok::<_, Error>((
                user_ns,
                take(a)?,
                take(b)?,
                open_ns(pid, "mnt")?,
                open_ns(pid, "net")?,
                open_ns(pid, "uts")?,
            ))
        })();
        drop(hold_w);
        let _ = guard.reap();
        let (user_ns, upper, merged, mount_ns, net_ns, uts_ns) = result.map_err(cleanup)?;
        Ok(NsEpisode {
            id,
            snapshot: snapshot.clone(),
            config,
            limits,
            user_ns,
            mount_ns,
            net_ns,
            uts_ns,
            upper: Dir::from_fd(upper),
            merged: Dir::from_fd(merged),
            cgroups,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Everything up to the command's start; synchronous, so no raw pointer crosses an await.
    fn start(&self, request: &ExecRequest) -> Result<Started> {
        let prepared =
            prepare_command(&self.config, &self.limits, request, self.cgroups.is_some())?;
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let cgroup_fds = match &self.cgroups {
            Some(groups) => groups.open_procs()?,
            None => Vec::new(),
        };
        let mut keep: Vec<RawFd> = [
            self.user_ns
                .as_ref()
                .map_or(self.mount_ns.as_raw_fd(), |fd| fd.as_raw_fd()),
            self.mount_ns.as_raw_fd(),
            self.net_ns.as_raw_fd(),
            self.uts_ns.as_raw_fd(),
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            status_w.as_raw_fd(),
        ]
        .into_iter()
        .chain(cgroup_fds.iter().map(|f| f.as_raw_fd()))
        .collect();
        keep.sort_unstable();
        keep.dedup();
        // Rootless, the agent's uid 1000 maps to root of the episode's user namespace, which is
        // the calling user on the host.
        let (host_uid, host_gid) = match self.user_ns {
            Some(_) => (0, 0),
            None => (self.config.sandbox_uid, self.config.sandbox_gid),
        };
        let plan = CommandPlan {
            keep,
            user_ns: self.user_ns.as_ref().map(|fd| fd.as_raw_fd()),
            mount_ns: self.mount_ns.as_raw_fd(),
            net_ns: self.net_ns.as_raw_fd(),
            uts_ns: self.uts_ns.as_raw_fd(),
            cgroup_procs: cgroup_fds.iter().map(|f| f.as_raw_fd()).collect(),
            stdin: stdin_r.as_raw_fd(),
            stdout: stdout_w.as_raw_fd(),
            stderr: stderr_w.as_raw_fd(),
            status: status_w.as_raw_fd(),
            proc_options: CString::new("hidepid=2").expect("static string"),
            program_candidates: prepared.candidates,
            argv: prepared.argv,
            envp: prepared.envp,
            cwd: prepared.cwd,
            rlimits: prepared.rlimits,
            uid_map: cstring(format!("{INSIDE_UID} {host_uid} 1\n"))?,
            gid_map: cstring(format!("{INSIDE_GID} {host_gid} 1\n"))?,
            inside_uid: INSIDE_UID,
            inside_gid: INSIDE_GID,
        };
        let pointers = ExecPointers::new(&plan);
        let counters_before = self.cgroups.as_ref().map(|g| {
            g.reset_peak_memory();
            (
                g.oom_kills().unwrap_or(0),
                g.process_limit_hits().unwrap_or(0),
            )
        });
        let started = Instant::now();
        let flags = match self.user_ns {
            // Rootless, the init makes these itself once inside the episode's user namespace.
            Some(_) => 0,
            None => (libc::CLONE_NEWPID | libc::CLONE_NEWIPC) as u64,
        };
        // SAFETY: the child only runs `init_main`, which makes system calls on prepared data.
        let pidfd = match unsafe { sys::clone3_fork(flags) } {
            Ok(sys::Forked::Child) => child::init_main(&plan, &pointers),
            Ok(sys::Forked::Parent { pidfd, .. }) => pidfd,
            Err(e) => return Err(Error::os("starting a command (clone3)", e)),
        };
        // SAFETY: clone3 handed us a fresh pidfd that we now own.
        let kill_signal = if self.user_ns.is_some() {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        let guard = ChildGuard {
            pidfd: Some(unsafe { OwnedFd::from_raw_fd(pidfd) }),
            kill_signal,
        };
        drop((stdin_r, stdout_w, stderr_w, status_w, cgroup_fds));
        Ok(Started {
            guard,
            pidfd,
            started,
            counters_before,
            stdin_w,
            stdout_r,
            stderr_r,
            status_r,
        })
    }

    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecResult> {
        let Started {
            mut guard,
            pidfd,
            started,
            counters_before,
            stdin_w,
            stdout_r,
            stderr_r,
            status_r,
        } = self.start(request)?;

        let timeout = request
            .timeout
            .map_or(self.limits.timeout, |t| t.min(self.limits.timeout));
        let raw_pidfd = pidfd;
        let kill_signal = guard.kill_signal;
        let outcome = io_util::supervise(
            &self.limits,
            timeout,
            &request.stdin,
            stdin_w,
            stdout_r,
            stderr_r,
            move || {
                let _ = sys::pidfd_send_signal(raw_pidfd, kill_signal);
            },
            wait_readable(raw_pidfd),
        )
        .await?;
        let reaped = guard.reap()?;
        let duration = started.elapsed();
        let records = read_records(&status_r);

        let mut status = None;
        for (tag, a, b) in records {
            match tag {
                // The init reports the command's 127 after the command reported why it never started.
                child::TAG_EXIT if matches!(status, Some(ExitStatus::NotStarted { .. })) => {}
                child::TAG_EXIT => {
                    status = Some(if libc::WIFEXITED(a) {
                        ExitStatus::Exited(libc::WEXITSTATUS(a))
                    } else {
                        ExitStatus::Signaled(libc::WTERMSIG(a))
                    })
                }
                child::TAG_COMMAND_ERROR if InitStep::from_code(a) == Some(InitStep::Exec) => {
                    status = Some(ExitStatus::NotStarted { errno: b })
                }
                child::TAG_COMMAND_ERROR | child::TAG_INIT_ERROR if !outcome.killed() => {
                    let step = InitStep::from_code(a)
                        .map_or_else(|| format!("step {a}"), |s| format!("{s:?}"));
                    return Err(Error::Setup {
                        step,
                        source: std::io::Error::from_raw_os_error(b),
                    });
                }
                _ => {}
            }
        }
        let status = status.unwrap_or(ExitStatus::Signaled(libc::SIGKILL));
        let (oom_killed, process_limit_hits) = match (counters_before, &self.cgroups) {
            (Some((oom, hits)), Some(groups)) => (
                groups.oom_kills().unwrap_or(0) > oom,
                groups
                    .process_limit_hits()
                    .unwrap_or(0)
                    .saturating_sub(hits),
            ),
            _ => (false, 0),
        };
        let peak_memory_bytes = self.cgroups.as_ref().and_then(|g| g.peak_memory());
        Ok(io_util::assemble(
            &self.limits,
            outcome,
            status,
            duration,
            Duration::from_micros(reaped.cpu_micros),
            oom_killed,
            process_limit_hits,
            peak_memory_bytes,
        ))
    }

    pub fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
        let rel = crate::paths::normalise(path)?;
        self.merged
            .read_file(&rel, max_bytes)
            .map_err(|e| Error::WorkspaceFile {
                path: rel.clone(),
                reason: describe_open_errno(e),
            })
    }

    pub fn write_file(&self, path: &str, contents: &[u8], executable: bool) -> Result<()> {
        io_util::write_confined(
            &self.merged,
            path,
            contents,
            executable,
            self.user_ns
                .is_none()
                .then_some((self.config.sandbox_uid, self.config.sandbox_gid)),
        )
    }

    pub fn diff(&self) -> Result<WorkspaceDiff> {
        crate::diff::compute(&self.config, &self.snapshot.path, &self.upper, true)
    }

    pub fn teardown(&mut self) -> Result<()> {
        // The namespaces and mounts go when their last descriptor does; the cgroups are ours.
        match self.cgroups.take() {
            Some(groups) => groups.remove(),
            None => Ok(()),
        }
    }
}

impl Drop for NsEpisode {
    fn drop(&mut self) {
        tracing::debug!(episode = %self.id, "episode torn down");
        let _ = self.teardown();
    }
}

async fn wait_readable(pidfd: RawFd) -> Result<()> {
    // The pidfd stays owned by the caller's guard; AsyncFd only borrows the number.
    struct Borrowed(RawFd);
    impl AsRawFd for Borrowed {
        fn as_raw_fd(&self) -> RawFd {
            self.0
        }
    }
    // SAFETY: the caller's guard keeps the pidfd open until after this future completes.
    let async_fd =
        unsafe { AsyncFd::register_with_interest(Borrowed(pidfd), tokio::io::Interest::READABLE) }
            .map_err(|e| Error::io("watching a sandbox process", e.into()))?;
    let _ready = async_fd
        .readable()
        .await
        .map_err(|e| Error::io("waiting for a sandbox process", e))?;
    Ok(())
}

fn cstring(text: String) -> Result<CString> {
    CString::new(text).map_err(|_| Error::InvalidConfig {
        message: "a NUL byte in a command or environment".into(),
    })
}

/// Arguments, environment, program candidates, directory and rlimits of one command.
pub(crate) struct PreparedCommand {
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

pub(crate) fn prepare_command(
    config: &SandboxConfig,
    limits: &Limits,
    request: &ExecRequest,
    have_cgroups: bool,
) -> Result<PreparedCommand> {
    let program = request.argv.first().ok_or_else(|| Error::InvalidConfig {
        message: "empty command: argv needs at least the program".into(),
    })?;
    let env = config.command_env(&request.env);
    let candidates = if program.contains('/') {
        vec![cstring(program.clone())?]
    } else {
        env.get("PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| cstring(format!("{d}/{program}")))
                    .collect()
            })
            .transpose()?
            .unwrap_or_default()
    };
    let argv = request
        .argv
        .iter()
        .cloned()
        .map(cstring)
        .collect::<Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    let cwd = match &request.cwd {
        Some(dir) if !dir.is_empty() && dir != "." => {
            format!("{WORKSPACE}/{}", crate::paths::normalise(dir)?)
        }
        _ => WORKSPACE.to_string(),
    };
    let mut rlimits = vec![
        (libc::RLIMIT_CPU, limits.cpu_seconds),
        (libc::RLIMIT_FSIZE, limits.file_size_bytes),
        (libc::RLIMIT_NOFILE, limits.open_files),
        (libc::RLIMIT_CORE, 0),
    ];
    if !have_cgroups {
        // Without cgroups these are per process (memory) and per host user (processes).
        rlimits.push((libc::RLIMIT_AS, limits.memory_bytes));
        rlimits.push((libc::RLIMIT_NPROC, limits.max_processes));
    }
    // Never ask for more than the current hard limit: lowering is all an unprivileged process may do.
    for (resource, value) in &mut rlimits {
        // SAFETY: zeroed rlimit is valid; getrlimit fills it.
        let mut current: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: valid resource and out-pointer.
        if unsafe { libc::getrlimit(*resource, &mut current) } == 0
            && current.rlim_max != libc::RLIM_INFINITY
        {
            let headroom = u64::from(*resource == libc::RLIMIT_CPU);
            *value = (*value).min(current.rlim_max.saturating_sub(headroom));
        }
    }
    Ok(PreparedCommand {
        candidates,
        argv,
        envp,
        cwd: cstring(cwd)?,
        rlimits,
    })
}
