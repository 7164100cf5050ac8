//! Thin wrappers over the Linux system calls the sandbox needs and `libc` does not wrap.
//!
//! Everything here is a direct system call with no allocation, so every function may be used in
//! a child created by `clone3` from a multi-threaded parent. Nothing here may ever allocate,
//! take a lock or touch thread-local state.

use std::os::fd::RawFd;

/// `struct clone_args` from `linux/sched.h` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `struct open_how` from `linux/openat2.h` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub const CLONE_PIDFD: u64 = 0x1000;
pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
const P_PIDFD: libc::idtype_t = 3;
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// The last error number of the calling thread.
pub fn errno() -> i32 {
    // SAFETY: reading errno is always sound.
    unsafe { *libc::__errno_location() }
}

/// Outcome of [`clone3_fork`]: which side of the fork we are on.
pub enum Forked {
    Parent { pid: libc::pid_t, pidfd: RawFd },
    Child,
}

/// `clone3` with fork semantics (a copy of the address space, no new stack).
///
/// # Safety
/// The child runs in a copy of a possibly multi-threaded process: it must only make system
/// calls (no allocation, no locks) and must end in `_exit` or `execve`.
pub unsafe fn clone3_fork(namespace_flags: u64) -> Result<Forked, i32> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: namespace_flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    let ret = libc::syscall(
        libc::SYS_clone3,
        &mut args as *mut CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    match ret {
        -1 => Err(errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as libc::pid_t,
            pidfd,
        }),
    }
}

/// A plain fork through `clone3` (no pidfd), for use inside sandbox children where glibc's
/// `fork` (which runs atfork handlers and takes malloc locks) is not safe.
///
/// # Safety
/// As for [`clone3_fork`].
pub unsafe fn raw_fork() -> Result<libc::pid_t, i32> {
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    let ret = libc::syscall(
        libc::SYS_clone3,
        &mut args as *mut CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    if ret == -1 {
        Err(errno())
    } else {
        Ok(ret as libc::pid_t)
    }
}

pub fn pidfd_send_signal(pidfd: RawFd, signal: i32) -> Result<(), i32> {
    // SAFETY: plain system call on integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == -1 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Duplicates file descriptor `target_fd` of the process behind `pidfd` into this process.
pub fn pidfd_getfd(pidfd: RawFd, target_fd: RawFd) -> Result<RawFd, i32> {
    // SAFETY: plain system call on integers.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, target_fd, 0) };
    if ret == -1 {
        Err(errno())
    } else {
        Ok(ret as RawFd)
    }
}

/// The CPU time a reaped child and its reaped descendants used.
pub struct Reaped {
    pub cpu_micros: u64,
}

/// Reaps the process behind `pidfd` (which must already have exited, or this blocks).
pub fn waitid_pidfd(pidfd: RawFd) -> Result<Reaped, i32> {
    // SAFETY: zeroed siginfo and rusage are valid; the kernel fills them.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let mut usage: libc::rusage = std::mem::zeroed();
        loop {
            let ret = libc::syscall(
                libc::SYS_waitid,
                P_PIDFD,
                pidfd,
                &mut info as *mut libc::siginfo_t,
                libc::WEXITED,
                &mut usage as *mut libc::rusage,
            );
            if ret == -1 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            break;
        }
        let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Ok(Reaped {
            cpu_micros: micros(usage.ru_utime) + micros(usage.ru_stime),
        })
    }
}

/// `openat2` relative to `dirfd`.
pub fn openat2(
    dirfd: RawFd,
    path: &std::ffi::CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<RawFd, i32> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    loop {
        // SAFETY: `path` is a valid C string and `how` a valid struct for the call's duration.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret == -1 {
            let e = errno();
            if e == libc::EAGAIN || e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        return Ok(ret as RawFd);
    }
}

/// Marks every descriptor from `first` upwards close-on-exec.
pub fn cloexec_from(first: u32) -> i32 {
    // SAFETY: plain system call on integers.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) as i32 }
}

/// Closes every descriptor in `[first, last]`.
pub fn close_range(first: u32, last: u32) -> i32 {
    // SAFETY: plain system call on integers.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) as i32 }
}

pub fn pivot_root(new_root: &std::ffi::CStr, put_old: &std::ffi::CStr) -> i32 {
    // SAFETY: both are valid C strings.
    unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) as i32 }
}

/// Writes all of `buf` to `fd`, retrying on interruption.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes; returns false on end of file before that.
pub fn read_exact(fd: RawFd, buf: &mut [u8]) -> Result<bool, i32> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the tail of `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(false);
        }
        done += n as usize;
    }
    Ok(true)
}

/// Formats `n` in decimal into `buf` without allocating; returns the digits.
pub fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formatting_matches_std() {
        for n in [0u64, 7, 10, 99, 100, 4_294_967_296, u64::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(format_decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
