//! Pristine repository snapshots: read-only lower layers shared by every episode over them.
//!
//! A snapshot is a copy of a source tree without its version-control history (`.git`, `.hg`,
//! `.svn` are left out at every level), owned by the sandbox user so the agent can edit its
//! copy-on-write view. Nothing in this crate writes to a snapshot after it is published.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const HISTORY_DIRS: [&str; 3] = [".git", ".hg", ".svn"];

/// A published, read-only snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub path: PathBuf,
}

/// A directory of snapshots, one sub-directory each.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    /// Host uid and gid that own snapshot files; `None` keeps the importing user's.
    owner: Option<(u32, u32)>,
}

fn snap_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Snapshot {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl SnapshotStore {
    pub fn new(root: impl Into<PathBuf>, owner: Option<(u32, u32)>) -> SnapshotStore {
        SnapshotStore {
            root: root.into(),
            owner,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn get(&self, id: &str) -> Option<Snapshot> {
        let path = self.root.join(id);
        path.is_dir().then(|| Snapshot {
            id: id.to_string(),
            path,
        })
    }

    /// Imports `source` as snapshot `id`, or as an id derived from its contents' listing
    /// (paths, sizes, modification times) when `id` is `None`. An existing snapshot with the
    /// same id is reused as it is.
    pub fn import_dir(&self, source: &Path, id: Option<&str>) -> Result<Snapshot> {
        if !source.is_dir() {
            return Err(snap_err(source, "is not a directory"));
        }
        let id = match id {
            Some(id) => {
                if id.is_empty() || id.contains(['/', ',', ':', '\\']) || id.starts_with('.') {
                    return Err(snap_err(
                        source,
                        format!("snapshot id `{id}` must be a plain name"),
                    ));
                }
                id.to_string()
            }
            None => format!("dir-{}", fingerprint(source)?),
        };
        if let Some(existing) = self.get(&id) {
            return Ok(existing);
        }
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let staging = self
            .root
            .join(format!(".{id}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        copy_tree(source, &staging, self.owner).inspect_err(|_| {
            let _ = fs::remove_dir_all(&staging);
        })?;
        let path = self.root.join(&id);
        match fs::rename(&staging, &path) {
            Ok(()) => {}
            // Another process published the same snapshot first: keep theirs.
            Err(_) if path.is_dir() => {
                let _ = fs::remove_dir_all(&staging);
            }
            Err(e) => {
                return Err(Error::io(
                    format!("publishing snapshot {}", path.display()),
                    e,
                ))
            }
        }
        Ok(Snapshot { id, path })
    }
}

/// A short content-listing hash of a tree (history directories excluded).
pub fn fingerprint(source: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = source.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            if HISTORY_DIRS.iter().any(|h| name == *h) {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(format!("stat {}", entry.path().display()), e))?;
            let child = rel.join(&name);
            let _ = writeln!(
                HashWriter(&mut hasher),
                "{}\t{}\t{}\t{}\t{:o}",
                child.display(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.mode()
            );
            if meta.is_dir() {
                stack.push(child);
            }
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn copy_tree(source: &Path, dest: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let chown = |path: &Path| -> Result<()> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    };
    fs::create_dir(dest).map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    chown(dest)?;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = source.join(&rel);
        for entry in
            fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name();
            if HISTORY_DIRS.iter().any(|h| name == *h) {
                continue;
            }
            let from = entry.path();
            let to = dest.join(&rel).join(&name);
            let meta = fs::symlink_metadata(&from)
                .map_err(|e| Error::io(format!("stat {}", from.display()), e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                fs::create_dir(&to)
                    .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
                fs::set_permissions(
                    &to,
                    fs::Permissions::from_mode(meta.mode() & 0o7777 | 0o700),
                )
                .map_err(|e| Error::io(format!("chmod {}", to.display()), e))?;
                stack.push(rel.join(&name));
            } else if kind.is_symlink() {
                let target = fs::read_link(&from)
                    .map_err(|e| Error::io(format!("readlink {}", from.display()), e))?;
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(|e| Error::io(format!("symlink {}", to.display()), e))?;
            } else if kind.is_file() {
                fs::copy(&from, &to)
                    .map_err(|e| Error::io(format!("copying {}", from.display()), e))?;
                fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o777 | 0o600))
                    .map_err(|e| Error::io(format!("chmod {}", to.display()), e))?;
            } else {
                // Sockets, fifos and devices have no place in a source snapshot.
                continue;
            }
            chown(&to)?;
        }
    }
    Ok(())
}
