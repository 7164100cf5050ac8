//! Code that runs in processes created by `clone3` from the (multi-threaded) supervisor.
//!
//! Three roles, all without `execve` until the last step:
//! - the **builder** (one per episode) builds the episode's root file system in a new mount,
//!   network and UTS namespace, hands the supervisor descriptors for them, and exits;
//! - the **init** (one per command) is pid 1 of a fresh pid namespace inside the episode's
//!   namespaces: it mounts `/proc`, joins the episode's cgroups, starts the command and reaps
//!   every process until the command ends, then kills whatever is left;
//! - the **command** process enters a new user namespace as an unprivileged user, drops every
//!   capability, applies the rlimits and executes the agent's command.
//!
//! Everything here must be async-signal-safe: system calls only, on data prepared by the
//! parent. Nothing here may allocate, lock, panic or return to the caller.

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::plan::{RootfsPlan, Step};
use crate::sys;

/// One message on a status pipe: `(tag, a, b)` as three native-endian 32-bit words.
pub const RECORD_LEN: usize = 12;
pub const TAG_READY: u32 = 1;
pub const TAG_EXIT: u32 = 2;
pub const TAG_INIT_ERROR: u32 = 3;
pub const TAG_COMMAND_ERROR: u32 = 4;
pub const TAG_BUILD_ERROR: u32 = 5;

pub fn encode(tag: u32, a: i32, b: i32) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[0..4].copy_from_slice(&tag.to_ne_bytes());
    out[4..8].copy_from_slice(&a.to_ne_bytes());
    out[8..12].copy_from_slice(&b.to_ne_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> (u32, i32, i32) {
    let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
    (
        u32::from_ne_bytes(word(0)),
        i32::from_ne_bytes(word(4)),
        i32::from_ne_bytes(word(8)),
    )
}

/// Steps of the init and command processes, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum InitStep {
    SetnsMount = 1,
    SetnsNet,
    SetnsUts,
    UnshareMount,
    MountProc,
    JoinCgroup,
    Pipe,
    Fork,
    WriteIdMap,
    UnshareUser,
    SetIds,
    DropCaps,
    Rlimit,
    Stdio,
    Chdir,
    Exec,
    DeathSignal,
    SetnsUser,
    UnsharePid,
}

impl InitStep {
    pub fn from_code(code: i32) -> Option<InitStep> {
        use InitStep::*;
        [
            SetnsMount,
            SetnsNet,
            SetnsUts,
            UnshareMount,
            MountProc,
            JoinCgroup,
            Pipe,
            Fork,
            WriteIdMap,
            UnshareUser,
            SetIds,
            DropCaps,
            Rlimit,
            Stdio,
            Chdir,
            Exec,
            DeathSignal,
            SetnsUser,
            UnsharePid,
        ]
        .into_iter()
        .find(|s| *s as i32 == code)
    }
}

/// Closes every descriptor not in `keep` (which must be sorted ascending).
fn close_all_but(keep: &[RawFd]) {
    let mut next: u32 = 3;
    for &fd in keep {
        let fd = fd as u32;
        if fd > next {
            sys::close_range(next, fd - 1);
        }
        if fd + 1 > next {
            next = fd + 1;
        }
    }
    sys::close_range(next, u32::MAX);
}

fn report_and_exit(fd: RawFd, tag: u32, step: i32, errno: i32) -> ! {
    let _ = sys::write_all(fd, &encode(tag, step, errno));
    // SAFETY: `_exit` is always sound and never returns.
    unsafe { libc::_exit(127) }
}

fn build_fail(fd: RawFd, index: i32) -> ! {
    report_and_exit(fd, TAG_BUILD_ERROR, index, sys::errno())
}

fn init_fail(fd: RawFd, step: InitStep) -> ! {
    report_and_exit(fd, TAG_INIT_ERROR, step as i32, sys::errno())
}

fn command_fail(fd: RawFd, step: InitStep) -> ! {
    report_and_exit(fd, TAG_COMMAND_ERROR, step as i32, sys::errno())
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

// --------------------------------------------------------------------------------------------
// Builder

/// What the builder needs besides the plan.
pub struct BuilderIo {
    /// Sorted descriptors to keep open.
    pub keep: Vec<RawFd>,
    pub status_fd: RawFd,
    /// Read end of a pipe the supervisor closes once it has taken what it needs.
    pub hold_fd: RawFd,
    /// Read end of a pipe the supervisor writes one byte to once the builder's user namespace
    /// (rootless mode) has its id maps.
    pub go_fd: RawFd,
}

/// Entry point of the builder process. Never returns.
pub fn builder_main(plan: &RootfsPlan, io: &BuilderIo) -> ! {
    // SAFETY: only system calls on data prepared before the fork.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        close_all_but(&io.keep);
        let mut go = [0u8; 1];
        if !matches!(sys::read_exact(io.go_fd, &mut go), Ok(true)) {
            libc::_exit(126);
        }
        libc::close(io.go_fd);
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            build_fail(io.status_fd, -1);
        }
        for (index, step) in plan.steps.iter().enumerate() {
            let ok = match step {
                Step::Mkdir { path, mode } => {
                    let r = libc::mkdir(path.as_ptr(), *mode);
                    // mkdir applies the umask; set the exact mode (sticky bits included).
                    r == 0 && libc::chmod(path.as_ptr(), *mode) == 0
                        || (r != 0 && sys::errno() == libc::EEXIST)
                }
                Step::Symlink { target, path } => {
                    libc::symlink(target.as_ptr(), path.as_ptr()) == 0
                }
                Step::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    fd >= 0 && libc::close(fd) == 0
                }
                Step::WriteFile { path, contents } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
                        0o644,
                    );
                    fd >= 0 && sys::write_all(fd, contents).is_ok() && libc::close(fd) == 0
                }
                Step::Chown { path, uid, gid } => libc::chown(path.as_ptr(), *uid, *gid) == 0,
                Step::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => {
                    libc::mount(
                        opt_ptr(source),
                        target.as_ptr(),
                        opt_ptr(fstype),
                        *flags,
                        opt_ptr(data).cast(),
                    ) == 0
                }
            };
            if !ok {
                build_fail(io.status_fd, index as i32);
            }
        }
        let upper = libc::open(
            plan.upper_dir.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        let merged = libc::open(
            plan.merged_dir.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if upper < 0 || merged < 0 {
            build_fail(io.status_fd, -2);
        }
        // Make the new root the namespace's root and drop every host mount from view.
        if libc::chdir(plan.new_root.as_ptr()) != 0 {
            build_fail(io.status_fd, -3);
        }
        let dot = c".";
        if sys::pivot_root(dot, dot) != 0 {
            build_fail(io.status_fd, -4);
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 || libc::chdir(root.as_ptr()) != 0 {
            build_fail(io.status_fd, -5);
        }
        let ro =
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            ro,
            std::ptr::null(),
        ) != 0
        {
            build_fail(io.status_fd, -6);
        }
        if !loopback_up() {
            build_fail(io.status_fd, -7);
        }
        let name = plan.hostname.as_bytes();
        if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
            build_fail(io.status_fd, -8);
        }
        if sys::write_all(io.status_fd, &encode(TAG_READY, upper, merged)).is_err() {
            libc::_exit(126);
        }
        // Wait until the supervisor has taken its descriptors and closed the pipe.
        let mut byte = [0u8; 1];
        let _ = sys::read_exact(io.hold_fd, &mut byte);
        libc::_exit(0)
    }
}

/// Brings up `lo` in the current network namespace.
fn loopback_up() -> bool {
    // SAFETY: ioctl on a socket we own with a properly initialised ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 {
            libc::close(sock);
            return false;
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let ok = libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req) == 0;
        libc::close(sock);
        ok
    }
}

// --------------------------------------------------------------------------------------------
// Init and command

/// Everything the per-command init and the command need, prepared by the supervisor.
pub struct CommandPlan {
    /// Sorted descriptors to keep open in the init.
    pub keep: Vec<RawFd>,
    /// Rootless mode: the episode's user namespace, joined first. The init then creates the
    /// pid and IPC namespaces itself (so they belong to that user namespace) and forks the real
    /// pid 1; without it the supervisor created them with `clone3`.
    pub user_ns: Option<RawFd>,
    pub mount_ns: RawFd,
    pub net_ns: RawFd,
    pub uts_ns: RawFd,
    /// Open `cgroup.procs` files of the episode's cgroups.
    pub cgroup_procs: Vec<RawFd>,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub status: RawFd,
    pub proc_options: CString,
    /// Absolute candidates for the program, tried in order (a `PATH` search done beforehand).
    pub program_candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub uid_map: CString,
    pub gid_map: CString,
    pub inside_uid: u32,
    pub inside_gid: u32,
}

/// Null-terminated pointer arrays for `execve`, built before the fork.
pub struct ExecPointers {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecPointers {
    pub fn new(plan: &CommandPlan) -> ExecPointers {
        let to_ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ExecPointers {
            argv: to_ptrs(&plan.argv),
            envp: to_ptrs(&plan.envp),
        }
    }
}

/// Entry point of the per-command init (pid 1 of a new pid namespace). Never returns.
pub fn init_main(plan: &CommandPlan, ptrs: &ExecPointers) -> ! {
    let status = plan.status;
    // SAFETY: only system calls on data prepared before the fork.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            init_fail(status, InitStep::DeathSignal);
        }
        close_all_but(&plan.keep);
        if let Some(user_ns) = plan.user_ns {
            if libc::setns(user_ns, libc::CLONE_NEWUSER) != 0 {
                init_fail(status, InitStep::SetnsUser);
            }
        }
        if libc::setns(plan.mount_ns, libc::CLONE_NEWNS) != 0 {
            init_fail(status, InitStep::SetnsMount);
        }
        if libc::setns(plan.net_ns, libc::CLONE_NEWNET) != 0 {
            init_fail(status, InitStep::SetnsNet);
        }
        if libc::setns(plan.uts_ns, libc::CLONE_NEWUTS) != 0 {
            init_fail(status, InitStep::SetnsUts);
        }
        if plan.user_ns.is_some() {
            // This process stays outside the new pid namespace: it waits for the pid 1 it forks
            // and dies with it (and the pid 1 dies with this process).
            if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWIPC) != 0 {
                init_fail(status, InitStep::UnsharePid);
            }
            let pid1 = match sys::raw_fork() {
                Ok(pid) => pid,
                Err(_) => init_fail(status, InitStep::Fork),
            };
            if pid1 != 0 {
                // SIGTERM from the supervisor means "kill the command": pass it on as SIGKILL to
                // the pid 1, and keep waiting so that this process ends only once the whole pid
                // namespace is gone.
                ROOTLESS_PID1.store(pid1, std::sync::atomic::Ordering::SeqCst);
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = forward_kill as *const () as libc::sighandler_t;
                libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
                let mut wstatus = 0;
                while libc::waitpid(pid1, &mut wstatus, 0) < 0 && sys::errno() == libc::EINTR {}
                libc::_exit(0);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                init_fail(status, InitStep::DeathSignal);
            }
        }
        // A private copy of the episode's mounts, so this command's /proc is its own.
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            init_fail(status, InitStep::UnshareMount);
        }
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            proc_flags,
            plan.proc_options.as_ptr().cast(),
        ) != 0
        {
            init_fail(status, InitStep::MountProc);
        }
        for &fd in &plan.cgroup_procs {
            if sys::write_all(fd, b"0").is_err() {
                init_fail(status, InitStep::JoinCgroup);
            }
            libc::close(fd);
        }
        let mut ready = [0 as RawFd; 2];
        let mut go = [0 as RawFd; 2];
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0
            || libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) != 0
        {
            init_fail(status, InitStep::Pipe);
        }
        let child = match sys::raw_fork() {
            Ok(pid) => pid,
            Err(_) => init_fail(status, InitStep::Fork),
        };
        if child == 0 {
            libc::close(ready[0]);
            libc::close(go[1]);
            command_main(plan, ptrs, ready[1], go[0]);
        }
        libc::close(ready[1]);
        libc::close(go[0]);
        libc::close(plan.stdin);
        libc::close(plan.stdout);
        libc::close(plan.stderr);

        // The command has entered its user namespace: map its ids, then let it go.
        let mut byte = [0u8; 1];
        if matches!(sys::read_exact(ready[0], &mut byte), Ok(true))
            && !(write_id_map(child, b"uid_map", &plan.uid_map)
                && write_id_map(child, b"gid_map", &plan.gid_map))
        {
            let e = sys::errno();
            libc::kill(child, libc::SIGKILL);
            let _ = sys::write_all(
                status,
                &encode(TAG_INIT_ERROR, InitStep::WriteIdMap as i32, e),
            );
        }
        let _ = sys::write_all(go[1], b"g");
        libc::close(go[1]);
        libc::close(ready[0]);

        // Reap everything; when the command itself ends, kill the rest of the namespace.
        let mut command_status: Option<i32> = None;
        loop {
            let mut wstatus: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut wstatus, 0);
            if pid < 0 {
                match sys::errno() {
                    libc::EINTR => continue,
                    _ => break,
                }
            }
            if pid == child {
                command_status = Some(wstatus);
                libc::kill(-1, libc::SIGKILL);
            }
        }
        if let Some(wstatus) = command_status {
            let _ = sys::write_all(status, &encode(TAG_EXIT, wstatus, 0));
        }
        libc::_exit(0)
    }
}

/// The pid 1 a rootless init forwards the supervisor's kill to (set in that process only).
static ROOTLESS_PID1: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_kill(_signal: libc::c_int) {
    let pid = ROOTLESS_PID1.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Writes `/proc/<pid>/<file>` without allocating.
fn write_id_map(pid: libc::pid_t, file: &[u8], contents: &CString) -> bool {
    let mut path = [0u8; 64];
    let mut digits = [0u8; 20];
    let parts: [&[u8]; 4] = [
        b"/proc/",
        sys::format_decimal(pid as u64, &mut digits),
        b"/",
        file,
    ];
    let mut len = 0;
    for part in parts {
        path[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    path[len] = 0;
    // SAFETY: `path` is NUL-terminated.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = sys::write_all(fd, contents.as_bytes()).is_ok();
        libc::close(fd);
        ok
    }
}

/// The command process: unprivileged user namespace, no capabilities, rlimits, then `execve`.
fn command_main(plan: &CommandPlan, ptrs: &ExecPointers, ready: RawFd, go: RawFd) -> ! {
    let status = plan.status;
    // SAFETY: only system calls on data prepared before the fork.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            command_fail(status, InitStep::UnshareUser);
        }
        let mut byte = [0u8; 1];
        if sys::write_all(ready, b"r").is_err()
            || !matches!(sys::read_exact(go, &mut byte), Ok(true))
        {
            command_fail(status, InitStep::WriteIdMap);
        }
        libc::close(ready);
        libc::close(go);
        // In rootless mode `setgroups` is denied (inherited from the episode's user namespace):
        // the process then keeps no group it could use anyway, as none is mapped.
        // Raw system calls, not glibc's wrappers: those broadcast the change to every thread
        // glibc believes exists, and after a raw clone of a multi-threaded parent they wait
        // forever for threads that are not there.
        let (uid, gid) = (
            plan.inside_uid as libc::c_long,
            plan.inside_gid as libc::c_long,
        );
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            && sys::errno() != libc::EPERM
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
        {
            command_fail(status, InitStep::SetIds);
        }
        if !drop_capabilities() {
            command_fail(status, InitStep::DropCaps);
        }
        for &(resource, value) in &plan.rlimits {
            // A CPU hard limit one second above the soft one: SIGXCPU first, then SIGKILL.
            let hard = if resource == libc::RLIMIT_CPU {
                value.saturating_add(1)
            } else {
                value
            };
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: hard,
            };
            if libc::setrlimit(resource, &limit) != 0 {
                command_fail(status, InitStep::Rlimit);
            }
        }
        // Move the pipes out of the way first: any of them may already sit on 0, 1 or 2.
        let high = [plan.stdin, plan.stdout, plan.stderr]
            .map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10));
        if high.iter().any(|&fd| fd < 0) {
            command_fail(status, InitStep::Stdio);
        }
        for (target, fd) in high.into_iter().enumerate() {
            if libc::dup2(fd, target as RawFd) < 0 {
                command_fail(status, InitStep::Stdio);
            }
        }
        sys::cloexec_from(3);
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            command_fail(status, InitStep::Chdir);
        }
        let mut last_errno = libc::ENOENT;
        for program in &plan.program_candidates {
            libc::execve(program.as_ptr(), ptrs.argv.as_ptr(), ptrs.envp.as_ptr());
            let e = sys::errno();
            // Keep the most informative error: "exists but cannot run" beats "not found".
            if e != libc::ENOENT && e != libc::ENOTDIR || last_errno == libc::ENOENT {
                last_errno = e;
            }
        }
        *libc::__errno_location() = last_errno;
        command_fail(status, InitStep::Exec)
    }
}

/// Empties the bounding, ambient, effective, permitted and inheritable capability sets and sets
/// no_new_privs, so nothing the command executes can gain privileges again.
fn drop_capabilities() -> bool {
    // SAFETY: prctl and capset with valid arguments.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && sys::errno() != libc::EINVAL
            {
                return false;
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
        {
            return false;
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) != 0 {
            return false;
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    }
}
