//! Directory access through file descriptors, never following a symlink.
//!
//! The host side of the sandbox reads what the agent wrote through these: every open is an
//! `openat2` below a directory descriptor with symlinks refused, so a link the agent planted
//! can name anything and still lead nowhere.

use std::ffi::{CString, OsString};
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};
use crate::sys;

pub const CONFINED: u64 = sys::RESOLVE_BENEATH
    | sys::RESOLVE_NO_SYMLINKS
    | sys::RESOLVE_NO_MAGICLINKS
    | sys::RESOLVE_NO_XDEV;

/// What an entry is, read with `AT_SYMLINK_NOFOLLOW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        mode: u32,
        size: u64,
    },
    Symlink,
    /// An overlayfs whiteout: the lower entry of this name is deleted.
    Whiteout,
    Other,
}

pub struct Dir {
    fd: OwnedFd,
}

fn cname(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::PathRefused {
        path: name.into(),
        reason: "it contains a NUL byte".into(),
    })
}

/// Turns an errno from a confined open into a message a user can act on.
pub fn describe_open_errno(errno: i32) -> String {
    match errno {
        libc::ELOOP => "a component is a symbolic link, which is never followed".into(),
        libc::EXDEV => "it resolves outside the workspace".into(),
        libc::ENOENT => "no such file or directory".into(),
        libc::ENOTDIR => "a component is not a directory".into(),
        libc::EISDIR => "it is a directory".into(),
        other => std::io::Error::from_raw_os_error(other).to_string(),
    }
}

impl Dir {
    /// Takes ownership of a directory descriptor (`O_PATH` is fine).
    pub fn from_fd(fd: OwnedFd) -> Dir {
        Dir { fd }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens `rel` (relative, may have several components) below this directory.
    pub fn open(&self, rel: &str, flags: i32, mode: u32) -> std::result::Result<OwnedFd, i32> {
        let path = CString::new(rel).map_err(|_| libc::EINVAL)?;
        let fd = sys::openat2(self.raw(), &path, flags, mode, CONFINED)?;
        // SAFETY: openat2 returned a fresh descriptor that we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn subdir(&self, rel: &str) -> std::result::Result<Dir, i32> {
        self.open(
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map(Dir::from_fd)
    }

    /// Names in this directory, sorted (`.` and `..` left out).
    pub fn names(&self) -> Result<Vec<OsString>> {
        let listing = format!("/proc/self/fd/{}", self.raw());
        let mut names: Vec<OsString> = std::fs::read_dir(&listing)
            .map_err(|e| Error::io("listing a workspace directory", e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn kind(&self, name: &OsString) -> Result<Option<Kind>> {
        let c = CString::new(name.as_bytes()).map_err(|_| Error::PathRefused {
            path: name.to_string_lossy().into_owned(),
            reason: "it contains a NUL byte".into(),
        })?;
        // SAFETY: zeroed stat is valid; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, C string and out-pointer.
        let r =
            unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if r != 0 {
            let e = sys::errno();
            return if e == libc::ENOENT {
                Ok(None)
            } else {
                Err(Error::os("stat in the workspace", e))
            };
        }
        Ok(Some(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File {
                mode: st.st_mode & 0o7777,
                size: st.st_size as u64,
            },
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR if st.st_rdev == 0 => Kind::Whiteout,
            _ => Kind::Other,
        }))
    }

    /// Reads a regular file below this directory, refusing anything over `max_bytes`.
    pub fn read_file(&self, rel: &str, max_bytes: u64) -> std::result::Result<Vec<u8>, i32> {
        let fd = self.open(rel, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)?;
        let mut file = std::fs::File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if !meta.is_file() {
            return Err(libc::EINVAL);
        }
        if meta.len() > max_bytes {
            return Err(libc::EFBIG);
        }
        let mut out = Vec::with_capacity(meta.len() as usize);
        file.by_ref()
            .take(max_bytes + 1)
            .read_to_end(&mut out)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if out.len() as u64 > max_bytes {
            return Err(libc::EFBIG);
        }
        Ok(out)
    }

    pub fn read_link(&self, name: &str) -> Result<Vec<u8>> {
        let c = cname(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: valid descriptor, C string and buffer.
        let n =
            unsafe { libc::readlinkat(self.raw(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(Error::os("readlink in the workspace", sys::errno()));
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Whether this (upper-layer) directory hides everything below it in the lower layer.
    pub fn is_opaque(&self) -> bool {
        let mut value = [0u8; 4];
        for attr in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
            // SAFETY: valid descriptor, attribute name and buffer.
            let n = unsafe {
                libc::fgetxattr(
                    self.raw(),
                    attr.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 1 && value[0] == b'y' {
                return true;
            }
        }
        false
    }
}
