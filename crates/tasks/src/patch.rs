//! File edits (final contents per path) and unified diffs.
//!
//! Instances store edits as final file contents, which apply without fuzz; unified diffs are
//! rendered from them for prompts and SWE-bench export, and parsed back on import.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Final contents per workspace-relative path; `None` deletes the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileEdits(pub BTreeMap<String, Option<String>>);

impl FileEdits {
    pub fn new() -> FileEdits {
        FileEdits::default()
    }

    pub fn write(mut self, path: impl Into<String>, content: impl Into<String>) -> FileEdits {
        self.0.insert(path.into(), Some(content.into()));
        self
    }

    pub fn delete(mut self, path: impl Into<String>) -> FileEdits {
        self.0.insert(path.into(), None);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// These edits, then `other`'s on top.
    pub fn then(&self, other: &FileEdits) -> FileEdits {
        let mut merged = self.0.clone();
        merged.extend(other.0.clone());
        FileEdits(merged)
    }

    /// Applies the edits to an episode's workspace.
    pub async fn apply(&self, episode: &sandbox::Episode) -> Result<()> {
        let mut deletions = Vec::new();
        for (path, content) in &self.0 {
            match content {
                Some(content) => episode.write_file(path, content.as_bytes(), false)?,
                None => deletions.push(path.clone()),
            }
        }
        if !deletions.is_empty() {
            let mut argv = vec!["rm".to_string(), "-rf".into(), "--".into()];
            argv.extend(deletions);
            let result = episode.exec(&sandbox::ExecRequest::new(argv)).await?;
            if !result.success() {
                return Err(Error::Setup(format!(
                    "deleting files failed: {}",
                    result.stderr.to_text()
                )));
            }
        }
        Ok(())
    }

    /// A git-style unified diff against `base` (the content of each path before the edits;
    /// `None` for a path that did not exist), rendered by the sandbox's one patch renderer
    /// ([`sandbox::WorkspaceDiff::to_patch`], checked against `git apply`).
    pub fn to_unified_diff(&self, base: impl Fn(&str) -> Option<String>) -> String {
        let file = |content: String| sandbox::Entry::File {
            executable: false,
            content: content.into_bytes(),
        };
        let changes = self
            .0
            .iter()
            .filter_map(|(path, new)| {
                let old = base(path);
                (old.as_deref() != new.as_deref()).then(|| sandbox::FileChange {
                    path: path.clone(),
                    old: old.map(file),
                    new: new.clone().map(file),
                })
            })
            .collect();
        sandbox::WorkspaceDiff { changes }.to_patch()
    }

    /// Parses a unified diff and applies it to `base`, giving the edited files' final contents.
    pub fn from_unified_diff(
        diff: &str,
        base: impl Fn(&str) -> Option<String>,
    ) -> Result<FileEdits> {
        let mut edits = FileEdits::new();
        let lines: Vec<&str> = diff.split_inclusive('\n').collect();
        let mut i = 0;
        while i < lines.len() {
            let Some(from) = lines[i].strip_prefix("--- ") else {
                i += 1;
                continue;
            };
            let to = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix("+++ "))
                .ok_or_else(|| Error::Patch(format!("line {}: `---` without `+++`", i + 1)))?;
            let strip = |name: &str| {
                let name = name.trim_end().split('\t').next().unwrap_or("").to_string();
                (name != "/dev/null").then(|| {
                    name.strip_prefix("a/")
                        .or_else(|| name.strip_prefix("b/"))
                        .unwrap_or(&name)
                        .to_string()
                })
            };
            let (old_path, new_path) = (strip(from), strip(to));
            let path = new_path
                .clone()
                .or(old_path.clone())
                .ok_or_else(|| Error::Patch(format!("line {}: both sides are /dev/null", i + 1)))?;
            let old_text = match &old_path {
                Some(p) => {
                    base(p).ok_or_else(|| Error::Patch(format!("{p}: not in the base tree")))?
                }
                None => String::new(),
            };
            let old_lines: Vec<&str> = old_text.split_inclusive('\n').collect();
            let mut result: Vec<String> = Vec::new();
            let mut cursor = 0usize;
            i += 2;
            while i < lines.len() && lines[i].starts_with("@@") {
                let header = lines[i];
                let start: usize = header
                    .trim_start_matches("@@ -")
                    .split([',', ' '])
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        Error::Patch(format!("bad hunk header `{}`", header.trim_end()))
                    })?;
                let start = start.saturating_sub(1).max(cursor);
                result.extend(
                    old_lines[cursor..start.min(old_lines.len())]
                        .iter()
                        .map(|s| s.to_string()),
                );
                cursor = start.min(old_lines.len());
                i += 1;
                while i < lines.len()
                    && !lines[i].starts_with("@@")
                    && !lines[i].starts_with("diff ")
                    && !lines[i].starts_with("--- ")
                {
                    let line = lines[i];
                    if let Some(text) = line.strip_prefix('+') {
                        result.push(text.to_string());
                    } else if let Some(text) =
                        line.strip_prefix('-').or_else(|| line.strip_prefix(' '))
                    {
                        if old_lines.get(cursor).map(|l| l.trim_end_matches('\n'))
                            != Some(text.trim_end_matches('\n'))
                        {
                            return Err(Error::Patch(format!(
                                "{path}: hunk does not apply at line {}: expected `{}`",
                                cursor + 1,
                                text.trim_end()
                            )));
                        }
                        if line.starts_with(' ') {
                            result.push(old_lines[cursor].to_string());
                        }
                        cursor += 1;
                    } else if line.starts_with('\\') {
                        if let Some(last) = result.last_mut() {
                            if last.ends_with('\n') && i > 0 && lines[i - 1].starts_with('+') {
                                last.pop();
                            }
                        }
                    }
                    i += 1;
                }
            }
            result.extend(
                old_lines[cursor.min(old_lines.len())..]
                    .iter()
                    .map(|s| s.to_string()),
            );
            if new_path.is_none() {
                edits = edits.delete(path);
            } else {
                edits = edits.write(path, result.concat());
            }
        }
        Ok(edits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(old: &str, new: &str) {
        let base = |p: &str| (p == "a.py").then(|| old.to_string());
        let edits = FileEdits::new().write("a.py", new);
        let diff = edits.to_unified_diff(base);
        let back = FileEdits::from_unified_diff(&diff, base).unwrap();
        assert_eq!(back, edits, "{diff}");
    }

    #[test]
    fn diffs_round_trip() {
        let old: String = (1..40).map(|i| format!("line {i}\n")).collect();
        roundtrip(&old, &old.replace("line 5\n", "line five\n"));
        roundtrip(
            &old,
            &old.replace("line 5\n", "").replace("line 30\n", "x\ny\n"),
        );
        roundtrip(&old, &format!("{old}tail\n"));
        roundtrip(&old, &format!("head\n{old}"));
        roundtrip("a\nb", "a\nc");
    }

    #[test]
    fn new_and_deleted_files() {
        let base = |p: &str| (p == "gone.py").then(|| "x = 1\n".to_string());
        let edits = FileEdits::new()
            .write("new.py", "y = 2\n")
            .delete("gone.py");
        let diff = edits.to_unified_diff(base);
        assert!(diff.contains("--- /dev/null\n+++ b/new.py"), "{diff}");
        assert!(diff.contains("--- a/gone.py\n+++ /dev/null"), "{diff}");
        assert_eq!(FileEdits::from_unified_diff(&diff, base).unwrap(), edits);
    }

    /// The rendered diff is one `git apply` accepts and that turns the base into the edits.
    #[test]
    fn git_applies_the_diff() {
        let dir = tempfile::tempdir().unwrap();
        let base_files = [
            ("a.py", "def f():\n    return 1\n"),
            ("gone.py", "x = 1\n"),
            ("no_newline.txt", "last line"),
        ];
        for (path, content) in base_files {
            std::fs::write(dir.path().join(path), content).unwrap();
        }
        let base = |p: &str| {
            base_files
                .iter()
                .find(|(path, _)| *path == p)
                .map(|(_, c)| c.to_string())
        };
        let edits = FileEdits::new()
            .write("a.py", "def f():\n    return 2\n")
            .delete("gone.py")
            .write("no_newline.txt", "last line, edited")
            .write("pkg/new.py", "y = 2\n");
        let patch = edits.to_unified_diff(base);
        std::fs::write(dir.path().join("change.patch"), &patch).unwrap();
        let status = std::process::Command::new("git")
            .args(["apply", "change.patch"])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "git apply refused:\n{patch}");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).ok();
        assert_eq!(read("a.py").as_deref(), Some("def f():\n    return 2\n"));
        assert_eq!(read("gone.py"), None);
        assert_eq!(read("no_newline.txt").as_deref(), Some("last line, edited"));
        assert_eq!(read("pkg/new.py").as_deref(), Some("y = 2\n"));
    }

    #[test]
    fn a_hunk_that_does_not_apply_is_an_error() {
        let diff = "--- a/a.py\n+++ b/a.py\n@@ -1,1 +1,1 @@\n-nope\n+x\n";
        let error = FileEdits::from_unified_diff(diff, |_| Some("other\n".into())).unwrap_err();
        assert!(error.to_string().contains("does not apply"), "{error}");
    }
}
