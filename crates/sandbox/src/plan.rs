//! The file-system layout of an episode, as data.
//!
//! [`RootfsPlan::build`] turns a configuration into the exact list of steps (directories, bind
//! mounts, the overlay, small files) that the episode builder executes in its own mount
//! namespace. Keeping the plan as plain data lets it be inspected and tested without privileges;
//! it must never contain a step that makes a host path writable other than the episode's own
//! tmpfs.

use std::ffi::CString;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use crate::config::SandboxConfig;
use crate::error::{Error, Result};
use crate::limits::Limits;

/// The user and group the agent runs as inside the sandbox.
pub const INSIDE_UID: u32 = 1000;
pub const INSIDE_GID: u32 = 1000;
/// Where the episode's workspace appears inside the sandbox.
pub const WORKSPACE: &str = "/workspace";

/// One step of building an episode's root file system.
#[derive(Debug)]
pub enum Step {
    Mkdir {
        path: CString,
        mode: u32,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    /// Creates an empty regular file (a bind-mount target for a device node).
    Touch {
        path: CString,
    },
    WriteFile {
        path: CString,
        contents: Vec<u8>,
    },
    Chown {
        path: CString,
        uid: u32,
        gid: u32,
    },
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
}

/// Everything the builder does, in order, plus the paths it reports back.
#[derive(Debug)]
pub struct RootfsPlan {
    /// Steps run before `pivot_root`, with host paths.
    pub steps: Vec<Step>,
    /// The directory that becomes `/`.
    pub new_root: CString,
    /// The overlay's upper directory (the episode's changes), opened and handed to the host.
    pub upper_dir: CString,
    /// The mounted workspace, opened and handed to the host for confined file access.
    pub merged_dir: CString,
    pub hostname: CString,
}

fn cstr(path: impl AsRef<Path>) -> Result<CString> {
    let path = path.as_ref();
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error::InvalidConfig {
        message: format!("path {} contains a NUL byte", path.display()),
    })
}

/// Overlay options are comma-separated and colon-separated: refuse paths that would be misparsed.
fn overlay_safe(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| Error::InvalidConfig {
        message: format!("path {} is not UTF-8", path.display()),
    })?;
    if text.contains([',', ':', '\\', '\n']) {
        return Err(Error::InvalidConfig {
            message: format!("path {text} contains ',', ':', '\\\\' or a newline, which overlayfs options cannot carry"),
        });
    }
    Ok(text.to_string())
}

const RO_BIND: libc::c_ulong =
    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;

impl RootfsPlan {
    /// The plan for one episode over `snapshot_dir`, staged at `stage_dir` (an empty directory
    /// on the host that the builder mounts the episode tmpfs on, in its private namespace).
    pub fn build(
        config: &SandboxConfig,
        limits: &Limits,
        snapshot_dir: &Path,
        stage_dir: &Path,
        rootless: bool,
    ) -> Result<RootfsPlan> {
        let mut steps = Vec::new();
        let root = stage_dir.join("root");
        let upper = stage_dir.join("upper");
        let work = stage_dir.join("work");
        let shared_tmp = stage_dir.join("tmp");
        let shared_shm = stage_dir.join("shm");
        let in_root = |p: &str| root.join(p.trim_start_matches('/'));

        // The episode tmpfs holds the overlay's upper layer, /tmp, /dev/shm and the skeleton of
        // the root; its size is the episode's disk quota.
        steps.push(Step::Mount {
            source: Some(cstr("tmpfs")?),
            target: cstr(stage_dir)?,
            fstype: Some(cstr("tmpfs")?),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(cstr(format!("size={},mode=0755", limits.disk_bytes))?),
        });
        for (dir, mode) in [
            (&root, 0o755),
            (&upper, 0o755),
            (&work, 0o700),
            (&shared_tmp, 0o1777),
            (&shared_shm, 0o1777),
        ] {
            steps.push(Step::Mkdir {
                path: cstr(dir)?,
                mode,
            });
        }
        // The workspace root belongs to the agent, so it can create files at the top level.
        // (Rootless, the agent already is the owner of everything the builder creates.)
        if !rootless {
            steps.push(Step::Chown {
                path: cstr(&upper)?,
                uid: config.sandbox_uid,
                gid: config.sandbox_gid,
            });
        }
        // pivot_root needs the new root to be a mount point.
        steps.push(Step::Mount {
            source: Some(cstr(&root)?),
            target: cstr(&root)?,
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        });
        for dir in ["usr", "etc", "dev", "proc", "tmp", "workspace"] {
            steps.push(Step::Mkdir {
                path: cstr(in_root(dir))?,
                mode: 0o755,
            });
        }
        // Merged-/usr systems have /bin, /lib, ... as symlinks into /usr; others get binds.
        for dir in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
            let host = Path::new("/").join(dir);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = std::fs::read_link(&host).map_err(|source| Error::Io {
                        context: format!("reading link {}", host.display()),
                        source,
                    })?;
                    steps.push(Step::Symlink {
                        target: cstr(target)?,
                        path: cstr(in_root(dir))?,
                    });
                }
                Ok(meta) if meta.is_dir() => {
                    steps.push(Step::Mkdir {
                        path: cstr(in_root(dir))?,
                        mode: 0o755,
                    });
                    push_ro_bind(&mut steps, &host, &in_root(dir))?;
                }
                _ => {}
            }
        }
        push_ro_bind(&mut steps, Path::new("/usr"), &in_root("usr"))?;

        // /etc: a few generated files, and read-only binds of what the loader and tools need.
        let etc_files: [(&str, String); 5] = [
            (
                "etc/passwd",
                format!(
                    "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:{INSIDE_UID}:{INSIDE_GID}:agent:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                ),
            ),
            (
                "etc/group",
                format!("root:x:0:\nagent:x:{INSIDE_GID}:\nnogroup:x:65534:\n"),
            ),
            ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n".to_string()),
            ("etc/hostname", "sandbox\n".to_string()),
            (
                "etc/nsswitch.conf",
                "passwd: files\ngroup: files\nhosts: files\n".to_string(),
            ),
        ];
        for (path, contents) in etc_files {
            steps.push(Step::WriteFile {
                path: cstr(in_root(path))?,
                contents: contents.into_bytes(),
            });
        }
        for host in ["/etc/ld.so.cache", "/etc/localtime", "/etc/mime.types"] {
            if Path::new(host).is_file() {
                steps.push(Step::Touch {
                    path: cstr(in_root(host))?,
                });
                push_ro_bind(&mut steps, Path::new(host), &in_root(host))?;
            }
        }
        for host in ["/etc/alternatives", "/etc/ssl", "/etc/ld.so.conf.d"] {
            if Path::new(host).is_dir() {
                steps.push(Step::Mkdir {
                    path: cstr(in_root(host))?,
                    mode: 0o755,
                });
                push_ro_bind(&mut steps, Path::new(host), &in_root(host))?;
            }
        }

        // A minimal /dev: the harmless character devices and the usual symlinks.
        for dev in ["null", "zero", "full", "random", "urandom"] {
            let host = Path::new("/dev").join(dev);
            let inside = in_root(&format!("dev/{dev}"));
            steps.push(Step::Touch {
                path: cstr(&inside)?,
            });
            steps.push(Step::Mount {
                source: Some(cstr(&host)?),
                target: cstr(&inside)?,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            });
            steps.push(Step::Mount {
                source: None,
                target: cstr(&inside)?,
                fstype: None,
                flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC,
                data: None,
            });
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            steps.push(Step::Symlink {
                target: cstr(target)?,
                path: cstr(in_root(&format!("dev/{name}")))?,
            });
        }
        steps.push(Step::Mkdir {
            path: cstr(in_root("dev/shm"))?,
            mode: 0o1777,
        });
        push_rw_bind(&mut steps, &shared_shm, &in_root("dev/shm"))?;
        push_rw_bind(&mut steps, &shared_tmp, &in_root("tmp"))?;

        // Rootless, the kernel lets a user namespace mount a new /proc only where a full proc
        // mount is already visible: the host's sits under /proc in the episode's template,
        // and every command covers it with its own before anything of the agent's runs.
        if rootless {
            steps.push(Step::Mount {
                source: Some(cstr("/proc")?),
                target: cstr(in_root("proc"))?,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
            });
        }

        // Read-only extras (the project's virtualenv, toolchains), at the same path as on the host
        // because virtualenvs record absolute paths.
        for extra in &config.read_only_mounts {
            if !extra.is_absolute() {
                return Err(Error::InvalidConfig {
                    message: format!(
                        "read-only mount {} must be an absolute path",
                        extra.display()
                    ),
                });
            }
            let meta = std::fs::metadata(extra).map_err(|source| Error::Io {
                context: format!("read-only mount {}", extra.display()),
                source,
            })?;
            let mut partial = root.clone();
            let components: Vec<_> = extra.components().skip(1).collect();
            for (i, component) in components.iter().enumerate() {
                partial.push(component);
                let last = i + 1 == components.len();
                if last && !meta.is_dir() {
                    steps.push(Step::Touch {
                        path: cstr(&partial)?,
                    });
                } else if !partial.starts_with(in_root("usr")) {
                    steps.push(Step::Mkdir {
                        path: cstr(&partial)?,
                        mode: 0o755,
                    });
                }
            }
            push_ro_bind(&mut steps, extra, &in_root(&extra.to_string_lossy()))?;
        }

        // The workspace: the pristine snapshot under a writable layer on the episode tmpfs.
        let data = format!(
            "lowerdir={},upperdir={},workdir={},{}index=off,metacopy=off,xino=off{}",
            overlay_safe(snapshot_dir)?,
            overlay_safe(&upper)?,
            overlay_safe(&work)?,
            // Renamed directories are copied rather than redirected (a user namespace refuses
            // the option, and is already limited to that behaviour).
            if rootless { "" } else { "redirect_dir=off," },
            // In a user namespace overlayfs keeps its whiteout and opaque marks in user.* xattrs.
            if rootless { ",userxattr" } else { "" },
        );
        steps.push(Step::Mount {
            source: Some(cstr("overlay")?),
            target: cstr(in_root("workspace"))?,
            fstype: Some(cstr("overlay")?),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(cstr(data)?),
        });

        Ok(RootfsPlan {
            steps,
            new_root: cstr(&root)?,
            upper_dir: cstr(&upper)?,
            merged_dir: cstr(in_root("workspace"))?,
            hostname: cstr("sandbox")?,
        })
    }
}

fn push_ro_bind(steps: &mut Vec<Step>, host: &Path, inside: &Path) -> Result<()> {
    steps.push(Step::Mount {
        source: Some(cstr(host)?),
        target: cstr(inside)?,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    steps.push(Step::Mount {
        source: None,
        target: cstr(inside)?,
        fstype: None,
        flags: RO_BIND,
        data: None,
    });
    Ok(())
}

fn push_rw_bind(steps: &mut Vec<Step>, host: &Path, inside: &Path) -> Result<()> {
    steps.push(Step::Mount {
        source: Some(cstr(host)?),
        target: cstr(inside)?,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    steps.push(Step::Mount {
        source: None,
        target: cstr(inside)?,
        fstype: None,
        flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
        data: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host paths a plan makes visible, and whether writable.
    fn binds(plan: &RootfsPlan) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut last_source = None;
        for step in &plan.steps {
            if let Step::Mount { source, flags, .. } = step {
                if flags & libc::MS_REMOUNT != 0 {
                    if let Some(src) = last_source.take() {
                        out.push((src, flags & libc::MS_RDONLY == 0));
                    }
                } else if flags & libc::MS_BIND != 0 {
                    last_source = source.as_ref().map(|s| s.to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    #[test]
    fn only_the_episode_tmpfs_and_device_nodes_are_writable() {
        let config = SandboxConfig {
            read_only_mounts: vec![PathBuf::from("/usr/lib")],
            ..SandboxConfig::default()
        };
        let stage = Path::new("/run/atomskill/stage-test");
        let plan = RootfsPlan::build(
            &config,
            &Limits::default(),
            Path::new("/snapshots/demo"),
            stage,
            false,
        )
        .unwrap();
        let binds = binds(&plan);
        assert!(binds.iter().any(|(s, w)| s == "/usr" && !w), "{binds:?}");
        assert!(
            binds.iter().any(|(s, w)| s == "/usr/lib" && !w),
            "{binds:?}"
        );
        for (source, writable) in &binds {
            if *writable {
                assert!(
                    source.starts_with(stage.to_str().unwrap()) || source.starts_with("/dev/"),
                    "{source} is bound writable"
                );
            }
        }
        let overlay = plan.steps.iter().find_map(|s| match s {
            Step::Mount {
                fstype: Some(t),
                data: Some(d),
                ..
            } if t.to_str() == Ok("overlay") => Some(d.to_string_lossy().into_owned()),
            _ => None,
        });
        assert_eq!(
            overlay.as_deref(),
            Some("lowerdir=/snapshots/demo,upperdir=/run/atomskill/stage-test/upper,workdir=/run/atomskill/stage-test/work,redirect_dir=off,index=off,metacopy=off,xino=off")
        );
    }

    #[test]
    fn overlay_hostile_paths_are_refused() {
        for bad in ["/snap,shots", "/snap:shots", "/snap\\shots"] {
            let err = RootfsPlan::build(
                &SandboxConfig::default(),
                &Limits::default(),
                Path::new(bad),
                Path::new("/run/x"),
                false,
            );
            assert!(matches!(err, Err(Error::InvalidConfig { .. })), "{bad}");
        }
    }
}
