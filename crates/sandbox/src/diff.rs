//! The episode's changes against its pristine snapshot, as data and as a git-style patch.
//!
//! The current side is only ever read through [`Dir`] (confined, no symlink followed); the
//! pristine side is the trusted snapshot. With an overlay, only the upper layer is walked (so
//! the cost follows what changed, not the repository's size); a directory that replaced its
//! lower counterpart wholesale (opaque), and trees without an overlay, are compared in full.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use similar::TextDiff;

use crate::config::SandboxConfig;
use crate::dirfd::{describe_open_errno, Dir, Kind};
use crate::error::{Error, Result};

/// Files larger than this are compared and reported by size and hash only.
const MAX_DIFF_FILE_BYTES: u64 = 16 << 20;

/// One side of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    File {
        executable: bool,
        content: Vec<u8>,
    },
    /// A file too large to diff: its size and a hash of its content.
    LargeFile {
        executable: bool,
        size: u64,
        sha256: String,
    },
    Symlink {
        target: Vec<u8>,
    },
}

impl Entry {
    fn git_mode(&self) -> &'static str {
        match self {
            Entry::File {
                executable: true, ..
            }
            | Entry::LargeFile {
                executable: true, ..
            } => "100755",
            Entry::File { .. } | Entry::LargeFile { .. } => "100644",
            Entry::Symlink { .. } => "120000",
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Entry::File { content, .. } => Some(content),
            Entry::Symlink { target } => Some(target),
            Entry::LargeFile { .. } => None,
        }
    }
}

/// A path whose entry differs between the snapshot (`old`) and the workspace (`new`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub old: Option<Entry>,
    pub new: Option<Entry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceDiff {
    /// Sorted by path.
    pub changes: Vec<FileChange>,
}

impl WorkspaceDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn changed_paths(&self) -> Vec<&str> {
        self.changes.iter().map(|c| c.path.as_str()).collect()
    }

    /// A patch in `git diff` format, applicable with `git apply` (binary files are named but
    /// not carried).
    pub fn to_patch(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            render_change(change, &mut out);
        }
        out
    }
}

fn is_text(bytes: &[u8]) -> bool {
    !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

fn render_change(change: &FileChange, out: &mut String) {
    let path = &change.path;
    // A change of kind (file ↔ symlink) is a deletion followed by an addition, as git does it.
    if let (Some(old), Some(new)) = (&change.old, &change.new) {
        if matches!(old, Entry::Symlink { .. }) != matches!(new, Entry::Symlink { .. }) {
            render_change(
                &FileChange {
                    path: path.clone(),
                    old: Some(old.clone()),
                    new: None,
                },
                out,
            );
            render_change(
                &FileChange {
                    path: path.clone(),
                    old: None,
                    new: Some(new.clone()),
                },
                out,
            );
            return;
        }
    }
    out.push_str(&format!("diff --git a/{path} b/{path}\n"));
    match (&change.old, &change.new) {
        (None, Some(new)) => out.push_str(&format!("new file mode {}\n", new.git_mode())),
        (Some(old), None) => out.push_str(&format!("deleted file mode {}\n", old.git_mode())),
        (Some(old), Some(new)) if old.git_mode() != new.git_mode() => out.push_str(&format!(
            "old mode {}\nnew mode {}\n",
            old.git_mode(),
            new.git_mode()
        )),
        _ => {}
    }
    let old_bytes = change.old.as_ref().map(|e| e.bytes());
    let new_bytes = change.new.as_ref().map(|e| e.bytes());
    let old_text = match old_bytes {
        None => Some(""),
        Some(Some(b)) if is_text(b) => std::str::from_utf8(b).ok(),
        _ => None,
    };
    let new_text = match new_bytes {
        None => Some(""),
        Some(Some(b)) if is_text(b) => std::str::from_utf8(b).ok(),
        _ => None,
    };
    let from = match change.old {
        Some(_) => format!("a/{path}"),
        None => "/dev/null".to_string(),
    };
    let to = match change.new {
        Some(_) => format!("b/{path}"),
        None => "/dev/null".to_string(),
    };
    match (old_text, new_text) {
        (Some(old), Some(new)) => {
            if old == new {
                return; // a mode-only change
            }
            let diff = TextDiff::from_lines(old, new);
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&from, &to)
                    .to_string(),
            );
        }
        _ => {
            out.push_str(&format!("Binary files {from} and {to} differ\n"));
        }
    }
}

/// Compares the snapshot at `pristine` with the workspace seen through `current`.
/// `overlay_upper` says that `current` is an overlay's upper layer (whiteouts, opaque dirs,
/// unchanged files absent) rather than a full tree.
pub fn compute(
    config: &SandboxConfig,
    pristine: &Path,
    current: &Dir,
    overlay_upper: bool,
) -> Result<WorkspaceDiff> {
    let mut diff = WorkspaceDiff::default();
    walk(
        config,
        Some(pristine),
        current,
        "",
        !overlay_upper,
        &mut diff.changes,
    )?;
    diff.changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(diff)
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn walk(
    config: &SandboxConfig,
    pristine: Option<&Path>,
    current: &Dir,
    rel: &str,
    full: bool,
    out: &mut Vec<FileChange>,
) -> Result<()> {
    let mut names: Vec<OsString> = current.names()?;
    if full {
        if let Some(p) = pristine {
            if let Ok(listing) = fs::read_dir(p) {
                names.extend(listing.filter_map(|e| e.ok().map(|e| e.file_name())));
                names.sort();
                names.dedup();
            }
        }
    }
    for name in names {
        let name_str = name.to_string_lossy().into_owned();
        let path = join(rel, &name_str);
        if config.diff_ignores(&path) {
            continue;
        }
        let old_meta = pristine.and_then(|p| fs::symlink_metadata(p.join(&name)).ok());
        let new_kind = match current.kind(&name)? {
            Some(Kind::Whiteout) => None,
            other => other,
        };
        let old_is_dir = old_meta.as_ref().is_some_and(|m| m.is_dir());
        let new_is_dir = new_kind == Some(Kind::Dir);
        // Directories: recurse; a directory on one side only contributes all its files.
        if old_is_dir && !new_is_dir {
            pristine_tree(
                config,
                &pristine.unwrap_or(Path::new("")).join(&name),
                &path,
                out,
            )?;
        }
        if new_is_dir {
            let sub = current
                .subdir(&name_str)
                .map_err(|e| Error::WorkspaceFile {
                    path: path.clone(),
                    reason: describe_open_errno(e),
                })?;
            let sub_pristine = pristine.map(|p| p.join(&name)).filter(|_| old_is_dir);
            let sub_full = full || !old_is_dir || sub.is_opaque();
            walk(config, sub_pristine.as_deref(), &sub, &path, sub_full, out)?;
        }
        let old = match &old_meta {
            Some(meta) if !meta.is_dir() => {
                pristine_entry(&pristine.unwrap_or(Path::new("")).join(&name), meta)?
            }
            _ => None,
        };
        let new = match new_kind {
            Some(Kind::File { mode, size }) => {
                Some(current_file(current, &name_str, &path, mode, size)?)
            }
            Some(Kind::Symlink) => Some(Entry::Symlink {
                target: current.read_link(&name_str)?,
            }),
            _ => None,
        };
        if old != new {
            out.push(FileChange { path, old, new });
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pristine_entry(path: &Path, meta: &fs::Metadata) -> Result<Option<Entry>> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path)
            .map_err(|e| Error::io(format!("readlink {}", path.display()), e))?;
        return Ok(Some(Entry::Symlink {
            target: target.into_os_string().into_encoded_bytes(),
        }));
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let executable = meta.permissions().mode() & 0o111 != 0;
    let content =
        fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if meta.len() > MAX_DIFF_FILE_BYTES {
        return Ok(Some(Entry::LargeFile {
            executable,
            size: meta.size(),
            sha256: sha256_hex(&content),
        }));
    }
    Ok(Some(Entry::File {
        executable,
        content,
    }))
}

fn current_file(dir: &Dir, name: &str, path: &str, mode: u32, size: u64) -> Result<Entry> {
    let executable = mode & 0o111 != 0;
    let limit = size.max(MAX_DIFF_FILE_BYTES) + 1;
    let content = dir
        .read_file(name, limit)
        .map_err(|e| Error::WorkspaceFile {
            path: path.to_string(),
            reason: describe_open_errno(e),
        })?;
    if content.len() as u64 > MAX_DIFF_FILE_BYTES {
        return Ok(Entry::LargeFile {
            executable,
            size: content.len() as u64,
            sha256: sha256_hex(&content),
        });
    }
    Ok(Entry::File {
        executable,
        content,
    })
}

/// Every file under a pristine directory that no longer exists in the workspace.
fn pristine_tree(
    config: &SandboxConfig,
    dir: &Path,
    rel: &str,
    out: &mut Vec<FileChange>,
) -> Result<()> {
    let listing =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut entries: Vec<_> = listing.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = join(rel, &entry.file_name().to_string_lossy());
        if config.diff_ignores(&path) {
            continue;
        }
        let meta =
            fs::symlink_metadata(entry.path()).map_err(|e| Error::io("stat in a snapshot", e))?;
        if meta.is_dir() {
            pristine_tree(config, &entry.path(), &path, out)?;
        } else if let Some(old) = pristine_entry(&entry.path(), &meta)? {
            out.push(FileChange {
                path,
                old: Some(old),
                new: None,
            });
        }
    }
    Ok(())
}
